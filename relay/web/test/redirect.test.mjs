// The reconnect decision of the SDK and the watch page with several relay nodes
// (src/redirect.js; docs/protocol.md "Several nodes"): close code, last hint,
// redirect count -> next URL and delay. Pure functions, no browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  MAX_REDIRECTS, REDIRECT_JITTER_MS, LOOKUP_TIMEOUT_MS, SDK_BACKOFF, VIEWER_BACKOFF,
  backoffDelay, cleanBase, hintFromError, hintFromLookup, lookupSession, nextConnect, socketUrl,
} from '../src/redirect.js';
import { decode, encode } from '../src/protocol.js';

const BASE = 'https://support.example.com/cobrowsing';
const HINT = { node: 'node2', url: 'https://relay-2.example.com/cobrowsing' };
const at = (r) => () => r; // a fixed "random"

function next(over = {}) {
  return nextConnect({ code: 4003, hint: HINT, redirects: 0, attempt: 0, base: BASE, role: 'visitor', random: at(0.5), ...over });
}

test('the rules are the documented ones: 5 redirects, 0-250 ms, a 1 s lookup', () => {
  assert.equal(MAX_REDIRECTS, 5);
  assert.equal(REDIRECT_JITTER_MS, 250);
  assert.equal(LOOKUP_TIMEOUT_MS, 1000);
});

test('socketUrl: http(s) becomes ws(s), the role path, node as a query parameter', () => {
  assert.equal(socketUrl('https://a.example/x', 'visitor'), 'wss://a.example/x/ws/visitor');
  assert.equal(socketUrl('http://a.example:8080', 'viewer', 'node2'), 'ws://a.example:8080/ws/viewer?node=node2');
  assert.equal(socketUrl('https://a.example/x/', 'viewer', 'n 1&x=y'), 'wss://a.example/x/ws/viewer?node=n%201%26x%3Dy');
  assert.equal(socketUrl('wss://a.example', 'visitor', 'b'), 'wss://a.example/ws/visitor?node=b');
});

test('a 4003 with a hint goes at once to the hinted node, under its url', () => {
  const n = next();
  assert.deepEqual(n, {
    retry: true, redirect: true, node: 'node2', url: 'wss://relay-2.example.com/cobrowsing/ws/visitor?node=node2',
    delay: 125, redirects: 1, attempt: 0,
  });
});

test('the redirect delay is the short jitter, 0 to 250 ms, whatever the backoff reached', () => {
  assert.equal(next({ random: at(0), attempt: 9 }).delay, 0);
  assert.ok(next({ random: at(0.999999), attempt: 9 }).delay < REDIRECT_JITTER_MS);
  assert.equal(next({ attempt: 9 }).attempt, 9); // a redirect takes no backoff step
});

test('a hint with no url keeps the usual base, with the node', () => {
  const n = next({ hint: { node: 'node3', url: '' }, role: 'viewer' });
  assert.equal(n.url, 'wss://support.example.com/cobrowsing/ws/viewer?node=node3');
  assert.equal(n.redirect, true);
});

test('a 4003 with no node (or no hint at all) reconnects the usual way, at once', () => {
  for (const hint of [null, { node: '', url: 'https://relay-2.example.com' }]) {
    const n = next({ hint });
    assert.equal(n.url, 'wss://support.example.com/cobrowsing/ws/visitor');
    assert.equal(n.node, '');
    assert.equal(n.redirect, true);
    assert.equal(n.delay, 125);
    assert.equal(n.redirects, 1);
  }
});

test('after 5 redirects without a WELCOME, 4003 backs off to the usual URL', () => {
  let state = { redirects: 0, attempt: 0 };
  const urls = [];
  for (let i = 0; i < 8; i += 1) {
    const n = next({ ...state, random: at(1) });
    urls.push([n.redirect, n.url.includes('?node=')]);
    state = { redirects: n.redirects, attempt: n.attempt };
  }
  assert.deepEqual(urls.slice(0, 5), Array(5).fill([true, true]));
  assert.deepEqual(urls.slice(5), Array(3).fill([false, false]));
  const n = next({ redirects: MAX_REDIRECTS, attempt: 2, random: at(1) });
  assert.equal(n.url, 'wss://support.example.com/cobrowsing/ws/visitor');
  assert.equal(n.delay, backoffDelay(2, SDK_BACKOFF, at(1)));
  assert.equal(n.attempt, 3);
  assert.equal(n.redirects, MAX_REDIRECTS); // stays until a WELCOME resets it
});

test('other retryable closes back off to the usual URL, without node, hint or not', () => {
  for (const code of [1001, 1006, 4000, 4002, 4004]) {
    const n = next({ code, attempt: 1 });
    assert.equal(n.retry, true, String(code));
    assert.equal(n.redirect, false);
    assert.equal(n.url, 'wss://support.example.com/cobrowsing/ws/visitor');
    assert.equal(n.node, '');
    assert.equal(n.delay, backoffDelay(1, SDK_BACKOFF, at(0.5)));
    assert.equal(n.attempt, 2);
    assert.equal(n.redirects, 0);
  }
});

