// The visitor SDK: one <script src="{BASE}/sdk.js"> on any origin.
//
//   window.Cobrowse = window.Cobrowse || function(){(Cobrowse.q=Cobrowse.q||[]).push(arguments)};
//   Cobrowse('init', { uniqueId, identities, tags, maskedElements, requireAuthorizationForSession, ... });
//
// While no session is live only HELLO and PRESENCE leave the page. Once the
// visitor accepts (or a live session continues after a navigation), rrweb
// records the page: masked content is masked here, before serialisation, so it
// never reaches the wire. Remote control frames are applied only for what the
// page allows (the relay has already filtered them by the agent's grant).
import { record } from 'rrweb';

import { KINDS, PROTOCOL_VERSION, LIMITS, encode, frameHandler, packEvents } from './protocol.js';
import { SDK_BACKOFF, cleanBase, hintFromError, nextConnect, socketUrl } from './redirect.js';
import { codeLine } from './code.js';
import { VisitorUI, UI_CLASS } from './ui.js';
import { isStub, makeGlobal, queuedCalls, upscopeCommands } from './upscope.js';

const ME = document.currentScript
  || Array.from(document.getElementsByTagName('script')).reverse().find((s) => /\/sdk\.js(\?|#|$)/.test(s.src));
const BASE = ME && ME.src ? ME.src.replace(/\/sdk\.js([?#].*)?$/, '') : location.origin;
const WS_URL = socketUrl(BASE, 'visitor');

const STORE_ID = 'cobrowse:short_id';
const STORE_CODE = 'cobrowse:lookup_code';
const STORE_AGENT = 'cobrowse:agent';
const STORE_CODE_SESSION = 'cobrowse:code_session'; // sessionStorage: a session started with startSession()
const ID_WAIT_MS = 10000; // startSession() waits this long for the relay to assign the visitor's id
const DELTA_FLUSH_MS = 50;
const DELTA_BUDGET = LIMITS.maxFrame - 1024; // header + map overhead, with room to spare
const MASK_CLASS = 'no-cobrowse';
const UPSCOPE_MASK = '.no-upscope'; // Upscope's masking class: a page written for it keeps its masking here
const PAGEVIEW_URL_MAX = 2048; // what the relay's store keeps of a pageview's URL and title
const PAGEVIEW_TITLE_MAX = 256;
const PAGEVIEWS_HELD = 20; // saveHistory() calls kept while not connected, oldest dropped first
// Attributes of elements inside masked content that may still go on the wire.
// `value` stays only on form fields, where rrweb has already masked it.
const SAFE_ATTRS = new Set(['class', 'style', 'id', 'type', 'width', 'height', 'rr_width', 'rr_height', 'role',
  'dir', 'hidden', 'disabled', 'rel', 'colspan', 'rowspan']);
const FIELDS = new Set(['input', 'textarea', 'select']);
const ET = { FullSnapshot: 2, IncrementalSnapshot: 3, Meta: 4 };

const DEFAULTS = {
  uniqueId: '',
  identities: [],
  tags: [],
  maskedElements: [],
  requireAuthorizationForSession: false,
  authorizationPromptMessage: 'A support agent would like to see this page. Allow?',
  allowRemoteClick: true,
  allowRemoteScroll: true,
  allowRemoteType: true,
  allowRemoteConsole: false,
  autoconnect: true,
};

function storage() {
  try {
    const s = window.localStorage;
    s.getItem('x');
    return s;
  } catch (e) {
    const mem = {};
    return { getItem: (k) => mem[k] ?? null, setItem: (k, v) => { mem[k] = String(v); }, removeItem: (k) => { delete mem[k]; } };
  }
}

function lookupCode(store) {
  let code = store.getItem(STORE_CODE);
  if (!/^\d{4}$/.test(code || '')) {
    const n = new Uint32Array(1);
    crypto.getRandomValues(n);
    code = String(n[0] % 10000).padStart(4, '0');
    store.setItem(STORE_CODE, code);
  }
  return code;
}

function browserName() {
  const ua = navigator.userAgent;
  const m = /(Edg|OPR|Firefox|Chrome|Chromium|Safari)\/([\d.]+)/.exec(ua);
  if (!m) return ua.slice(0, 64);
  const name = { Edg: 'Edge', OPR: 'Opera' }[m[1]] || m[1];
  return `${name} ${m[2].split('.')[0]}`;
}

function deviceType() {
  const ua = navigator.userAgent;
  if (/iPad|Tablet/i.test(ua)) return 'tablet';
  if (/Mobi|Android|iPhone/i.test(ua)) return 'mobile';
  return 'desktop';
}

function asList(v) {
  if (v == null || v === '') return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

class Sdk {
  constructor() {
    this.store = storage();
    this.opts = { ...DEFAULTS };
    this.handlers = {};
    this.ws = null;
    this.state = 'idle'; // idle | connecting | connected | reconnecting | closed
    this.attempt = 0; // backoff steps since the last WELCOME
    this.redirects = 0; // 4003 redirects followed since the last WELCOME
    this.hint = null; // {node, url} of an ERROR session_moved on the current socket
    this.nextUrl = WS_URL; // where the next open() goes
    this.onNode = ''; // the node this socket was welcomed by (WELCOME.node)
    this.timer = null;
    this.codeSession = loadCodeSession(); // {token, clientId, node}: a session started with startSession()
    this.codeStarting = null; // the pending startSession() promise
    this.session = ''; // live session id, '' when none
    this.asking = ''; // session whose consent dialog is up
    this.idWaiters = [];
    this.agentName = '';
    this.stopRecording = null;
    this.pending = [];
    this.flushTimer = null;
    this.keyframe = null;
    // True while the last ordered frame sent on this socket is a keyframe: a
    // keyframe request then crossed it (a relay that restarted asks at once).
    this.keyframeIsLast = false;
    this.ui = new VisitorUI();
    this.wasPassword = new WeakSet();
    this.lastPresence = '';
    this.pageviews = []; // saveHistory() pageviews waiting for a WELCOME
    this.onUrl = () => this.urlChanged();
    this.onResize = throttle(() => this.sendViewport(), 200);
    this.onScroll = throttle(() => this.send('SCROLL', { x: window.scrollX, y: window.scrollY }), 100);
  }

  // --- public commands ----------------------------------------------------------------
  init(options = {}) {
    this.opts = { ...DEFAULTS, ...options };
    this.compileMask();
    if (this.opts.autoconnect !== false) this.connect();
  }

  connect() {
    if (this.ws || this.timer) return;
    // In a live session (this tab, before a navigation), go back to the node serving it:
    // the balancer routes ?node= there while it is up, so a page change does not move the session.
    const live = liveNode();
    this.nextUrl = live ? socketUrl(BASE, 'visitor', live) : WS_URL;
    this.redirects = 0;
    this.open();
    if (this.codeSession && !this.session) this.showCode();
  }

  updateConnection(options = {}) {
    Object.assign(this.opts, options);
    this.compileMask();
    this.sendPresence(true);
  }

  // One pageview (URL, title, time) into the visitor's history on the relay. Explicit, as
  // Upscope's saveHistory is: nothing is saved unless the page calls it. Sent at once when
  // connected, else after the next WELCOME (the last PAGEVIEWS_HELD calls).
  saveHistory() {
    const pv = {
      url: location.href.slice(0, PAGEVIEW_URL_MAX),
      title: (document.title || '').slice(0, PAGEVIEW_TITLE_MAX),
      at: Date.now(),
    };
    if (this.state === 'connected' && this.send('PAGEVIEW', pv)) return;
    this.pageviews.push(pv);
    if (this.pageviews.length > PAGEVIEWS_HELD) this.pageviews.shift();
  }

  // Answers at once when the id is known, else once the relay has assigned one.
  getUserId(cb) {
    if (typeof cb !== 'function') return;
    if (this.shortId()) cb(this.shortId());
    else this.idWaiters.push(cb);
  }

  getLookupCode(cb) {
    if (typeof cb === 'function') cb(lookupCode(this.store));
  }

  // A session the visitor starts: the relay answers a 9-digit code, shown on the
  // page for the visitor to read to an agent, who joins with it ("Join by code").
  // Resolves {sessionToken, sessionServerName}; rejects with an Error saying why.
  // The REST calls carry credentials: the relay may answer a cookie naming the
  // node (gcbSessionServer) that a balancer sticks later calls to.
  startSession() {
    if (this.codeStarting) return this.codeStarting;
    const c = this.codeSession;
    if (c) {
      if (!this.session) this.showCode();
      return Promise.resolve({ sessionToken: c.token, sessionServerName: c.node });
    }
    if (this.session) return Promise.reject(new Error('cobrowse: a co-browsing session is already live'));
    const started = this.requestCode();
    this.codeStarting = started;
    started.then(() => {
      this.codeStarting = null;
    }, (e) => {
      this.codeStarting = null;
      this.ui.showCodeError(`Could not start a session: ${e.reason || e.message}`);
    });
    return started;
  }

  async requestCode() {
    this.connect(); // the relay assigns the visitor's id in WELCOME
    const clientId = await this.waitUserId(ID_WAIT_MS);
    let res;
    try {
      res = await fetch(`${BASE}/rest/live/sessions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ userToken: clientId }),
        credentials: 'include',
        cache: 'no-store',
      });
    } catch (e) {
      throw failure('could not start a session', 'the co-browsing server cannot be reached');
    }
    const body = await res.json().catch(() => null);
    if (!res.ok) throw failure('could not start a session', apiReason(body, res.status));
    const token = body && (typeof body.sessionToken === 'string' || typeof body.sessionToken === 'number')
      ? String(body.sessionToken) : '';
    if (!token) throw failure('could not start a session', 'the server answered no session code');
    const node = body && typeof body.sessionServerName === 'string' ? body.sessionServerName : '';
    this.codeSession = { token, clientId, node };
    saveCodeSession(this.codeSession);
    if (!this.session) this.showCode();
    // The session lives on `node`: meet it there (the relay would redirect this socket anyway).
    if (node && this.onNode && node !== this.onNode) this.moveTo({ node, url: cleanBase(body.sessionServerUrl) });
    return { sessionToken: token, sessionServerName: node };
  }

  showCode() {
    const c = this.codeSession;
    if (c) this.ui.showCode(codeLine(c.token), () => this.stopSession().catch(warn));
  }

  // The visitor's id, once the relay has assigned it (at once when known).
  waitUserId(ms) {
    if (this.shortId()) return Promise.resolve(this.shortId());
    return new Promise((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        reject(failure('could not start a session', 'not connected to the co-browsing server'));
      }, ms);
      this.idWaiters.push((id) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(id);
      });
    });
  }

  // Ends the session. One started with startSession() is stopped through the REST
  // API (GET {BASE}/rest/live/users/{clientId}/session/stop); otherwise the live
  // session ends over the socket. Resolves when done; rejects with an Error saying why.
  stopSession() {
    const code = this.codeSession;
    const live = this.session;
    this.codeSession = null;
    saveCodeSession(null);
    this.ui.hideCode();
    if (!code) {
      if (live) this.send('SESSION_END', { session: live, reason: 'visitor' });
      if (live) this.endSession('visitor');
      return Promise.resolve();
    }
    if (live) this.endSession('visitor'); // nothing more leaves the page from now on
    const url = `${BASE}/rest/live/users/${encodeURIComponent(code.clientId)}/session/stop`;
    // A same-origin GET carries no Origin and the page may send no Referer (the relay's own
    // pages say no-referrer): the relay then cannot tell the caller's origin and answers 403.
    return fetch(url, {
      method: 'GET',
      headers: { Accept: 'application/json' },
      credentials: 'include',
      cache: 'no-store',
      referrerPolicy: 'origin',
    })
      .then(async (res) => {
        if (res.ok || res.status === 404) return; // 404: nothing left to stop
        throw failure('could not stop the session', apiReason(await res.json().catch(() => null), res.status));
      }, () => {
        throw failure('could not stop the session', 'the co-browsing server cannot be reached');
      })
      .catch((e) => {
        // The relay still has it: end it over the socket, the usual way.
        if (live && this.send('SESSION_END', { session: live, reason: 'visitor' })) return;
        throw e;
      });
  }

  reset() {
    this.stopSession().catch(warn);
    this.store.removeItem(STORE_ID);
    this.store.removeItem(STORE_CODE);
    this.disconnect();
    if (this.opts.autoconnect !== false) this.connect();
  }

  // on(event, cb), or on(event1, event2, ..., cb) as Upscope's SDK takes it.
  on(...args) {
    const cb = args.pop();
    if (typeof cb !== 'function') return;
    for (const event of args) (this.handlers[event] = this.handlers[event] || []).push(cb);
  }

  emit(event, ...args) {
    for (const cb of this.handlers[event] || []) {
      try {
        cb(...args);
      } catch (e) {
        console.error('[cobrowse]', e);
      }
    }
  }

  // --- connection -------------------------------------------------------------------
  shortId() {
    return this.store.getItem(STORE_ID) || '';
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('connection', state);
  }

  open() {
    this.timer = null;
    this.hint = null;
    this.onNode = '';
    this.setState(this.attempt || this.redirects ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.nextUrl);
    } catch (e) {
      this.retry(1006);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.keyframeIsLast = false;
    ws.onopen = () => {
      this.send('HELLO', { role: 'visitor', version: PROTOCOL_VERSION, client_id: this.shortId() });
    };
    ws.onmessage = frameHandler('cobrowse', (msg) => this.handle(msg));
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.pauseRecording();
      this.retry(ev.code);
    };
  }

  retry(code) {
    if (code === 4510) {
      // Another tab of this visitor took over the connection. Take it back when
      // this tab is used again: the agent follows the tab the visitor is on.
      this.pauseRecording();
      this.setState('replaced');
      const back = () => {
        if (document.visibilityState !== 'visible') return;
        window.removeEventListener('focus', back);
        document.removeEventListener('visibilitychange', back);
        this.connect();
      };
      window.addEventListener('focus', back);
      document.addEventListener('visibilitychange', back);
      return;
    }
    // 4003 follows the relay's hint at once; other retryable codes back off
    // (0.5 s doubling to 15 s, half of it jitter) to the usual URL.
    const next = nextConnect({
      code, hint: this.hint, redirects: this.redirects, attempt: this.attempt, base: BASE, role: 'visitor',
      backoff: SDK_BACKOFF,
    });
    this.hint = null;
    if (!next.retry) {
      if (code === 4508) this.endSession('ended');
      this.setState('closed');
      return;
    }
    this.redirects = next.redirects;
    this.attempt = next.attempt;
    this.nextUrl = next.url;
    this.setState('reconnecting');
    this.timer = setTimeout(() => this.open(), next.delay);
  }

  // Reconnect now to the node `hint` names, as a 4003 with that hint would.
  moveTo(hint) {
    const ws = this.ws;
    if (!ws || this.timer) return;
    this.ws = null;
    this.pauseRecording();
    ws.close(1000);
    this.hint = hint;
    this.retry(4003);
  }

  disconnect() {
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.pauseRecording();
    this.setState('idle');
  }

  send(kind, fields) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(encode(kind, fields));
    if (kind === 'DOM_KEYFRAME') this.keyframeIsLast = true;
    else if (kind === 'DOM_DELTA' || kind === 'CONSOLE_LINES') this.keyframeIsLast = false;
    return true;
  }

  // --- inbound frames -------------------------------------------------------------------
  handle(msg) {
    const f = msg.fields;
    switch (msg.code) {
      case KINDS.WELCOME:
        if (f.client_id) this.store.setItem(STORE_ID, f.client_id);
        for (const cb of this.idWaiters.splice(0)) cb(this.shortId());
        this.attempt = 0;
        this.redirects = 0;
        this.onNode = f.node;
        this.setState('connected');
        this.sendPresence(true);
        for (const pv of this.pageviews.splice(0)) this.send('PAGEVIEW', pv);
        if (f.session) this.continueSession(f.session);
        else if (this.session) this.endSession('expired');
        break;
      case KINDS.SESSION_REQUEST:
        this.request(f);
        break;
      case KINDS.SESSION_END:
        if (!f.session || f.session === this.session) this.endSession(f.reason || 'agent');
        break;
      case KINDS.RESYNC_REQUEST:
        // Nothing but a keyframe went out since the last one: the relay has (or is
        // about to read) a keyframe and all after it. Another would be the same page twice.
        if (this.stopRecording && !this.keyframeIsLast) this.snapshot();
        break;
      case KINDS.ERROR: {
        const hint = hintFromError(f);
        if (hint) this.hint = hint; // used when this socket closes with 4003
        else console.warn('[cobrowse] relay error', f.code, f.message);
        break;
      }
      case KINDS.PING:
        this.send('PONG', { t: f.t });
        break;
      default:
        if (msg.code >= 0x30 && msg.code <= 0x3f) this.control(msg);
    }
  }

  async request(f) {
    this.emit('sessionRequest', { session: f.session, agentName: f.agent_name, agentId: f.agent_id });
    if (this.session === f.session) {
      // Another viewer of the live session: no new consent, but a fresh keyframe.
      this.send('SESSION_ACCEPT', { session: f.session });
      this.snapshot();
      return;
    }
    if (this.opts.requireAuthorizationForSession) {
      if (this.asking === f.session) return; // asked again (a reconnect): the dialog is still up
      const who = f.agent_name ? `${f.agent_name}: ` : '';
      this.asking = f.session;
      const ok = await this.ui.ask(who + this.opts.authorizationPromptMessage);
      this.asking = '';
      if (!ok) {
        this.send('SESSION_DECLINE', { session: f.session, reason: 'visitor declined' });
        return;
      }
    }
    if (!this.send('SESSION_ACCEPT', { session: f.session })) return;
    this.agentName = f.agent_name;
    try {
      sessionStorage.setItem(STORE_AGENT, JSON.stringify({ session: f.session, name: f.agent_name, node: this.onNode }));
    } catch (e) {
      /* the indicator then says "an agent" after a navigation */
    }
    this.beginSession(f.session, 'sessionStart');
  }

  continueSession(session) {
    try {
      const a = JSON.parse(sessionStorage.getItem(STORE_AGENT) || '{}');
      if (a.session === session) this.agentName = a.name || '';
      sessionStorage.setItem(STORE_AGENT, JSON.stringify({ session, name: this.agentName, node: this.onNode }));
    } catch (e) {
      /* no name: the indicator says "an agent" */
    }
    this.beginSession(session, 'sessionContinue');
  }

  beginSession(session, event) {
    this.session = session;
    this.ui.hideCode(); // the agent joined: the indicator takes its place
    this.ui.showIndicator(this.agentName, () => this.stopSession().catch(warn));
    this.startRecording();
    this.emit(event, { session });
  }

  endSession(reason) {
    const was = this.session;
    this.session = '';
    if (was) {
      try {
        sessionStorage.removeItem(STORE_AGENT); // no live session to go back to after a navigation
      } catch (e) {
        /* storage refused: the next page just asks the node it saved */
      }
    }
    this.pauseRecording();
    this.ui.reset();
    if (was && this.codeSession) {
      // The session started with the code is over: the code is spent.
      this.codeSession = null;
      saveCodeSession(null);
      this.ui.hideCode();
    }
    if (was) this.emit('sessionEnd', { session: was, reason });
  }

  // --- recording ----------------------------------------------------------------------
  compileMask() {
    const sels = [UPSCOPE_MASK, ...asList(this.opts.maskedElements).filter(Boolean)];
    this.maskSelector = [`.${MASK_CLASS}`, ...sels].join(',');
    this.extraMask = sels.length ? sels.join(',') : null;
  }

  isMasked(el) {
    if (!el || el.nodeType !== 1) return false;
    try {
      return !!el.closest(this.maskSelector);
    } catch (e) {
      return true; // a bad selector masks rather than leaks
    }
  }

  // Called by rrweb for every input value (maskAllInputs routes all of them here).
  maskInput(text, el) {
    if (el && el.type === 'password') this.wasPassword.add(el);
    const ac = (el && el.getAttribute && el.getAttribute('autocomplete')) || '';
    if (!el || this.wasPassword.has(el) || /password|cc-number|cc-csc/.test(ac) || this.isMasked(el)) {
      return '*'.repeat(Math.min(String(text).length, 64));
    }
    return text;
  }

  startRecording() {
    this.pauseRecording();
    if (!this.ws) return;
    if (document.readyState === 'loading') {
      document.addEventListener('DOMContentLoaded', () => this.session && this.ws && this.startRecording(), { once: true });
      return;
    }
    this.send('URL_CHANGE', { url: location.href, title: document.title });
    this.sendViewport();
    this.stopRecording = record({
      emit: (e) => this.onEvent(e),
      maskAllInputs: true,
      maskInputFn: (text, el) => this.maskInput(text, el),
      maskTextClass: MASK_CLASS,
      maskTextSelector: this.extraMask,
      blockClass: UI_CLASS,
      recordCanvas: false,
      collectFonts: false,
      inlineStylesheet: true,
      sampling: { mousemove: 50, scroll: 100 },
      errorHandler: (err) => {
        console.warn('[cobrowse] recorder', err);
        return true;
      },
    }) || null;
    window.addEventListener('resize', this.onResize);
    window.addEventListener('scroll', this.onScroll, { passive: true });
    window.addEventListener('popstate', this.onUrl);
    window.addEventListener('hashchange', this.onUrl);
  }

  pauseRecording() {
    if (this.stopRecording) {
      try {
        this.stopRecording();
      } catch (e) {
        /* already stopped */
      }
    }
    this.stopRecording = null;
    this.pending = [];
    this.keyframe = null;
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    window.removeEventListener('resize', this.onResize);
    window.removeEventListener('scroll', this.onScroll);
    window.removeEventListener('popstate', this.onUrl);
    window.removeEventListener('hashchange', this.onUrl);
  }

  snapshot() {
    try {
      record.takeFullSnapshot(true);
    } catch (e) {
      console.warn('[cobrowse] snapshot', e);
    }
  }

  onEvent(event) {
    if (!this.session) return;
    this.sanitize(event);
    if (event.type === ET.Meta) {
      // A keyframe starts: what came before goes first, in order.
      this.flush();
      this.keyframe = [event];
      return;
    }
    if (event.type === ET.FullSnapshot && this.keyframe) {
      this.keyframe.push(event);
      this.send('DOM_KEYFRAME', { data: packEvents(this.keyframe) });
      this.keyframe = null;
      return;
    }
    if (this.keyframe) {
      this.keyframe.push(event);
      return;
    }
    this.pending.push(event);
    if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), DELTA_FLUSH_MS);
  }

  flush() {
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const events = this.pending;
    this.pending = [];
    if (events.length) this.sendDeltas(events);
  }

  // Deltas stay under the frame limit: a batch too big is split in two; one event
  // too big for any delta (a huge DOM change) is replaced by a fresh keyframe.
  sendDeltas(events) {
    const data = packEvents(events);
    if (data.length <= DELTA_BUDGET) {
      this.send('DOM_DELTA', { data });
      return true;
    }
    if (events.length === 1) {
      this.snapshot();
      return false;
    }
    const mid = events.length >> 1;
    return this.sendDeltas(events.slice(0, mid)) && this.sendDeltas(events.slice(mid));
  }

  // Second line of masking, on the serialised events: drop iframe srcdoc (its
  // document would carry masked text as an attribute) and blank every attribute
  // but layout ones on elements inside masked content.
  sanitize(event) {
    const d = event.data;
    if (event.type === ET.FullSnapshot) this.sanitizeTree(d.node, false);
    else if (event.type === ET.IncrementalSnapshot && d && d.source === 0) {
      for (const add of d.adds || []) {
        const parent = record.mirror.getNode(add.parentId);
        this.sanitizeTree(add.node, this.isMasked(parent));
      }
      for (const a of d.attributes || []) {
        const node = record.mirror.getNode(a.id);
        if ('srcdoc' in a.attributes) a.attributes.srcdoc = null;
        if (this.isMasked(node)) scrubAttrs(a.attributes, node.tagName);
      }
    }
  }

  sanitizeTree(n, masked) {
    if (!n) return;
    if (n.type === 2) {
      const live = record.mirror.getNode(n.id);
      const m = masked || (live ? this.isMasked(live) : false);
      if (n.attributes) {
        if ('srcdoc' in n.attributes) delete n.attributes.srcdoc;
        if (m) scrubAttrs(n.attributes, n.tagName);
      }
      for (const c of n.childNodes || []) this.sanitizeTree(c, m);
    } else if (n.type === 5 && masked) {
      n.textContent = '';
    } else if (n.childNodes) {
      for (const c of n.childNodes) this.sanitizeTree(c, masked);
    }
  }

  // --- presence ------------------------------------------------------------------------
  allowList() {
    const o = this.opts;
    const allow = ['draw', 'agent_redirect', 'audio'];
    if (o.allowRemoteClick !== false) allow.push('click');
    if (o.allowRemoteScroll !== false) allow.push('scroll');
    if (o.allowRemoteType !== false) allow.push('type');
    if (o.allowRemoteConsole === true) allow.push('console');
    return allow.sort();
  }

  sendPresence(force) {
    const o = this.opts;
    const p = {
      url: location.href,
      title: document.title || '',
      unique_id: o.uniqueId == null ? '' : String(o.uniqueId),
      identities: asList(o.identities),
      tags: asList(o.tags),
      lookup_code: lookupCode(this.store),
      browser: browserName(),
      device_type: deviceType(),
      allow: this.allowList(),
    };
    const key = JSON.stringify(p);
    if (!force && key === this.lastPresence) return;
    if (this.send('PRESENCE', p)) this.lastPresence = key;
  }

  urlChanged() {
    this.sendPresence(false);
    if (this.session) this.send('URL_CHANGE', { url: location.href, title: document.title });
  }

  sendViewport() {
    this.send('VIEWPORT', { width: window.innerWidth, height: window.innerHeight });
  }

  // --- remote control ----------------------------------------------------------------------
  control(msg) {
    if (!this.session) return;
    const f = msg.fields;
    const o = this.opts;
    try {
      switch (msg.code) {
        case KINDS.CLICK:
          if (o.allowRemoteClick !== false) remoteClick(this.target(f.node, f.x, f.y), f);
          break;
        case KINDS.REMOTE_SCROLL:
          if (o.allowRemoteScroll !== false) remoteScroll(f.node ? this.node(f.node) : null, f.dx, f.dy);
          break;
        case KINDS.TYPE:
          if (o.allowRemoteType !== false) this.remoteType(this.node(f.node), f.text, f.key);
          break;
        case KINDS.DRAW_STROKE:
          this.ui.stroke(f.points, f.color, f.width);
          break;
        case KINDS.DRAW_CLEAR:
          this.ui.clearStrokes();
          break;
        case KINDS.VIEWER_POINTER:
          this.ui.pointer(f.x, f.y);
          break;
        case KINDS.REDIRECT:
          redirect(f.url);
          break;
        case KINDS.RELOAD:
          location.reload();
          break;
        case KINDS.CONSOLE_EVAL:
          if (o.allowRemoteConsole === true) this.consoleEval(f.code);
          break;
        default:
      }
    } catch (e) {
      console.warn('[cobrowse] control', e);
    }
  }

  node(id) {
    const n = id ? record.mirror.getNode(id) : null;
    if (!n || !n.isConnected) return null;
    if (n.nodeType === 1 && n.closest(`.${UI_CLASS}`)) return null;
    return n;
  }

  target(id, x, y) {
    const n = this.node(id);
    if (n) return n.nodeType === 1 ? n : n.parentElement;
    const el = document.elementFromPoint(x - window.scrollX, y - window.scrollY);
    return el && !el.closest(`.${UI_CLASS}`) ? el : null;
  }

  remoteType(el, text, key) {
    if (!el || el.nodeType !== 1) return;
    // The agent cannot see masked fields; it does not get to type into them either.
    if (this.isMasked(el) || el.type === 'password' || this.wasPassword.has(el)) return;
    typeInto(el, text, key);
  }

  consoleEval(code) {
    let level = 'result';
    let out;
    try {
      // eslint-disable-next-line no-eval
      out = (0, eval)(code);
      out = typeof out === 'string' ? out : safeJson(out);
    } catch (e) {
      level = 'error';
      out = String(e && e.stack ? e.stack : e);
    }
    this.send('CONSOLE_LINES', { level, lines: String(out).slice(0, LIMITS.maxString / 2).split('\n').slice(0, 200) });
  }
}

function warn(e) {
  console.warn('[cobrowse]', e && e.message ? e.message : e);
}

// An Error for a public call that failed: "cobrowse: <what>: <reason>"; `reason` kept for the UI.
function failure(what, reason) {
  const e = new Error(`cobrowse: ${what}: ${reason}`);
  e.reason = reason;
  return e;
}

// The reason in the API's error shape ({status:"error", error, message}), else the HTTP status.
function apiReason(body, status) {
  const text = body && typeof body === 'object' && (body.message || body.error);
  return typeof text === 'string' && text ? `${text} (HTTP ${status})` : `HTTP ${status}`;
}

// The node that served this tab's live session when the page was left ('' when none).
function liveNode() {
  try {
    const a = JSON.parse(sessionStorage.getItem(STORE_AGENT) || '{}');
    return a && a.session && typeof a.node === 'string' ? a.node : '';
  } catch (e) {
    return '';
  }
}

function loadCodeSession() {
  try {
    const c = JSON.parse(sessionStorage.getItem(STORE_CODE_SESSION) || 'null');
    return c && typeof c.token === 'string' && typeof c.clientId === 'string'
      ? { token: c.token, clientId: c.clientId, node: typeof c.node === 'string' ? c.node : '' } : null;
  } catch (e) {
    return null;
  }
}

function saveCodeSession(c) {
  try {
    if (c) sessionStorage.setItem(STORE_CODE_SESSION, JSON.stringify(c));
    else sessionStorage.removeItem(STORE_CODE_SESSION);
  } catch (e) {
    /* storage disabled: the code lives as long as this page */
  }
}

function scrubAttrs(attrs, tag) {
  const field = FIELDS.has(String(tag || '').toLowerCase());
  for (const k of Object.keys(attrs)) {
    if (SAFE_ATTRS.has(k) || (field && k === 'value')) continue;
    attrs[k] = k === 'srcdoc' ? null : '';
  }
}

function safeJson(v) {
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return String(v);
  try {
    return JSON.stringify(v);
  } catch (e) {
    return String(v);
  }
}

function throttle(fn, ms) {
  let last = 0;
  let t = null;
  return () => {
    const now = Date.now();
    if (now - last >= ms) {
      last = now;
      fn();
    } else if (!t) {
      t = setTimeout(() => {
        t = null;
        last = Date.now();
        fn();
      }, ms - (now - last));
    }
  };
}

function remoteClick(el, f) {
  if (!el || el.nodeType !== 1) return;
  const r = el.getBoundingClientRect();
  const init = {
    bubbles: true, cancelable: true, composed: true, view: window, button: f.button || 0,
    clientX: r.left + r.width / 2, clientY: r.top + r.height / 2,
  };
  el.dispatchEvent(new PointerEvent('pointerdown', init));
  el.dispatchEvent(new MouseEvent('mousedown', init));
  if (typeof el.focus === 'function') el.focus({ preventScroll: true });
  el.dispatchEvent(new PointerEvent('pointerup', init));
  el.dispatchEvent(new MouseEvent('mouseup', init));
  if (typeof el.click === 'function') el.click();
  else el.dispatchEvent(new MouseEvent('click', init));
}

function scrollable(el) {
  for (let n = el; n && n.nodeType === 1 && n !== document.documentElement && n !== document.body; n = n.parentElement) {
    const s = getComputedStyle(n);
    if (/(auto|scroll|overlay)/.test(s.overflowY + s.overflowX)
      && (n.scrollHeight > n.clientHeight || n.scrollWidth > n.clientWidth)) return n;
  }
  return null;
}

function remoteScroll(node, dx, dy) {
  const el = node && (node.nodeType === 1 ? node : node.parentElement);
  const box = el ? scrollable(el) : null;
  if (box) box.scrollBy(dx, dy);
  else window.scrollBy(dx, dy);
}

function setNativeValue(el, value) {
  const proto = el instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
  const desc = Object.getOwnPropertyDescriptor(proto, 'value');
  if (desc && desc.set) desc.set.call(el, value);
  else el.value = value;
}

function typeInto(el, text, key) {
  const isField = el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement;
  if (!isField && !el.isContentEditable) return;
  if (document.activeElement !== el && typeof el.focus === 'function') el.focus({ preventScroll: true });
  const k = text ? undefined : key;
  if (k) {
    const kd = new KeyboardEvent('keydown', { key: k, bubbles: true, cancelable: true });
    const go = el.dispatchEvent(kd);
    if (go) applyKey(el, k, isField);
    el.dispatchEvent(new KeyboardEvent('keyup', { key: k, bubbles: true }));
    return;
  }
  if (!text) return;
  if (el.isContentEditable) {
    document.execCommand('insertText', false, text);
    return;
  }
  const v = el.value || '';
  let start = v.length;
  let end = v.length;
  try {
    if (el.selectionStart != null) {
      start = el.selectionStart;
      end = el.selectionEnd;
    }
  } catch (e) {
    /* types without selection (email, number) append */
  }
  setNativeValue(el, v.slice(0, start) + text + v.slice(end));
  try {
    el.setSelectionRange(start + text.length, start + text.length);
  } catch (e) {
    /* no selection API for this type */
  }
  el.dispatchEvent(new InputEvent('input', { bubbles: true, inputType: 'insertText', data: text }));
  el.dispatchEvent(new Event('change', { bubbles: true }));
}

function applyKey(el, key, isField) {
  if (!isField) return;
  const v = el.value || '';
  let s = v.length;
  let e = v.length;
  try {
    if (el.selectionStart != null) {
      s = el.selectionStart;
      e = el.selectionEnd;
    }
  } catch (err) {
    /* append mode */
  }
  let next = null;
  let caret = s;
  if (key === 'Backspace') {
    if (s !== e) next = v.slice(0, s) + v.slice(e);
    else if (s > 0) {
      next = v.slice(0, s - 1) + v.slice(e);
      caret = s - 1;
    }
  } else if (key === 'Delete') {
    next = s !== e ? v.slice(0, s) + v.slice(e) : v.slice(0, s) + v.slice(s + 1);
  } else if (key === 'Enter') {
    if (el instanceof HTMLTextAreaElement) {
      next = `${v.slice(0, s)}\n${v.slice(e)}`;
      caret = s + 1;
    } else if (el.form) {
      if (typeof el.form.requestSubmit === 'function') el.form.requestSubmit();
      else el.form.submit();
      return;
    }
  }
  if (next === null) return;
  setNativeValue(el, next);
  try {
    el.setSelectionRange(caret, caret);
  } catch (err) {
    /* no selection API */
  }
  el.dispatchEvent(new InputEvent('input', { bubbles: true, inputType: key === 'Enter' ? 'insertLineBreak' : 'deleteContent' }));
  el.dispatchEvent(new Event('change', { bubbles: true }));
}

function redirect(url) {
  let u;
  try {
    u = new URL(url, location.href);
  } catch (e) {
    return;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return; // never javascript: or data:
  location.href = u.href;
}

// --- the globals ----------------------------------------------------------------------
// `Cobrowse(cmd, ...args)` and, for pages written for Upscope's script, `Upscope(cmd, ...args)`:
// the same SDK under Upscope's call style (upscopeCommands). Calls made before the script
// loaded wait in the stub's `q` and are replayed, 'on' first so events fired by 'init' reach them.
const COMMANDS = ['init', 'connect', 'updateConnection', 'getUserId', 'getLookupCode', 'startSession', 'stopSession',
  'reset', 'on', 'saveHistory'];

(function install() {
  const prev = window.Cobrowse;
  if (prev && prev.loaded) return; // the script tag twice on one page
  const sdk = new Sdk();
  const own = Object.fromEntries(COMMANDS.map((c) => [c, (...args) => sdk[c](...args)]));
  const Cobrowse = makeGlobal('Cobrowse', own);
  const early = queuedCalls(prev);
  window.Cobrowse = Cobrowse;
  const prevUpscope = window.Upscope;
  let upEarly = [];
  let Upscope = null;
  if (isStub(prevUpscope)) {
    Upscope = makeGlobal('Upscope', upscopeCommands(sdk));
    upEarly = queuedCalls(prevUpscope);
    window.Upscope = Upscope;
    // Upscope's own stub forwards calls through `c` (i.c(arguments)): code holding the stub still reaches us.
    if (prevUpscope && typeof prevUpscope.c === 'function') prevUpscope.c = (a) => Upscope(...Array.from(a));
  }
  // 'on' handlers of both first, so events fired by 'init' reach them.
  for (const c of early.filter((c) => c[0] === 'on')) Cobrowse(...c);
  if (Upscope) for (const c of upEarly.filter((c) => c[0] === 'on')) Upscope(...c);
  for (const c of early.filter((c) => c[0] !== 'on')) Cobrowse(...c);
  if (Upscope) for (const c of upEarly.filter((c) => c[0] !== 'on')) Upscope(...c);
}());
