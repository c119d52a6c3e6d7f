// The visitor-side UI of the SDK: consent dialog, session indicator, and the
// drawing / agent-pointer overlay. Everything lives in one open shadow root
// under a zero-size fixed host with class "cobrowse-ui", which the recorder
// blocks: none of it is ever recorded, so none of it replays to the agent
// (a blocked element replays as an empty box of its size: zero here).

export const UI_CLASS = 'cobrowse-ui';

const CSS = `
:host { all: initial; }
.dlg { position: fixed; left: 50%; top: 24px; transform: translateX(-50%); z-index: 2147483647;
  background: #fff; color: #111; font: 14px/1.4 system-ui, sans-serif; border-radius: 10px;
  box-shadow: 0 8px 30px rgba(0,0,0,.25); padding: 16px 18px; max-width: 360px; pointer-events: auto; }
.dlg p { margin: 0 0 12px; }
.row { display: flex; gap: 8px; justify-content: flex-end; }
button { font: inherit; border: 0; border-radius: 6px; padding: 6px 12px; cursor: pointer; }
.yes { background: #1f6feb; color: #fff; }
.no { background: #e6e6e6; color: #111; }
.bar { position: fixed; right: 16px; bottom: 16px; z-index: 2147483646; display: flex; gap: 10px;
  align-items: center; background: #1f2328; color: #fff; font: 13px/1 system-ui, sans-serif;
  padding: 8px 10px 8px 12px; border-radius: 20px; box-shadow: 0 4px 14px rgba(0,0,0,.3); pointer-events: auto; }
.dot { width: 8px; height: 8px; border-radius: 50%; background: #e5484d; }
.stop { background: #e5484d; color: #fff; padding: 4px 10px; }
canvas { position: fixed; left: 0; top: 0; width: 100vw; height: 100vh; pointer-events: none;
  z-index: 2147483645; }
.code { position: fixed; right: 16px; bottom: 16px; z-index: 2147483646; display: flex; gap: 10px;
  align-items: center; background: #fff; color: #111; font: 14px/1.3 system-ui, sans-serif; padding: 10px 10px 10px 14px;
  border-radius: 10px; box-shadow: 0 4px 14px rgba(0,0,0,.3); pointer-events: auto; max-width: calc(100vw - 32px); }
.code.err { background: #fff1f0; color: #a40e26; }
.code b { font-variant-numeric: tabular-nums; letter-spacing: .04em; }
.ptr { position: fixed; width: 14px; height: 14px; margin: -7px 0 0 -7px; border-radius: 50%;
  background: rgba(31,111,235,.55); border: 2px solid #1f6feb; pointer-events: none; z-index: 2147483646;
  display: none; transition: left .05s linear, top .05s linear; }
`;

export class VisitorUI {
  constructor() {
    this.host = null;
    this.root = null;
    this.strokes = [];
    this.canvas = null;
    this.code = null; // the session code box (startSession)
    this.codeTimer = null;
    this.onScroll = () => this.redraw();
  }

  ensure() {
    if (this.host && this.host.isConnected) return this.root;
    const host = document.createElement('cobrowse-ui');
    host.className = UI_CLASS;
    host.setAttribute('style', 'position:fixed;left:0;top:0;width:0;height:0;overflow:visible;z-index:2147483647;'
      + 'pointer-events:none;display:block');
    // Everything inside carries the blocked class too, and hangs off one wrapper
    // made before the host enters the DOM: rrweb observes open shadow roots even
    // under a blocked host, and skips mutations only of nodes that are blocked.
    const shadow = host.attachShadow({ mode: 'open' });
    const style = make('style');
    style.textContent = CSS;
    const root = make('div');
    shadow.append(style, root);
    (document.body || document.documentElement).appendChild(host);
    this.host = host;
    this.root = root;
    return root;
  }

  // --- consent -------------------------------------------------------------
  ask(message) {
    const root = this.ensure();
    this.closeDialog();
    return new Promise((resolve) => {
      const dlg = make('div');
      dlg.classList.add('dlg');
      dlg.setAttribute('role', 'dialog');
      dlg.setAttribute('data-cobrowse', 'consent');
      const p = make('p');
      p.textContent = message;
      const row = make('div');
      row.classList.add('row');
      const no = button('Decline', 'no', 'decline');
      const yes = button('Allow', 'yes', 'accept');
      row.append(no, yes);
      dlg.append(p, row);
      root.appendChild(dlg);
      this.dialog = dlg;
      this.resolveDialog = (ok) => {
        dlg.remove();
        this.dialog = null;
        this.resolveDialog = null;
        resolve(ok);
      };
      yes.addEventListener('click', () => this.resolveDialog && this.resolveDialog(true));
      no.addEventListener('click', () => this.resolveDialog && this.resolveDialog(false));
      yes.focus();
    });
  }

