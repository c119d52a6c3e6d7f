// Where and when a socket reconnects, with several relay nodes behind one load
// balancer (docs/protocol.md "Several nodes"). Pure functions, no DOM: the SDK
// and the watch page call them, test/redirect.test.mjs checks them under node.
//
// A node that does not own a socket's session sends
// ERROR{code:"session_moved", close_code:4003, node, url} and closes with 4003.
// The client reconnects at once to {url or its usual base}/ws/<role>?node=<node>
// (the load balancer routes on `node`; the relay ignores it). A bounded number
// of such redirects in a row, then the usual URL with the usual backoff.
import { CLOSE, shouldReconnect } from './protocol.js';

/** Redirects followed without a WELCOME in between before 4003 is a plain retryable close. */
export const MAX_REDIRECTS = 5;
/** A redirect waits 0 to this many ms (spreads a node's sockets moving at once). */
export const REDIRECT_JITTER_MS = 250;
/** The watch page's session lookup never delays a connect by more than this. */
export const LOOKUP_TIMEOUT_MS = 1000;

/** Backoff of the SDK and of the watch page: first step, cap, doubling steps. */
export const SDK_BACKOFF = Object.freeze({ first: 500, cap: 15000, steps: 5 });
export const VIEWER_BACKOFF = Object.freeze({ first: 300, cap: 10000, steps: 6 });

/** A base URL we may connect to: http(s) or ws(s), no query or fragment, no trailing slash. '' otherwise. */
export function cleanBase(url) {
  if (typeof url !== 'string' || !url) return '';
  let u;
  try {
    u = new URL(url);
  } catch (e) {
    return '';
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) || u.username || u.password) return '';
  return `${u.protocol}//${u.host}${u.pathname}`.replace(/\/+$/, '');
}

/** The websocket URL of `role` under `base` (an http(s) or ws(s) base URL), with `?node=` when given. */
export function socketUrl(base, role, node = '') {
  const ws = String(base).replace(/\/+$/, '').replace(/^http(s?):/i, 'ws$1:');
  return `${ws}/ws/${role}${node ? `?node=${encodeURIComponent(node)}` : ''}`;
}

/** The hint an ERROR frame carries: {node, url} for close_code 4003, else null. */
export function hintFromError(fields) {
  if (!fields || fields.close_code !== CLOSE.SESSION_MOVED) return null;
  return { node: typeof fields.node === 'string' ? fields.node : '', url: cleanBase(fields.url) };
}

/**
 * The hint a session lookup answers (GET {BASE}/rest/live/sessions/{visitorId}, 200):
 * {node: sessionServerName, url: sessionServerUrl or ''}; null when it names no node.
 */
export function hintFromLookup(body) {
  if (!body || typeof body !== 'object') return null;
  const node = body.sessionServerName;
  if (typeof node !== 'string' || !node) return null;
  return { node, url: cleanBase(body.sessionServerUrl) };
}

/** The backoff delay before reconnect number `attempt` (0-based): half the step, plus up to half at random. */
export function backoffDelay(attempt, backoff = SDK_BACKOFF, random = Math.random) {
  const step = Math.min(backoff.cap, backoff.first * 2 ** Math.min(attempt, backoff.steps));
  return step / 2 + random() * (step / 2);
}

/**
 * What to do after a socket closed.
 *
 *   code       the close code the client saw
 *   hint       {node, url} from the ERROR that preceded this close on the same socket, or null
 *   redirects  redirects followed since the last WELCOME
 *   attempt    backoff steps taken since the last WELCOME
 *   base       the client's usual base URL (http(s) or ws(s))
 *   role       'visitor' | 'viewer'
 *
 * Returns {retry: false} (a terminal code), or
 * {retry: true, redirect, url, node, delay, redirects, attempt}: connect to `url`
 * after `delay` ms and keep the new counts. `node` is what the URL routes to
 * ('' for the usual way); `redirect` says the delay is the short jitter, not the backoff.
 */
export function nextConnect({
  code, hint = null, redirects = 0, attempt = 0, base, role, backoff = SDK_BACKOFF, random = Math.random,
}) {
  if (!shouldReconnect(code)) return { retry: false };
  if (code === CLOSE.SESSION_MOVED && redirects < MAX_REDIRECTS) {
    const node = (hint && hint.node) || '';
    const at = (node && hint.url) || base;
    return {
      retry: true,
      redirect: true,
      url: socketUrl(at, role, node),
      node,
      delay: random() * REDIRECT_JITTER_MS,
      redirects: redirects + 1,
      attempt,
    };
  }
  return {
    retry: true,
    redirect: false,
    url: socketUrl(base, role),
    node: '',
    delay: backoffDelay(attempt, backoff, random),
    redirects,
    attempt: attempt + 1,
  };
}

/**
 * Ask the relay which node holds a visitor's session: {node, url} or null (404,
 * an error, no answer within `timeoutMs`, or an answer that names no node).
 * Never throws. `fetchImpl` is the global fetch in the browser.
 */
export async function lookupSession(base, visitorId, { timeoutMs = LOOKUP_TIMEOUT_MS, fetchImpl } = {}) {
  const doFetch = fetchImpl || (typeof fetch === 'function' ? fetch : null);
  if (!doFetch || !visitorId) return null;
  const ctl = typeof AbortController === 'function' ? new AbortController() : null;
  let timer = null;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => {
      if (ctl) ctl.abort();
      resolve(null);
    }, timeoutMs);
  });
  const ask = (async () => {
    try {
      const res = await doFetch(`${base}/rest/live/sessions/${encodeURIComponent(visitorId)}`, {
        method: 'GET',
        headers: { Accept: 'application/json' },
        credentials: 'same-origin',
        cache: 'no-store',
        // The watch page sends no Referer (its URL holds the grant) and a same-origin
        // GET carries no Origin: the relay reads the caller's origin from this one.
        referrerPolicy: 'origin',
        signal: ctl ? ctl.signal : undefined,
      });
      if (res.status !== 200) return null;
      return hintFromLookup(await res.json());
    } catch (e) {
      return null;
    }
  })();
  try {
    return await Promise.race([ask, late]);
  } finally {
    clearTimeout(timer);
  }
}