test('terminal closes do not reconnect', () => {
  for (const code of [1000, 4500, 4504, 4508, 4509, 4510, 4511]) assert.deepEqual(next({ code }), { retry: false });
});

test('backoff: half the step plus up to half, doubling to the cap', () => {
  assert.equal(backoffDelay(0, SDK_BACKOFF, at(0)), 250);
  assert.equal(backoffDelay(0, SDK_BACKOFF, at(1)), 500);
  assert.equal(backoffDelay(3, SDK_BACKOFF, at(1)), 4000);
  assert.equal(backoffDelay(50, SDK_BACKOFF, at(1)), 15000);
  assert.equal(backoffDelay(0, VIEWER_BACKOFF, at(1)), 300);
  assert.equal(backoffDelay(50, VIEWER_BACKOFF, at(1)), 10000);
});

test('hintFromError: only an ERROR with close_code 4003; url only when http(s) or ws(s)', () => {
  const frame = encode('ERROR', { code: 'session_moved', close_code: 4003, node: 'node2', url: 'https://r2.example/cb/' });
  assert.deepEqual(hintFromError(decode(frame).fields), { node: 'node2', url: 'https://r2.example/cb' });
  assert.equal(hintFromError({ code: 'forbidden', close_code: 0, node: 'x', url: '' }), null);
  assert.equal(hintFromError({ code: 'rate_limited', close_code: 4004, node: 'x', url: '' }), null);
  assert.deepEqual(hintFromError({ code: 'session_moved', close_code: 4003, node: '', url: '' }), { node: '', url: '' });
  for (const url of ['javascript:alert(1)', 'data:text/html,x', '/relative', 'relay-2', 'https://u:p@r2.example/']) {
    assert.equal(hintFromError({ close_code: 4003, node: 'n', url }).url, '', url);
  }
});

test('cleanBase drops query, fragment and trailing slashes', () => {
  assert.equal(cleanBase('https://r2.example/cb/?a=1#x'), 'https://r2.example/cb');
  assert.equal(cleanBase('wss://r2.example:8443'), 'wss://r2.example:8443');
  assert.equal(cleanBase(''), '');
  assert.equal(cleanBase(undefined), '');
});

test('hintFromLookup reads sessionServerName and sessionServerUrl (which may be absent)', () => {
  assert.deepEqual(
    hintFromLookup({ sessionToken: '845800826', sessionServerName: 'node2', sessionServerUrl: 'https://r2.example' }),
    { node: 'node2', url: 'https://r2.example' },
  );
  assert.deepEqual(hintFromLookup({ sessionToken: '1', sessionServerName: 'node2' }), { node: 'node2', url: '' });
  assert.equal(hintFromLookup({ sessionToken: '1', sessionServerName: '' }), null);
  assert.equal(hintFromLookup({ status: 'error', error: 'not_found' }), null);
  assert.equal(hintFromLookup(null), null);
  assert.equal(hintFromLookup('node2'), null);
});

function fakeFetch(answer, seen = []) {
  return async (url, init) => {
    seen.push({ url, init });
    if (answer instanceof Error) throw answer;
    if (answer === 'hang') {
      return new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
    }
    return { status: answer.status, json: async () => answer.body };
  };
}

test('lookupSession asks {base}/rest/live/sessions/{visitor} and answers the node', async () => {
  const seen = [];
  const body = { sessionToken: '845800826', sessionServerName: 'node2', sessionServerUrl: 'https://r2.example/cb' };
  const hint = await lookupSession('https://r1.example/cb', 'V 1/2', { fetchImpl: fakeFetch({ status: 200, body }, seen) });
  assert.deepEqual(hint, { node: 'node2', url: 'https://r2.example/cb' });
  assert.equal(seen[0].url, 'https://r1.example/cb/rest/live/sessions/V%201%2F2');
  assert.equal(seen[0].init.method, 'GET');
});

test('lookupSession: 404, other statuses, bad JSON and network errors answer null', async () => {
  const cases = [
    { status: 404, body: { status: 'error', error: 'not_found' } },
    { status: 500, body: {} },
    { status: 200, body: null },
    new TypeError('Failed to fetch'),
  ];
  for (const answer of cases) {
    assert.equal(await lookupSession('https://r1.example', 'v1', { fetchImpl: fakeFetch(answer) }), null);
  }
  assert.equal(await lookupSession('https://r1.example', '', { fetchImpl: fakeFetch({ status: 200, body: {} }) }), null);
});

test('lookupSession never delays a connect past its timeout', async () => {
  const started = Date.now();
  assert.equal(await lookupSession('https://r1.example', 'v1', { fetchImpl: fakeFetch('hang'), timeoutMs: 50 }), null);
  assert.ok(Date.now() - started < 500);
  // a server that answers headers but never the body: the timeout still wins
  const stuck = async () => ({ status: 200, json: () => new Promise(() => {}) });
  const t0 = Date.now();
  assert.equal(await lookupSession('https://r1.example', 'v1', { fetchImpl: stuck, timeoutMs: 50 }), null);
  assert.ok(Date.now() - t0 < 500);
});
