// The watch page: {BASE}/screen?id=<visitor short_id>&token=<watch grant>.
//
// Connects to {BASE}/ws/viewer, presents the grant (or, after a reload or a
// drop, the resume token from WELCOME), and replays the visitor's page with
// rrweb's Replayer in live mode. A capture layer above the replica turns the
// agent's clicks, wheel and keys into control frames (node ids from the
// replica's mirror), only for the permissions in force (WELCOME.permissions);
// the relay checks them again. Ordered frames carry epoch/seq: a gap asks for
// a resync rather than replaying a page that silently diverged.
import { Replayer } from 'rrweb';
import rrwebCss from 'rrweb/dist/style.css';

import { KINDS, PROTOCOL_VERSION, frameHandler, encode, unpackEvents } from './protocol.js';
import { VIEWER_BACKOFF, hintFromError, lookupSession, nextConnect, socketUrl } from './redirect.js';

const $ = (id) => document.getElementById(id);
const BASE = (document.body.dataset.base || '').replace(/\/$/, '');
const PAGE_BASE = `${location.origin}${BASE}`; // the usual base of the websocket (and of the session lookup)
const params = new URLSearchParams(location.search);
const VISITOR = params.get('id') || '';
const GRANT = params.get('token') || '';
const STORE = `cobrowse:viewer:${VISITOR}`;
const CONTROL_FLUSH_MS = 50;

function b64urlJson(part) {
  try {
    const s = part.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(s + '='.repeat((4 - (s.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    return {};
  }
}

// Display hints only: the relay verifies the grant, the page just reads it.
const CLAIMS = b64urlJson(GRANT.split('.')[0] || '');
const BRANDING = { naked: false, no_bottom_bar: false, on_end_url: null, retry_url: null, ...(CLAIMS.b || {}) };

function loadStored() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE) || 'null');
    return s && s.grant === GRANT ? s : null;
  } catch (e) {
    return null;
  }
}

class Viewer {
  constructor() {
    this.ws = null;
    this.attempt = 0; // backoff steps since the last WELCOME
    this.redirects = 0; // 4003 redirects followed since the last WELCOME
    this.hint = null; // {node, url} of an ERROR session_moved on the current socket
    this.connects = 0; // bumped by every connect(): a lookup that comes back late is dropped
    this.url = ''; // the websocket URL of the current (or last) socket
    this.retryTimer = null;
    this.state = '';
    this.permissions = new Set(CLAIMS.p || []);
    const stored = loadStored();
    this.resume = stored ? stored.resume : '';
    this.session = stored ? stored.session || '' : '';
    this.epoch = 0; // what the replica holds: nothing yet, even after a reload
    this.seq = 0;
    this.awaitingKeyframe = false;
    this.replayer = null;
    this.lastTs = 0;
    this.scale = 1;
    this.size = { width: 1024, height: 768 };
    this.focusNode = 0;
    this.drawing = false;
    this.stroke = null;
    this.strokes = [];
    this.wheel = { node: 0, dx: 0, dy: 0, timer: null };
    this.pointerAt = 0;
    this.ended = false;
    this.seen = {}; // frames received, by kind: shown to tests and debugging
  }

  start() {
    const style = document.createElement('style');
    style.textContent = rrwebCss;
    document.head.appendChild(style);
    document.body.classList.toggle('naked', !!BRANDING.naked);
    document.body.classList.toggle('no-bottom-bar', !!BRANDING.no_bottom_bar);
    $('agent').textContent = CLAIMS.an ? `Agent: ${CLAIMS.an}` : '';
    $('visitor').textContent = VISITOR ? `Visitor ${VISITOR}` : '';
    if (BRANDING.retry_url) $('retry').href = BRANDING.retry_url;
    this.bindUi();
    this.renderPermissions();
    window.addEventListener('resize', () => this.fit());
    if (!VISITOR || !GRANT) {
      this.setState('error', 'This watch link is incomplete.');
      return;
    }
    this.connect();
  }

