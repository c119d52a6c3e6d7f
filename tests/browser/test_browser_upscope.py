"""A page written for Upscope's script, pointed at the relay's sdk.js: only Upscope(...) calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from relay.storage.base import Pageview
from relay.storage.sqlite import SqliteStore

from .conftest import REST_KEY, Relay, open_viewer, safe_eval, wait_for

pytestmark = pytest.mark.browser

CANARY = "UPSCOPEMASK4477"

# Upscope's installation snippet (its stub queues calls in i.q through i.c), with our script tag.
UPSCOPE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Upscope shop</title>
<script>
  (function(w, u, d){
    var i = function(){ i.c(arguments); };
    i.q = []; i.c = function(args){ i.q.push(args); };
    var l = function(){
      var s = d.createElement('script'); s.type = 'text/javascript'; s.async = true;
      s.src = '{relay}/sdk.js';
      var x = d.getElementsByTagName('script')[0]; x.parentNode.insertBefore(s, x);
    };
    if (typeof u !== 'function') { w.Upscope = i; l(); }
  })(window, window.Upscope, document);
  Upscope('init', { apiKey: 'pk_not_used_here', uniqueId: 'up-user-7' });
  Upscope('updateConnection', { identities: ['Grace Hopper', 'grace@example.com'], tags: ['#upscope'] });
  Upscope('getShortId', function (id) { window.shortId = id; });
  Upscope('getLookupCode', function (code) { window.lookupCode = code; });
  Upscope('on', 'sessionStart', 'sessionEnd', function () { window.sessionEvents = (window.sessionEvents || 0) + 1; });
  Upscope('on', 'connection', function () { window.connected = (window.connected || 0) + 1; });
  Upscope('saveHistory');
</script>
</head><body>
<h1 id="headline">Upscope page</h1>
<div class="no-upscope"><p id="masked">{canary}</p></div>
</body></html>
"""


def history(relay: Relay, short_id: str) -> list[Pageview]:
    """The visitor's pageviews as the relay's store keeps them (SQLite under its DATA_DIR)."""

    async def read() -> list[Pageview]:
        store = SqliteStore(relay.log.parent / "data" / "relay.sqlite3")
        await store.open()
        try:
            return await store.history(short_id, 50)
        finally:
            await store.close()

    # Playwright's sync API runs an event loop in this thread: read in another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def test_a_page_using_only_upscope_calls(browser: Any, relay: Relay) -> None:
    page_url = f"{relay.site}/upscope.html"
    context = browser.new_context(viewport={"width": 1000, "height": 700}, permissions=["local-network-access"])
    page = context.new_page()
    viewer = None
    try:
        # Served from the visitor's site origin (admitted by the relay), by the browser itself: a
        # page it made up counts as public, so it may reach the relay on loopback only when allowed.
        html = UPSCOPE_PAGE.replace("{relay}", relay.url).replace("{canary}", CANARY)
        page.route(page_url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        page.goto(page_url)
        short_id = page.wait_for_function("window.shortId", polling=100).json_value()
        assert page.evaluate("window.Upscope.loaded && window.Cobrowse.loaded") is True
        assert page.evaluate("/^\\d{4}$/.test(window.lookupCode)") is True
        wait_for(lambda: safe_eval(page, "window.connected") == 1, what="Upscope's connection event")

        # The identities reached the relay: the REST API shows them.
        def identified() -> dict[str, Any] | None:
            v = relay.visitor(short_id)
            return v if v and v.get("identities") else None

        visitor = wait_for(identified, what="the visitor's identities in the REST API")
        assert visitor["identities"] == ["Grace Hopper", "grace@example.com"]
        assert visitor["unique_id"] == "up-user-7"
        assert visitor["tags"] == ["#upscope"]
        assert visitor["is_online"] is True

        # saveHistory queued before the script loaded, then one more after an SPA navigation.
        page.evaluate("history.pushState({}, '', '/upscope/cart'); document.title = 'Cart'; Upscope('saveHistory')")
        views = wait_for(lambda: (h := history(relay, short_id)) and len(h) == 2 and h, what="two pageviews stored")
        assert [(v.url, v.title) for v in views] == [
            (f"{relay.site}/upscope/cart", "Cart"),
            (page_url, "Upscope shop"),
        ]

        # ...and the cloud API's ?with_history=true shows them (X-Api-Key: the REST key).
        req = urllib.request.Request(
            f"{relay.url}/api/v1.1/visitors/{short_id}.json?with_history=true", headers={"X-Api-Key": REST_KEY}
        )
        with urllib.request.urlopen(req, timeout=10) as res:
            shown = json.loads(res.read())["visitor"]["history"]
        assert [(h["url"], h["title"]) for h in shown] == [(v.url, v.title) for v in views]

        # An agent watches: sessionStart fires, and .no-upscope content stays in the page.
        viewer, viewer_wire = open_viewer(browser, relay.watch_url(short_id))
        viewer.frame_locator("#replica iframe").first.locator("#headline").wait_for(timeout=10_000)
        wait_for(lambda: safe_eval(page, "window.sessionEvents") == 1, what="Upscope's sessionStart event")
        assert not viewer_wire.contains(CANARY)
        page.evaluate("Upscope('stopSession')")
        wait_for(lambda: safe_eval(page, "window.sessionEvents") == 2, what="Upscope's sessionEnd event")
    finally:
        for p in (viewer, page):
            if p is not None:
                with contextlib.suppress(Exception):
                    p.context.close()
