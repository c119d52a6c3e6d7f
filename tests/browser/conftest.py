"""Browser tests: a real relay, a real Chromium, the visitor page on another origin.

One relay subprocess and one Chromium per test module. The visitor's page is
served by a small ``http.server`` on its own port (a different origin from the
relay), loads ``{relay}/sdk.js`` with one script tag, and is the only origin in
``ALLOWED_ORIGINS``. The agent opens the watch URL that the REST API signs.

When Chromium, node or the relay cannot start, the tests skip on a developer's
machine and fail under ``CI=true``: a CI that stops running them must go red.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "relay" / "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REST_KEY = "browser-test-rest-key"
ALL_PERMISSIONS = {
    "allow_click": True,
    "allow_scroll": True,
    "allow_type": True,
    "allow_draw": True,
    "allow_agent_redirect": True,
    "allow_console": False,
}

pytestmark = pytest.mark.browser


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where every browser test must run."""
    if in_ci():
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_bundle() -> None:
    """Build relay/web/dist when it is missing (what `make web` does)."""
    if all((WEB / "dist" / f).is_file() for f in ("sdk.js", "viewer.js", "console.js")):
        return
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: cannot build the browser bundle")
        return
    if not (WEB / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True, timeout=300)
    subprocess.run([npm, "run", "--silent", "build"], cwd=WEB, check=True, timeout=120)