  closeDialog() {
    if (this.resolveDialog) this.resolveDialog(false);
  }

  // --- session indicator -----------------------------------------------------
  showIndicator(agentName, onStop) {
    const root = this.ensure();
    this.hideIndicator();
    const bar = make('div');
    bar.classList.add('bar');
    bar.setAttribute('data-cobrowse', 'indicator');
    const dot = make('span');
    dot.classList.add('dot');
    const label = make('span');
    label.textContent = agentName ? `${agentName} is viewing this page` : 'An agent is viewing this page';
    const stop = button('Stop', 'stop', 'stop');
    stop.addEventListener('click', onStop);
    bar.append(dot, label, stop);
    root.appendChild(bar);
    this.bar = bar;
  }

  hideIndicator() {
    if (this.bar) this.bar.remove();
    this.bar = null;
  }

  // --- session code (startSession) ----------------------------------------------
  // One line: "Your code: 845 800 826 — read it to your agent" and a Cancel button.
  showCode(line, onCancel) {
    const box = this.codeBox('code');
    const text = make('span');
    const m = /^(.*?: )(.+?)( — .*)$/.exec(line);
    if (m) {
      const b = make('b');
      b.textContent = m[2];
      text.append(m[1], b, m[3]);
    } else {
      text.textContent = line;
    }
    const cancel = button('Cancel', 'no', 'code-cancel');
    cancel.addEventListener('click', onCancel);
    box.append(text, cancel);
  }

  // One line saying what went wrong, with a button to close it; gone by itself after 10 s.
  showCodeError(line) {
    const box = this.codeBox('code-error');
    box.classList.add('err');
    const text = make('span');
    text.textContent = line;
    const close = button('Close', 'no', 'code-close');
    close.addEventListener('click', () => this.hideCode());
    box.append(text, close);
    this.codeTimer = setTimeout(() => this.hideCode(), 10000);
  }

  codeBox(name) {
    const root = this.ensure();
    this.hideCode();
    const box = make('div');
    box.classList.add('code');
    box.setAttribute('role', 'status');
    box.setAttribute('data-cobrowse', name);
    root.appendChild(box);
    this.code = box;
    return box;
  }

  hideCode() {
    clearTimeout(this.codeTimer);
    if (this.code) this.code.remove();
    this.code = null;
  }

  // --- agent pointer and drawing ------------------------------------------------
  pointer(x, y) {
    const root = this.ensure();
    if (!this.ptr) {
      this.ptr = make('div');
      this.ptr.classList.add('ptr');
      this.ptr.setAttribute('data-cobrowse', 'agent-pointer');
      root.appendChild(this.ptr);
    }
    this.ptr.style.display = 'block';
    this.ptr.style.left = `${x - window.scrollX}px`;
    this.ptr.style.top = `${y - window.scrollY}px`;
  }

  stroke(points, color, width) {
    this.strokes.push({ points, color, width });
    this.host && this.host.setAttribute('data-strokes', String(this.strokes.length));
    this.ensureCanvas();
    this.redraw();
  }

  clearStrokes() {
    this.strokes = [];
    if (this.host) this.host.setAttribute('data-strokes', '0');
    this.redraw();
  }

  ensureCanvas() {
    const root = this.ensure();
    if (this.canvas) return;
    this.canvas = make('canvas');
    this.canvas.setAttribute('data-cobrowse', 'draw');
    root.appendChild(this.canvas);
    window.addEventListener('scroll', this.onScroll, { passive: true });
    window.addEventListener('resize', this.onScroll, { passive: true });
  }

  // Strokes are kept in page coordinates, so they stay on the content they mark.
  redraw() {
    const c = this.canvas;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    const w = window.innerWidth;
    const h = window.innerHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.lineCap = 'round';
    g.lineJoin = 'round';
    for (const s of this.strokes) {
      if (!s.points.length) continue;
      g.strokeStyle = s.color;
      g.lineWidth = s.width;
      g.beginPath();
      s.points.forEach(([x, y], i) => {
        const px = x - window.scrollX;
        const py = y - window.scrollY;
        if (i === 0) g.moveTo(px, py);
        else g.lineTo(px, py);
      });
      if (s.points.length === 1) g.lineTo(s.points[0][0] - window.scrollX + 0.1, s.points[0][1] - window.scrollY);
      g.stroke();
    }
  }

  reset() {
    this.closeDialog();
    this.hideIndicator();
    this.clearStrokes();
    if (this.ptr) this.ptr.style.display = 'none';
  }
}

function button(text, cls, name) {
  const b = make('button');
  b.type = 'button';
  b.classList.add(cls);
  b.textContent = text;
  b.setAttribute('data-cobrowse', name);
  return b;
}

function make(tag) {
  const el = document.createElement(tag);
  el.className = UI_CLASS;
  return el;
}