  // --- state ------------------------------------------------------------------------------
  setState(state, text) {
    this.state = state;
    document.body.dataset.state = state;
    const labels = {
      connecting: 'Connecting…',
      waiting: 'Waiting for the visitor…',
      live: 'Live',
      reconnecting: 'Reconnecting…',
      declined: 'The visitor declined the session.',
      ended: 'The session has ended.',
      error: 'Could not connect.',
    };
    $('state').textContent = text || labels[state] || state;
    $('retry-box').hidden = !(BRANDING.retry_url && (state === 'error' || state === 'reconnecting'));
    const msg = $('message');
    const showMsg = state !== 'live' || !this.replayer;
    msg.hidden = !showMsg;
    msg.textContent = text || (state === 'live' ? 'Waiting for the page…' : labels[state] || state);
  }

  save() {
    try {
      sessionStorage.setItem(STORE, JSON.stringify({
        grant: GRANT, resume: this.resume, session: this.session, epoch: this.epoch, seq: this.seq,
      }));
    } catch (e) {
      /* storage full or disabled: resume within this page still works */
    }
  }

  // --- connection ------------------------------------------------------------------------
  // `url`: where a 4003 redirect sends this connect. Without it the relay is asked
  // which node holds the visitor's session (at most LOOKUP_TIMEOUT_MS), and the
  // socket goes there, or the usual way when it does not say.
  connect(url = '') {
    this.retryTimer = null;
    this.setState(this.attempt || this.redirects ? 'reconnecting' : 'connecting');
    const n = ++this.connects;
    if (url) {
      this.open(url);
      return;
    }
    lookupSession(PAGE_BASE, VISITOR).then((hint) => {
      if (n !== this.connects || this.ended || this.ws) return;
      this.open(hint ? socketUrl(hint.url || PAGE_BASE, 'viewer', hint.node) : socketUrl(PAGE_BASE, 'viewer'));
    });
  }