# --- the visitor's site: another origin -------------------------------------------------
VISITOR_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Visitor alpha</title>
<style>
  body { font: 16px sans-serif; margin: 0; padding: 16px; }
  #box { height: 120px; overflow-y: auto; border: 1px solid #999; }
  #box div { height: 40px; }
  .tall { height: 3000px; background: linear-gradient(#fff, #ddd); }
  input { display: block; margin: 6px 0; width: 240px; }
</style>
<script>
  window.clicks = 0;
  window.loadedAt = Date.now();
  window.Cobrowse = window.Cobrowse || function(){(Cobrowse.q=Cobrowse.q||[]).push(arguments)};
  (function () {
    var q = new URLSearchParams(location.search);
    Cobrowse('init', {
      uniqueId: 'user-' + (q.get('uid') || 'anon'),
      identities: ['alpha@example.com'],
      tags: ['browser-test'],
      maskedElements: ['.secret-field'],
      requireAuthorizationForSession: q.has('consent'),
      allowRemoteConsole: q.has('console'),
    });
    function note(name) { window.sessionEvents = (window.sessionEvents || []).concat(name); }
    Cobrowse('on', 'sessionStart', function () { note('start'); });
    Cobrowse('on', 'sessionContinue', function () { note('continue'); });
    Cobrowse('on', 'sessionEnd', function () { note('end'); });
  })();
</script>
<script async src="{relay}/sdk.js"></script>
</head><body>
<h1 id="headline">Visitor page alpha</h1>
<p id="status">idle</p>
<button id="btn" type="button"
  onclick="window.clicks++; document.getElementById('status').textContent = 'clicked ' + window.clicks"
  >Press me</button>
<input id="name" placeholder="name">
<input id="card" class="no-cobrowse" placeholder="card">
<input id="pw" type="password" placeholder="password">
<div class="no-cobrowse"><input id="inner" placeholder="inner"><p id="masked-text">{text_canary}</p>
  <span data-secret="DATACANARY6161">x</span>
  <select id="plan"><option value="OPTCANARY2323">one</option><option>two</option></select></div>
<input id="selected" class="secret-field" placeholder="selected by maskedElements">
<iframe id="frame" width="200" height="60" srcdoc="<p class='no-cobrowse'>{srcdoc_canary}</p>"></iframe>
<div id="box">{box_rows}</div>
<a id="next" href="/page2.html">Go to page two</a>
<script>document.getElementById('next').search = location.search;</script>
<div class="tall">tall</div>
</body></html>
"""

PAGE_TWO = """<!doctype html>
<html><head><meta charset="utf-8"><title>Visitor beta</title>
<script>
  window.Cobrowse = window.Cobrowse || function(){(Cobrowse.q=Cobrowse.q||[]).push(arguments)};
  Cobrowse('init', { requireAuthorizationForSession: new URLSearchParams(location.search).has('consent') });
  Cobrowse('on', 'sessionContinue', function () { window.sessionEvents = ['continue']; });
</script>
<script async src="{relay}/sdk.js"></script>
</head><body><h1 id="headline">Second page beta</h1><p id="status">arrived</p></body></html>
"""

# Keeps every WebSocket a page opens in window.__sockets, so a test can drop one.
KEEP_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__closes = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
      this.addEventListener('close', (e) => { window.__closes.push(e.code + ' ' + e.reason); });
    }
  };
})();"""

# The visitor's short id once the relay has assigned it (getUserId answers synchronously).
USER_ID_JS = "(() => { let v = ''; Cobrowse('getUserId', (id) => { v = id; }); return v || false; })()"

TEXT_CANARY = "TXTCANARY7731"
SRCDOC_CANARY = "SRCDOCCANARY5512"


class _Site(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.pages.get(path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Relay:
    url: str
    site: str
    log: Path

    def rest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + "/api" + path,
            data=data,
            method=method,
            headers={"Authorization": REST_KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read())

    def visitor(self, short_id: str) -> dict[str, Any] | None:
        try:
            body = self.rest("GET", f"/visitors/{short_id}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        visitor: dict[str, Any] = body["visitor"]
        return visitor

    def watch_url(self, short_id: str, **perms: bool) -> str:
        body = {
            "agent": {"id": "1", "name": "Ann"},
            "permissions": {**ALL_PERMISSIONS, **perms},
            "branding": {"naked": False, "no_bottom_bar": False, "on_end_url": None, "retry_url": None},
        }
        url: str = self.rest("POST", f"/visitors/{short_id}/watch_url", body)["watch_url"]
        return url

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    ensure_bundle()
    relay_port, site_port = free_port(), free_port()
    relay_url = f"http://127.0.0.1:{relay_port}"
    site_url = f"http://127.0.0.1:{site_port}"

    rows = "".join(f"<div>row {i}</div>" for i in range(30))
    pages = {
        "/visitor.html": VISITOR_PAGE.replace("{relay}", relay_url)
        .replace("{text_canary}", TEXT_CANARY)
        .replace("{srcdoc_canary}", SRCDOC_CANARY)
        .replace("{box_rows}", rows),
        "/page2.html": PAGE_TWO.replace("{relay}", relay_url),
    }
    handler = type("Site", (_Site,), {"pages": pages})
    site = http.server.ThreadingHTTPServer(("127.0.0.1", site_port), handler)
    site.daemon_threads = True
    site_thread = threading.Thread(target=site.serve_forever, daemon=True)
    site_thread.start()

    with tempfile.TemporaryDirectory(prefix="cobrowse-browser-") as tmp:
        log_path = Path(tmp) / "relay.log"
        env = {
            **os.environ,
            "PORT": str(relay_port),
            "HOST": "127.0.0.1",
            "REST_KEY": REST_KEY,
            "SECRET_KEY": "browser-tests-secret-key-0123456789abcdef",
            "DATA_DIR": str(Path(tmp) / "data"),
            # The visitor's site, and the relay's own /demo page.
            "ALLOWED_ORIGINS": f"{site_url},{relay_url}",
            "BASE_ENDPOINT": relay_url,
            "LOG_LEVEL": os.environ.get("RELAY_LOG_LEVEL", "warning"),
        }
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "relay"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        relay = Relay(relay_url, site_url, log_path)
        try:
            if not _wait_healthy(relay_url, proc, timeout=20):
                unavailable(f"the relay did not become healthy:\n{relay.logs()}")
            yield relay
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            site.shutdown()
            site.server_close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/health", timeout=2) as res:
            if res.status == 200:
                return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
        return
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Exception as e:
            unavailable(f"Chromium did not start: {e}")
            return
        try:
            yield browser
        finally:
            browser.close()


# --- frames seen by a page ---------------------------------------------------------------
@dataclass
class Wire:
    """Every websocket frame a page sent and received, as bytes.

    Playwright's sync API delivers events only while it is called: every read
    first pumps it, so no frame that already crossed is missed.
    """

    page: Any = None
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    sockets: list[Any] = field(default_factory=list)

    def attach(self, page: Any) -> Wire:
        self.page = page

        def on_socket(ws: Any) -> None:
            self.sockets.append(ws)
            ws.on("framesent", lambda p: self.sent.append(_bytes(p)))
            ws.on("framereceived", lambda p: self.received.append(_bytes(p)))

        page.on("websocket", on_socket)
        return self

    def pump(self) -> None:
        with contextlib.suppress(Exception):
            self.page.wait_for_timeout(20)

    def kinds_sent(self) -> list[int]:
        self.pump()
        return [f[1] for f in self.sent if len(f) >= 16]

    def kinds_received(self) -> list[int]:
        self.pump()
        return [f[1] for f in self.received if len(f) >= 16]

    def socket_count(self) -> int:
        self.pump()
        return len(self.sockets)

    def contains(self, needle: str) -> bool:
        self.pump()
        b = needle.encode()
        return any(b in f for f in (*self.sent, *self.received))


def _bytes(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else str(payload).encode()


# --- a visitor and an agent --------------------------------------------------------------
@dataclass
class Pair:
    visitor: Any
    viewer: Any
    short_id: str
    visitor_wire: Wire
    viewer_wire: Wire

    def replica(self) -> Any:
        return self.viewer.frame_locator("#replica iframe").first

    def close(self) -> None:
        for page in (self.viewer, self.visitor):
            with contextlib.suppress(Exception):
                page.context.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def safe_eval(page: Any, expression: str) -> Any:
    """page.evaluate that yields None while the page is navigating."""
    try:
        return page.evaluate(expression)
    except Exception:
        return None


def open_visitor(browser: Any, relay: Relay, query: str = "") -> tuple[Any, str, Wire]:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    context.add_init_script(KEEP_SOCKETS)
    page = context.new_page()
    wire = Wire().attach(page)
    page.goto(f"{relay.site}/visitor.html{query}")
    page.wait_for_function("window.Cobrowse && window.Cobrowse.loaded")
    short_id: str = page.wait_for_function(USER_ID_JS, polling=100).json_value()
    try:
        wait_for(lambda: (relay.visitor(short_id) or {}).get("is_online"), what="the visitor online in the REST API")
    except AssertionError as e:
        closes = safe_eval(page, "window.__closes")
        online = [v["short_id"] for v in relay.rest("GET", "/visitors/list/latest")["visitors"]]
        closes = f"{closes}; id {short_id!r}; latest {online}"
        raise AssertionError(
            f"{e}: visitor {relay.visitor(short_id)}; sent {wire.kinds_sent()}; closes {closes}\n{relay.logs()}"
        ) from None
    return page, short_id, wire


def open_viewer(browser: Any, url: str) -> tuple[Any, Wire]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    wire = Wire().attach(page)
    page.goto(url)
    return page, wire


@pytest.fixture()
def pair_factory(browser: Any, relay: Relay) -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(query: str = "", accept: bool = True, wait_live: bool = True, **perms: bool) -> Pair:
        visitor, short_id, vwire = open_visitor(browser, relay, query)
        viewer, wwire = open_viewer(browser, relay.watch_url(short_id, **perms))
        pair = Pair(visitor, viewer, short_id, vwire, wwire)
        made.append(pair)
        if "consent" in query and accept:
            visitor.locator("[data-cobrowse=accept]").click()
        if wait_live:
            pair.replica().locator("#headline").wait_for(timeout=10_000)
        return pair

    yield make
    for pair in made:
        pair.close()
