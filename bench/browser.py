"""Browser-side numbers: SDK bundle size, and two latencies in a real Chromium.

* bundle: relay/web/dist/sdk.js (and viewer.js) raw and gzip-9 bytes;
* first frame: the agent opens the watch URL -> the replica shows the
  visitor's text (navigation, viewer handshake, session request, the visitor's
  snapshot, rebuild in the replica);
* click: the agent clicks the replica -> the visitor page's handler runs
  (capture layer -> CLICK -> relay permission check -> SDK -> element.click()).

``run(quick=False)`` does 20 runs (5 when quick) against a relay subprocess
with the visitor page on another origin, as in tests/browser, and returns
medians and p95s in milliseconds. ``python -m bench.browser [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "relay" / "web" / "dist"
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
REST_KEY = "bench-browser-rest-key"

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>bench</title>
<script>
  window.Cobrowse = window.Cobrowse || function(){(Cobrowse.q=Cobrowse.q||[]).push(arguments)};
  Cobrowse('init', {tags: ['bench']});
</script>
<script async src="{relay}/sdk.js"></script></head>
<body style="font: 16px sans-serif">
<h1 id="headline">Bench visitor page</h1>
<button id="btn" style="font-size: 24px" onclick="window.clickedAt = Date.now()">Press</button>
<ul>{rows}</ul>
</body></html>"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundle_sizes() -> dict[str, dict[str, int]]:
    out = {}
    for name in ("sdk.js", "viewer.js"):
        path = DIST / name
        if path.is_file():
            raw = path.read_bytes()
            out[name] = {"raw": len(raw), "gzip": len(gzip.compress(raw, 9))}
    return out


def _ensure_bundle() -> None:
    if (DIST / "sdk.js").is_file() and (DIST / "viewer.js").is_file():
        return
    web = ROOT / "relay" / "web"
    if not (web / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=web, check=True)
    subprocess.run(["npm", "run", "--silent", "build"], cwd=web, check=True)


@contextlib.contextmanager
def _stack() -> Iterator[dict[str, Any]]:
    """A visitor site on one port and a relay on another, torn down on exit."""
    relay_port, site_port = _free_port(), _free_port()
    relay_url, site_url = f"http://127.0.0.1:{relay_port}", f"http://127.0.0.1:{site_port}"
    rows = "".join(f"<li>item {i}</li>" for i in range(200))
    page = PAGE.replace("{relay}", relay_url).replace("{rows}", rows).encode()

    class Site(http.server.BaseHTTPRequestHandler):
        body: ClassVar[bytes] = page

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", site_port), Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        env = {
            **os.environ,
            "PORT": str(relay_port),
            "HOST": "127.0.0.1",
            "REST_KEY": REST_KEY,
            "SECRET_KEY": "bench-browser-secret-0123456789abcdef",
            "DATA_DIR": tmp,
            "ALLOWED_ORIGINS": site_url,
            "BASE_ENDPOINT": relay_url,
            "LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(relay_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the relay did not start")
                time.sleep(0.1)
            yield {"relay": relay_url, "site": site_url}
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            site.shutdown()
            site.server_close()


def _rest(relay: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"{relay}/api{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": REST_KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def _wait_online(relay: str, short_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.HTTPError):
            if _rest(relay, "GET", f"/visitors/{short_id}")["visitor"].get("is_online"):
                return
        time.sleep(0.05)
    raise RuntimeError("the visitor never came online")


USER_ID_JS = "(() => { let v = ''; Cobrowse('getUserId', (id) => { v = id; }); return v || false; })()"

REPLICA_HAS_TEXT = """() => {
  const f = document.querySelector('#replica iframe');
  const h = f && f.contentDocument && f.contentDocument.getElementById('headline');
  return !!h && h.textContent === 'Bench visitor page';
}"""


def _one_run(browser: Any, stack: dict[str, Any]) -> tuple[float, float]:
    vctx = browser.new_context(viewport={"width": 1000, "height": 700})
    wctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        visitor = vctx.new_page()
        visitor.goto(stack["site"] + "/")
        short_id = visitor.wait_for_function(USER_ID_JS, polling=50).json_value()
        _wait_online(stack["relay"], short_id)
        perms = {"allow_click": True, "allow_scroll": True, "allow_type": True, "allow_draw": True}
        url = _rest(
            stack["relay"],
            "POST",
            f"/visitors/{short_id}/watch_url",
            {"agent": {"id": "1", "name": "Bench"}, "permissions": perms, "branding": {}},
        )["watch_url"]
        viewer = wctx.new_page()
        t0 = time.perf_counter()
        viewer.goto(url)
        viewer.wait_for_function(REPLICA_HAS_TEXT, polling="raf", timeout=15_000)
        first_frame = (time.perf_counter() - t0) * 1000
        box = viewer.frame_locator("#replica iframe").locator("#btn").bounding_box()
        assert box is not None
        viewer.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        sent_at = time.time() * 1000
        viewer.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        clicked_at = visitor.wait_for_function("window.clickedAt || false", polling="raf", timeout=10_000)
        click = float(clicked_at.json_value()) - sent_at
        return first_frame, click
    finally:
        wctx.close()
        vctx.close()


def _summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    p95 = s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
    return {"median_ms": round(statistics.median(s), 1), "p95_ms": round(p95, 1), "n": len(s)}


def run(quick: bool = False) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    _ensure_bundle()
    runs = 5 if quick else 20
    first: list[float] = []
    clicks: list[float] = []
    with _stack() as stack, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            _one_run(browser, stack)  # warm-up: caches, JIT, the relay's first sqlite writes
            for _ in range(runs):
                f, c = _one_run(browser, stack)
                first.append(f)
                clicks.append(c)
        finally:
            browser.close()
    return {
        "bundle": bundle_sizes(),
        "viewer_first_frame": _summary(first),
        "agent_click_to_handler": _summary(clicks),
        "runs": runs,
    }


def format_table(out: dict[str, Any]) -> str:
    lines = [f"{'what':<48} {'value':>22}"]
    for name, size in out.get("bundle", {}).items():
        lines.append(f"{name + ' raw / gzip (KiB)':<48} {size['raw'] / 1024:>10.1f} / {size['gzip'] / 1024:>9.1f}")
    for key, label in (
        ("viewer_first_frame", "viewer open -> first frame"),
        ("agent_click_to_handler", "agent click -> page handler"),
    ):
        s = out.get(key)
        if s:
            lines.append(f"{label + ' (ms, median / p95)':<48} {s['median_ms']:>10.1f} / {s['p95_ms']:>9.1f}")
    lines.append(f"runs: {out.get('runs')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 20")
    args = parser.parse_args()
    out = run(quick=args.quick)
    print(format_table(out))


if __name__ == "__main__":
    main()
