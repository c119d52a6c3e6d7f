// The agent console: {BASE}/console. Lists online visitors through the
// on-premise REST API (the REST key is asked once and kept in sessionStorage),
// searches, and opens a watch URL for a visitor in a new tab; or joins the
// visitor who reads out a session code (SDK startSession) by that code.
import { formatCode, parseCode } from './code.js';

const $ = (id) => document.getElementById(id);
const BASE = (document.body.dataset.base || '').replace(/\/$/, '');
const KEY = 'cobrowse:rest_key';
const AGENT = 'cobrowse:agent';
const POLL_MS = 2000;

let timer = null;

function restKey() {
  return sessionStorage.getItem(KEY) || '';
}

async function api(path, init = {}) {
  const res = await fetch(`${BASE}/api${path}`, {
    ...init,
    headers: { Authorization: restKey(), 'Content-Type': 'application/json', ...(init.headers || {}) },
  });
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem(KEY);
    showLogin('That REST key was refused.');
    throw new Error('unauthorized');
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok || body.status === 'error') {
    const e = new Error(body.message || body.error || `HTTP ${res.status}`);
    e.status = res.status;
    e.code = body.error || '';
    throw e;
  }
  return body;
}

function showLogin(message) {
  clearTimeout(timer);
  $('login').hidden = false;
  $('main').hidden = true;
  $('login-error').textContent = message || '';
  $('key').focus();
}

function showMain() {
  $('login').hidden = true;
  $('main').hidden = false;
  const agent = JSON.parse(localStorage.getItem(AGENT) || '{}');
  if (agent.id) $('agent-id').value = agent.id;
  if (agent.name) $('agent-name').value = agent.name;
  refresh();
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text == null ? '' : String(text);
  return td;
}

function render(visitors) {
  const rows = $('rows');
  rows.textContent = '';
  $('empty').hidden = visitors.length > 0;
  for (const v of visitors) {
    const tr = document.createElement('tr');
    tr.dataset.shortId = v.short_id;
    const who = [v.unique_id, ...(v.identities || [])].filter(Boolean).join(', ');
    tr.append(
      cell(v.short_id), cell(who), cell(v.lookup_code), cell((v.tags || []).join(', ')),
      cell(v.last_url), cell([v.browser_name, v.device_type].filter(Boolean).join(' · ')),
      cell(v.is_in_session ? 'in session' : v.is_online ? 'online' : 'offline'),
    );
    const td = document.createElement('td');
    const b = document.createElement('button');
    b.textContent = 'Watch';
    b.className = 'watch';
    b.disabled = !v.is_online;
    b.addEventListener('click', () => watch(v.short_id));
    td.appendChild(b);
    tr.appendChild(td);
    rows.appendChild(tr);
  }
}

async function refresh() {
  clearTimeout(timer);
  const q = $('search').value.trim();
  try {
    const body = await api(q ? `/visitors/list/search?search=${encodeURIComponent(q)}` : '/visitors/list/latest');
    render((body.visitors || []).filter((v) => q || v.is_online !== false));
    $('error').textContent = '';
  } catch (e) {
    if (e.message === 'unauthorized') return;
    $('error').textContent = `Could not load visitors: ${e.message}`;
  }
  timer = setTimeout(refresh, POLL_MS);
}

function permissions() {
  const out = {};
  for (const box of document.querySelectorAll('input[data-perm]')) out[box.dataset.perm] = box.checked;
  return out;
}

// `tab`: a tab already opened inside the user's click (join by code looks the
// visitor up first, and a tab opened after an await is a blocked popup).
async function watch(shortId, tab = window.open('about:blank', '_blank')) {
  const agent = { id: $('agent-id').value.trim() || '1', name: $('agent-name').value.trim() || 'Agent' };
  localStorage.setItem(AGENT, JSON.stringify(agent));
  try {
    const body = await api(`/visitors/${encodeURIComponent(shortId)}/watch_url`, {
      method: 'POST',
      body: JSON.stringify({ agent, permissions: permissions(), branding: {} }),
    });
    if (tab) tab.location.href = body.watch_url;
    else location.href = body.watch_url;
  } catch (e) {
    if (tab) tab.close();
    $('error').textContent = `Could not start a session: ${e.message}`;
  }
}

// Join by code: the visitor reads the code the SDK shows; the relay says whose it is.
async function joinByCode(text) {
  const code = parseCode(text);
  const out = $('code-error');
  if (!code) {
    out.textContent = 'A session code is 9 digits, e.g. 845 800 826.';
    return;
  }
  out.textContent = '';
  // Open the tab now, inside the submit, so popup blockers let it through.
  const tab = window.open('about:blank', '_blank');
  let visitor;
  try {
    const body = await api(`/live_sessions/${code}`);
    visitor = body.visitor;
    if (!visitor || !visitor.short_id) throw new Error('the answer names no visitor');
  } catch (e) {
    if (tab) tab.close();
    if (e.message === 'unauthorized') return;
    out.textContent = e.status === 404
      ? `No session with the code ${formatCode(code)}: check it with the visitor.`
      : `Could not look up ${formatCode(code)}: ${e.message}`;
    return;
  }
  $('code').value = '';
  await watch(visitor.short_id, tab);
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const key = $('key').value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  $('key').value = '';
  showMain();
});
$('code-form').addEventListener('submit', (e) => {
  e.preventDefault();
  joinByCode($('code').value);
});
$('search').addEventListener('input', () => {
  clearTimeout(timer);
  timer = setTimeout(refresh, 250);
});
$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  showLogin('');
});

if (restKey()) showMain();
else showLogin('');