  open(url) {
    this.hint = null;
    this.url = url;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.onClose(1006, 'bad url');
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.send('HELLO', {
        role: 'viewer',
        version: PROTOCOL_VERSION,
        token: this.resume || GRANT,
        resume_epoch: this.epoch,
        resume_seq: this.seq,
      });
    };
    ws.onmessage = frameHandler('viewer', (msg) => this.onFrame(msg));
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onClose(ev.code, ev.reason);
    };
  }

  onClose(code, reason) {
    if (this.ended) return;
    if (code === 4508) return this.end('ended');
    if (code === 4509) return this.setState('declined');
    if (code === 4504 || code === 4505 || code === 4506) {
      if (this.resume && this.resume !== GRANT && code !== 4506) {
        // The resume token is no longer good (session gone): nothing to come back to.
        this.resume = '';
        this.save();
      }
      return this.setState('error', `The watch link is no longer valid (${reason || code}).`);
    }
    // 4003 follows the relay's hint at once; other retryable codes back off
    // (0.3 s doubling to 10 s, half of it jitter) and ask where the session is.
    const next = nextConnect({
      code, hint: this.hint, redirects: this.redirects, attempt: this.attempt, base: PAGE_BASE, role: 'viewer',
      backoff: VIEWER_BACKOFF,
    });
    this.hint = null;
    if (!next.retry) return this.setState('error', `Disconnected (${reason || code}).`);
    this.redirects = next.redirects;
    this.attempt = next.attempt;
    this.setState('reconnecting');
    // A hint names the node: go there. Otherwise (backoff, or a 4003 naming none) ask first.
    const url = next.redirect && next.node ? next.url : '';
    this.retryTimer = setTimeout(() => this.connect(url), next.delay);
  }

  send(kind, fields = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(encode(kind, fields));
    return true;
  }

  allowed(permission) {
    return this.permissions.has(permission);
  }

  // --- inbound ------------------------------------------------------------------------------
  onFrame(msg) {
    const f = msg.fields;
    this.seen[msg.kind] = (this.seen[msg.kind] || 0) + 1;
    switch (msg.code) {
      case KINDS.WELCOME:
        this.attempt = 0;
        this.redirects = 0;
        if (f.resume) this.resume = f.resume;
        this.session = f.session || this.session;
        this.permissions = new Set(f.permissions || []);
        this.renderPermissions();
        this.save();
        if (this.state !== 'live') this.setState('waiting');
        break;
      case KINDS.SESSION_ACCEPT:
        this.setState('live');
        break;
      case KINDS.SESSION_DECLINE:
        this.setState('declined');
        break;
      case KINDS.SESSION_END:
        this.end(f.reason || 'ended');
        break;
      case KINDS.PERMISSIONS_UPDATE:
        this.permissions = new Set(f.permissions);
        this.renderPermissions();
        break;
      case KINDS.ERROR:
        if (hintFromError(f)) this.hint = hintFromError(f); // used when this socket closes with 4003
        else if (f.code === 'forbidden') this.note(`Not allowed: ${f.message || 'that action'}`);
        else if (f.close_code) this.note(`${f.code}: ${f.message}`);
        break;
      case KINDS.DOM_KEYFRAME:
        this.epoch = msg.epoch;
        this.seq = msg.seq;
        this.awaitingKeyframe = false;
        this.keyframe(unpackEvents(f.data));
        this.save();
        break;
      case KINDS.DOM_DELTA:
      case KINDS.CONSOLE_LINES:
        if (!this.inOrder(msg)) return;
        if (msg.code === KINDS.DOM_DELTA) this.delta(unpackEvents(f.data));
        else this.consoleLines(f.level, f.lines);
        break;
      case KINDS.URL_CHANGE:
        $('url').textContent = f.url;
        $('url').title = f.title || f.url;
        break;
      case KINDS.PING:
        this.send('PONG', { t: f.t });
        break;
      default:
    }
  }

  // Ordered frames: apply seq+1 only; drop duplicates; on a gap ask for a keyframe.
  inOrder(msg) {
    if (this.awaitingKeyframe) return false;
    if (msg.epoch === this.epoch && msg.seq <= this.seq) return false; // already applied
    if (msg.epoch !== this.epoch || msg.seq !== this.seq + 1 || !this.replayer) {
      this.awaitingKeyframe = true;
      this.send('RESYNC_REQUEST', { reason: 'gap' });
      return false;
    }
    this.seq = msg.seq;
    if (msg.seq % 50 === 0) this.save();
    return true;
  }

  // Visitor timestamps are the visitor's clock and may be minutes old (a late
  // join replays the log): events are re-stamped with the arrival time so the
  // live replayer applies them now, in order.
  stamp(events) {
    const t = Math.max(this.lastTs, Date.now());
    this.lastTs = t;
    for (const e of events) e.timestamp = t;
    return events;
  }

  keyframe(events) {
    if (!Array.isArray(events) || !events.length) return;
    this.stamp(events);
    if (this.replayer) {
      try {
        this.replayer.destroy();
      } catch (e) {
        /* already gone */
      }
      $('replica').textContent = '';
    }
    const replayer = new Replayer(events, {
      root: $('replica'),
      liveMode: true,
      mouseTail: false,
      showWarning: false,
      showDebug: false,
      UNSAFE_replayCanvas: false,
      triggerFocus: false,
      pauseAnimation: false,
    });
    replayer.on('resize', (d) => this.resize(d.width, d.height));
    const meta = events.find((e) => e.type === 4);
    if (meta && meta.data) this.resize(meta.data.width, meta.data.height);
    replayer.startLive(events[0].timestamp - 20);
    this.replayer = replayer;
    window.__cobrowseReplayer = replayer; // for tests and debugging
    this.setState('live');
  }

  delta(events) {
    if (!this.replayer || !Array.isArray(events)) return;
    for (const e of this.stamp(events)) this.replayer.addEvent(e);
  }

  resize(width, height) {
    if (!width || !height) return;
    this.size = { width, height };
    this.fit();
  }

  fit() {
    const stage = $('stage');
    const frame = $('frame');
    const { width, height } = this.size;
    const s = Math.min(stage.clientWidth / width, stage.clientHeight / height, 1) || 1;
    this.scale = s;
    frame.style.width = `${width}px`;
    frame.style.height = `${height}px`;
    frame.style.transform = `scale(${s})`;
    frame.style.left = `${Math.max(0, (stage.clientWidth - width * s) / 2)}px`;
    frame.style.top = `${Math.max(0, (stage.clientHeight - height * s) / 2)}px`;
    const ink = $('ink');
    ink.width = width;
    ink.height = height;
    this.redrawInk();
  }

  end(reason) {
    this.ended = true;
    clearTimeout(this.retryTimer);
    try {
      sessionStorage.removeItem(STORE);
    } catch (e) {
      /* ignore */
    }
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.setState('ended', `The session has ended${reason && reason !== 'ended' ? ` (${reason})` : ''}.`);
    if (BRANDING.on_end_url) {
      location.href = BRANDING.on_end_url;
    } else if (!BRANDING.naked) {
      setTimeout(() => window.close(), 1500);
    }
  }

  note(text) {
    const n = $('note');
    n.textContent = text;
    n.hidden = false;
    clearTimeout(this.noteTimer);
    this.noteTimer = setTimeout(() => {
      n.hidden = true;
    }, 4000);
  }

  // --- the replica's coordinates ----------------------------------------------------------------
  replicaPoint(ev) {
    const r = $('capture').getBoundingClientRect();
    return { x: (ev.clientX - r.left) / this.scale, y: (ev.clientY - r.top) / this.scale };
  }

  replicaWindow() {
    return this.replayer && this.replayer.iframe ? this.replayer.iframe.contentWindow : null;
  }

  toPage(p) {
    const w = this.replicaWindow();
    return { x: p.x + (w ? w.scrollX : 0), y: p.y + (w ? w.scrollY : 0) };
  }

  // The replica element under a point, descending into nested iframes.
  elementAt(p) {
    if (!this.replayer) return null;
    let doc = this.replayer.iframe.contentDocument;
    let { x, y } = p;
    let el = null;
    for (let depth = 0; doc && depth < 8; depth += 1) {
      el = doc.elementFromPoint(x, y);
      if (!el || el.tagName !== 'IFRAME' || !el.contentDocument) break;
      const r = el.getBoundingClientRect();
      x -= r.left;
      y -= r.top;
      doc = el.contentDocument;
    }
    return el;
  }

  nodeId(el) {
    if (!el || !this.replayer) return 0;
    const id = this.replayer.getMirror().getId(el);
    return id > 0 ? id : 0;
  }

  scrollTarget(el) {
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
      const tag = n.tagName;
      if (tag === 'HTML' || tag === 'BODY') break;
      const s = n.ownerDocument.defaultView.getComputedStyle(n);
      if (/(auto|scroll|overlay)/.test(s.overflowY + s.overflowX)
        && (n.scrollHeight > n.clientHeight || n.scrollWidth > n.clientWidth)) return this.nodeId(n);
    }
    return 0;
  }

  // --- UI -------------------------------------------------------------------------------------
  renderPermissions() {
    const can = (p) => this.allowed(p);
    $('btn-draw').hidden = !can('draw');
    $('btn-clear').hidden = !can('draw');
    $('redirect-form').hidden = !can('agent_redirect');
    $('btn-reload').hidden = !can('agent_redirect');
    $('btn-console').hidden = !can('console');
    if (!can('console')) $('console').hidden = true;
    if (!can('draw') && this.drawing) this.toggleDraw(false);
    document.body.dataset.permissions = [...this.permissions].sort().join(' ');
  }

  bindUi() {
    const cap = $('capture');
    cap.addEventListener('mousedown', (e) => this.onDown(e));
    cap.addEventListener('mousemove', (e) => this.onMove(e));
    window.addEventListener('mouseup', (e) => this.onUp(e));
    cap.addEventListener('click', (e) => this.onClick(e));
    cap.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    cap.addEventListener('keydown', (e) => this.onKey(e));
    cap.addEventListener('paste', (e) => {
      const text = e.clipboardData ? e.clipboardData.getData('text') : '';
      if (text && this.focusNode && this.allowed('type')) {
        e.preventDefault();
        this.send('TYPE', { node: this.focusNode, text: text.slice(0, 4096) });
      }
    });
    cap.addEventListener('contextmenu', (e) => e.preventDefault());
    $('btn-draw').addEventListener('click', () => this.toggleDraw(!this.drawing));
    $('btn-clear').addEventListener('click', () => {
      this.strokes = [];
      this.redrawInk();
      this.send('DRAW_CLEAR');
    });
    $('btn-reload').addEventListener('click', () => this.send('RELOAD'));
    $('redirect-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const url = $('redirect-url').value.trim();
      if (url) this.send('REDIRECT', { url });
    });
    $('btn-console').addEventListener('click', () => {
      $('console').hidden = !$('console').hidden;
    });
    $('console-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const code = $('console-input').value;
      if (!code.trim()) return;
      this.consoleLines('input', [code]);
      this.send('CONSOLE_EVAL', { code });
      $('console-input').value = '';
    });
    $('btn-end').addEventListener('click', () => {
      this.send('SESSION_END', { session: this.session, reason: 'agent' });
      this.end('ended by agent');
    });
  }

  toggleDraw(on) {
    this.drawing = on;
    $('btn-draw').classList.toggle('on', on);
    $('btn-draw').setAttribute('aria-pressed', String(on));
    document.body.classList.toggle('drawing', on);
  }

  onDown(e) {
    $('capture').focus({ preventScroll: true });
    if (!this.drawing || !this.allowed('draw')) return;
    e.preventDefault();
    const p = this.toPage(this.replicaPoint(e));
    this.stroke = [[round(p.x), round(p.y)]];
  }

  onMove(e) {
    const q = this.replicaPoint(e);
    const p = this.toPage(q);
    if (this.stroke) {
      const last = this.stroke[this.stroke.length - 1];
      if (Math.abs(last[0] - p.x) + Math.abs(last[1] - p.y) >= 2 && this.stroke.length < 4000) {
        this.stroke.push([round(p.x), round(p.y)]);
        this.redrawInk();
      }
    }
    const now = Date.now();
    if (now - this.pointerAt >= CONTROL_FLUSH_MS) {
      this.pointerAt = now;
      this.send('VIEWER_POINTER', { x: round(p.x), y: round(p.y) });
    }
  }

  onUp() {
    if (!this.stroke) return;
    const points = this.stroke;
    this.stroke = null;
    this.strokes.push(points);
    this.redrawInk();
    this.send('DRAW_STROKE', { points, color: '#e5484d', width: 3 });
  }

  onClick(e) {
    if (this.drawing) return;
    const q = this.replicaPoint(e);
    const el = this.elementAt(q);
    const node = this.nodeId(el);
    if (node) this.focusNode = node;
    if (!this.allowed('click')) {
      this.note('Remote click is not allowed in this session.');
      return;
    }
    const p = this.toPage(q);
    this.send('CLICK', { node, x: round(p.x), y: round(p.y), button: e.button || 0 });
  }

  onWheel(e) {
    e.preventDefault();
    if (!this.allowed('scroll')) return;
    const w = this.wheel;
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? this.size.height : 1;
    if (!w.timer) {
      w.node = this.scrollTarget(this.elementAt(this.replicaPoint(e)));
      w.timer = setTimeout(() => {
        w.timer = null;
        const dx = clamp(w.dx);
        const dy = clamp(w.dy);
        w.dx = 0;
        w.dy = 0;
        if (dx || dy) this.send('REMOTE_SCROLL', { node: w.node, dx, dy });
      }, CONTROL_FLUSH_MS);
    }
    w.dx += e.deltaX * unit;
    w.dy += e.deltaY * unit;
  }

  onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (!this.allowed('type') || !this.focusNode) return;
    if (e.key.length === 1) {
      e.preventDefault();
      this.send('TYPE', { node: this.focusNode, text: e.key });
    } else if (['Backspace', 'Delete', 'Enter', 'Tab', 'ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown',
      'Home', 'End', 'Escape'].includes(e.key)) {
      e.preventDefault();
      this.send('TYPE', { node: this.focusNode, key: e.key });
    }
  }

  redrawInk() {
    const c = $('ink');
    const g = c.getContext('2d');
    if (!g) return;
    g.clearRect(0, 0, c.width, c.height);
    const w = this.replicaWindow();
    const ox = w ? w.scrollX : 0;
    const oy = w ? w.scrollY : 0;
    g.strokeStyle = '#e5484d';
    g.lineWidth = 3;
    g.lineCap = 'round';
    g.lineJoin = 'round';
    for (const s of this.stroke ? [...this.strokes, this.stroke] : this.strokes) {
      g.beginPath();
      s.forEach(([x, y], i) => (i ? g.lineTo(x - ox, y - oy) : g.moveTo(x - ox, y - oy)));
      g.stroke();
    }
  }

  consoleLines(level, lines) {
    const out = $('console-out');
    for (const line of lines) {
      const row = document.createElement('div');
      row.className = `line ${level}`;
      row.textContent = level === 'input' ? `> ${line}` : line;
      out.appendChild(row);
    }
    out.scrollTop = out.scrollHeight;
  }
}

function round(v) {
  return Math.round(v * 10) / 10;
}

function clamp(v) {
  return Math.max(-1e6, Math.min(1e6, Math.round(v)));
}

const viewer = new Viewer();
window.__cobrowseViewer = viewer;
viewer.start();
