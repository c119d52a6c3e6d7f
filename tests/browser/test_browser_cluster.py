"""Several relay nodes, seen from a real Chromium: what a visitor and an agent meet in cluster mode.

Real processes only: one redis-server, relay nodes ``node1..node3`` (REDIS_URL: one service),
the shipped ``deploy/haproxy.cfg`` in front of them, and Debian's Chromium driven by Playwright.
Every node's BASE_ENDPOINT is the balancer's base, so the demo page, ``sdk.js``, the console,
the watch page and every socket go through HAProxy, as a deployment would have it.

- The agent watches the demo page through the balancer; the node that owns the session is
  SIGKILLed; the SDK and the watch page reconnect by themselves, another node takes the
  session over, and the replica shows the page again, with what the visitor changed since.
- The visitor starts a session itself (``Cobrowse('startSession')``) and reads out its code;
  the agent joins with the console's "Join by code"; the visitor stops it and the agent's
  page says the session ended.
- Without a balancer, with NODE_URL on each node: a watch page opened on a node that does not
  own the session reaches the owner, by the session lookup or by following the 4003 hint.

Every wait is bounded; the file runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..cluster.harness import REST_KEY, Haproxy, Node, start_nodes, stop_nodes
from ..redisprocs import RedisServer
from ..relay.client import rest
from .conftest import KEEP_SOCKETS, USER_ID_JS, ensure_bundle, free_port, safe_eval, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

DEMO_HEADLINE = "Welcome to the demo shop"
LIVE_JS = "document.body.dataset.state === 'live' && !!window.__cobrowseReplayer"
FAILOVER_LIMIT = 10.0  # seconds from the kill to the agent seeing the page (and a change) again


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, list[Node], Haproxy]]:
    """redis-server, three nodes, HAProxy with deploy/haproxy.cfg; every node's public base is the balancer."""
    ensure_bundle()
    tmp = tmp_path_factory.mktemp("cluster-browser")
    server = RedisServer(tmp / "redis")
    nodes: list[Node] = []
    lb: Haproxy | None = None
    try:
        port = free_port()  # the balancer's, known before the nodes start: it is their BASE_ENDPOINT
        public = f"http://127.0.0.1:{port}"
        nodes = start_nodes(tmp, 3, server.url, BASE_ENDPOINT=public, ALLOWED_ORIGINS=public)
        lb = Haproxy(tmp / "haproxy", nodes, port=port).start()
        assert lb.base == public
        yield server, nodes, lb
    finally:
        if lb is not None:
            lb.stop()
        stop_nodes(nodes, drain=False)
        server.stop()


@pytest.fixture
def contexts(browser: Any) -> Iterator[list[Any]]:
    """Browser contexts made by a test (one per person), closed after it."""
    made: list[Any] = []
    yield made
    for context in made:
        with contextlib.suppress(Exception):
            context.close()


def new_context(browser: Any, made: list[Any], width: int = 1000, height: int = 700) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(KEEP_SOCKETS)
    made.append(context)
    return context


def owner(server: RedisServer, short_id: str) -> tuple[str, int]:
    """The node owning the visitor's session and its fencing epoch: Redis ``cobrowse:{ID}:owner``."""
    with server.client() as r:
        raw = r.get(f"cobrowse:{{{short_id}}}:owner")
    if not raw:
        return "", 0
    name, epoch = raw.decode().split(" ")
    return name, int(epoch)


def lookup(base: str, short_id: str) -> dict[str, Any]:
    """``GET {base}/rest/live/sessions/{id}`` as the watch page asks it (its origin in the Referer)."""
    origin = re.match(r"^https?://[^/]+", base)
    assert origin is not None
    req = urllib.request.Request(
        f"{base}/rest/live/sessions/{short_id}",
        headers={"Referer": origin.group(0) + "/", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


def online(relay: Any, short_id: str) -> bool:
    status, body = rest(relay, "GET", f"/api/visitors/{short_id}")
    return status == 200 and bool(body["visitor"]["is_online"])


def watch_url(relay: Any, short_id: str) -> str:
    body = {"agent": {"id": "7", "name": "Ann"}, "permissions": {"allow_click": True, "allow_type": True}}
    status, answer = rest(relay, "POST", f"/api/visitors/{short_id}/watch_url", body)
    assert status == 200, answer
    url: str = answer["watch_url"]
    return url


def open_demo(context: Any, base: str) -> tuple[Any, str]:
    """The relay's demo page (it asks the visitor's consent) at ``base``; the visitor's short id."""
    page = context.new_page()
    page.goto(f"{base}/demo")
    page.wait_for_function("window.Cobrowse && window.Cobrowse.loaded", timeout=10_000)
    short_id: str = page.wait_for_function(USER_ID_JS, polling=100, timeout=10_000).json_value()
    return page, short_id


def replica(viewer: Any) -> Any:
    return viewer.frame_locator("#replica iframe").first


def accept_when_asked(visitor: Any, viewer: Any, timeout: float = 10.0) -> None:
    """The visitor clicks Allow if the SDK asks; done once the agent's page is live."""
    accept = visitor.locator("[data-cobrowse=accept]")

    def live() -> bool:
        if accept.count() and accept.is_visible():
            accept.click(timeout=2000)
        return bool(safe_eval(viewer, LIVE_JS))

    wait_for(live, timeout, "the session to go live on the agent's page")


def state_of(viewer: Any) -> str:
    return str(safe_eval(viewer, "document.body.dataset.state") or "")


# --- 1. the visitor starts the session, the agent joins by its code --------------------------------
def test_the_visitor_starts_a_session_the_agent_joins_by_code_in_the_console_and_sees_it_end(
    browser: Any, balanced: tuple[RedisServer, list[Node], Haproxy], contexts: list[Any]
) -> None:
    server, _nodes, lb = balanced
    visitor_ctx = new_context(browser, contexts)
    agent_ctx = new_context(browser, contexts, 1280, 900)
    demo, short_id = open_demo(visitor_ctx, lb.base)

    started = demo.evaluate("Cobrowse('startSession')")
    code = str(started["sessionToken"])
    assert re.fullmatch(r"\d{9}", code), started
    assert started["sessionServerName"] in ("node1", "node2", "node3"), started
    spaced = f"{code[:3]} {code[3:6]} {code[6:]}"
    box = demo.locator("[data-cobrowse=code]")
    box.wait_for(timeout=5000)
    assert spaced in str(box.text_content()), box.text_content()

    # The agent: the console through the balancer, the REST key, the code as read out.
    console = agent_ctx.new_page()
    console.goto(f"{lb.base}/console")
    console.locator("#key").fill(REST_KEY)
    console.locator("#login-form button[type=submit]").click()
    console.locator("#main").wait_for(timeout=5000)
    console.locator("#code").fill(spaced)
    with agent_ctx.expect_page(timeout=10_000) as opened:
        console.locator("#code-join").click()
    viewer = opened.value
    viewer.wait_for_url(re.compile(r"/screen\?"), timeout=10_000)
    assert viewer.url.startswith(f"{lb.base}/screen?") and f"id={short_id}" in viewer.url, viewer.url
    assert console.locator("#code-error").text_content() == ""

    accept_when_asked(demo, viewer)
    replica(viewer).locator("#headline", has_text=DEMO_HEADLINE).wait_for(timeout=10_000)
    wait_for(lambda: demo.locator("[data-cobrowse=code]").count() == 0, 5, "the code box to give way")
    assert demo.locator("[data-cobrowse=indicator]").is_visible()
    name, _epoch = owner(server, short_id)
    assert name in ("node1", "node2", "node3"), name

    # The visitor stops it (GET /rest/live/users/{id}/session/stop, forwarded to the owner).
    demo.evaluate("Cobrowse('stopSession')")
    viewer.locator("#state", has_text="The session has ended").wait_for(timeout=5000)
    assert demo.locator("[data-cobrowse=indicator]").count() == 0
    status, answer = rest(lb, "GET", f"/api/live_sessions/{code}")
    assert status == 404, answer  # the code is spent


# --- 2. the owner node dies mid-session --------------------------------------------------------
def test_killing_the_owner_node_the_agent_sees_the_page_and_new_changes_again_within_10_s(
    browser: Any, balanced: tuple[RedisServer, list[Node], Haproxy], contexts: list[Any]
) -> None:
    server, nodes, lb = balanced
    assert sum(n.running for n in nodes) >= 2, "needs a node to fail over to"
    visitor_ctx = new_context(browser, contexts)
    agent_ctx = new_context(browser, contexts, 1280, 900)
    demo, short_id = open_demo(visitor_ctx, lb.base)
    wait_for(lambda: online(lb, short_id), 10, "the visitor online in the REST API (through the balancer)")

    url = watch_url(lb, short_id)
    assert url.startswith(f"{lb.base}/screen?"), url  # BASE_ENDPOINT: the balancer
    viewer = agent_ctx.new_page()
    viewer.goto(url)
    accept_when_asked(demo, viewer)
    replica(viewer).locator("#headline", has_text=DEMO_HEADLINE).wait_for(timeout=10_000)
    demo.locator("#name").type("Ada", delay=5)
    wait_for(lambda: replica(viewer).locator("#name").input_value() == "Ada", 5, "typing in the replica")

    name, fence = owner(server, short_id)
    assert name, "nobody owns the session in Redis"
    assert lookup(lb.base, short_id)["sessionServerName"] == name  # what the watch page is told
    victim = next(n for n in nodes if n.name == name)
    epoch = viewer.evaluate("window.__cobrowseViewer.epoch")
    sockets = viewer.evaluate("window.__sockets.length")

    killed = time.monotonic()
    victim.stop(signal.SIGKILL, 10)
    # A change while no node holds the session: the fresh keyframe must carry it.
    demo.evaluate("document.getElementById('saved').textContent = 'changed while the owner was down'")

    def again() -> bool:
        ok = safe_eval(viewer, f"{LIVE_JS} && ![0, {epoch}].includes(window.__cobrowseViewer.epoch)")
        return bool(ok)

    try:
        wait_for(again, FAILOVER_LIMIT, "the replica rebuilt from a fresh keyframe")
    except AssertionError:
        closes = safe_eval(viewer, "window.__closes")
        raise AssertionError(
            f"not watching {FAILOVER_LIMIT} s after SIGKILL of {name}: state {state_of(viewer)!r},"
            f" viewer closes {closes}, visitor closes {safe_eval(demo, 'window.__closes')},"
            f" owner now {owner(server, short_id)}\n{lb.log()}"
        ) from None
    shown = time.monotonic() - killed
    view = replica(viewer)
    view.locator("#headline", has_text=DEMO_HEADLINE).wait_for(timeout=2000)
    assert view.locator("#name").input_value() == "Ada"
    view.locator("#saved", has_text="changed while the owner was down").wait_for(timeout=2000)

    demo.locator("#name").type(" Lovelace", delay=5)
    wait_for(
        lambda: view.locator("#name").input_value() == "Ada Lovelace",
        max(0.5, FAILOVER_LIMIT - (time.monotonic() - killed)),
        "typing after the kill in the replica",
    )
    changed = time.monotonic() - killed

    new_name, new_fence = owner(server, short_id)
    assert new_name not in ("", name) and new_fence != fence, (name, fence, new_name, new_fence)
    assert viewer.evaluate("window.__sockets.length") > sockets
    assert viewer.url == url  # the same watch link, nothing done by the agent
    assert changed < FAILOVER_LIMIT, f"kill to change seen: {changed:.2f} s"
    print(
        f"\nSIGKILL of {name} (epoch {fence}) -> {new_name} (epoch {new_fence}):"
        f" page in the replica again after {shown:.2f} s, visitor's typing after {changed:.2f} s"
    )


def test_a_visitor_changing_page_in_a_live_session_stays_on_the_node_that_serves_it(
    browser: Any, balanced: tuple[RedisServer, list[Node], Haproxy], contexts: list[Any]
) -> None:
    """The SDK goes back to its session's node after a navigation (``?node=``, routed by the
    balancer), so changing page neither moves the session nor sends the agent hopping: the owner
    and its fencing epoch stay, and the replica follows the visitor to the new page."""
    server, _nodes, lb = balanced
    visitor_ctx = new_context(browser, contexts)
    agent_ctx = new_context(browser, contexts, 1280, 900)
    demo, short_id = open_demo(visitor_ctx, lb.base)
    wait_for(lambda: online(lb, short_id), 10, "the visitor online in the REST API (through the balancer)")
    viewer = agent_ctx.new_page()
    viewer.goto(watch_url(lb, short_id))
    accept_when_asked(demo, viewer)
    replica(viewer).locator("#headline", has_text=DEMO_HEADLINE).wait_for(timeout=10_000)
    before = owner(server, short_id)
    sockets = viewer.evaluate("window.__sockets.length")
    for path, headline in (("/demo/checkout", "Checkout"), ("/demo", DEMO_HEADLINE), ("/demo/checkout", "Checkout")):
        demo.goto(f"{lb.base}{path}")
        replica(viewer).locator("#headline", has_text=headline).wait_for(timeout=10_000)
        assert owner(server, short_id) == before, (path, before, owner(server, short_id))
    assert viewer.evaluate("window.__sockets.length") == sockets  # the agent never reconnected


# --- 3. no balancer: a watch page on the wrong node ----------------------------------------------
@pytest.fixture
def direct_nodes(tmp_path: Path) -> Iterator[list[Node]]:
    """redis-server and two nodes, each with NODE_URL (its own address) and no balancer."""
    ensure_bundle()
    server = RedisServer(tmp_path / "redis")
    nodes: list[Node] = []
    try:
        ports = [free_port(), free_port()]
        per_node = [{"PORT": str(p), "NODE_URL": f"http://127.0.0.1:{p}"} for p in ports]
        nodes = start_nodes(tmp_path, 2, server.url, per_node=per_node)
        yield nodes
    finally:
        stop_nodes(nodes, drain=False)
        server.stop()


def test_a_watch_page_opened_on_a_node_that_does_not_own_the_session_reaches_the_owner(
    browser: Any, direct_nodes: list[Node], contexts: list[Any]
) -> None:
    a, b = direct_nodes
    visitor_ctx = new_context(browser, contexts)
    demo, short_id = open_demo(visitor_ctx, a.base)  # the visitor is on node1
    wait_for(lambda: online(b, short_id), 10, "the visitor online as node2 sees it")
    where = lookup(b.base, short_id)
    assert (where["sessionServerName"], where.get("sessionServerUrl")) == (a.name, a.base), where

    # Agent 1 opens node2's watch URL: the lookup sends the page to node1's own address.
    url = watch_url(b, short_id)
    assert url.startswith(f"{b.base}/screen?"), url
    first = new_context(browser, contexts, 1280, 900).new_page()
    first.goto(url)
    accept_when_asked(demo, first)
    replica(first).locator("#headline", has_text=DEMO_HEADLINE).wait_for(timeout=10_000)
    socket_url = first.evaluate("window.__cobrowseViewer.url")
    assert socket_url == f"{a.ws_base}/ws/viewer?node={a.name}", socket_url
    assert first.evaluate("window.__closes") == []

    # Agent 2, same, but the lookup fails: node2 answers 4003 with node1's NODE_URL, and the page follows.
    second_ctx = new_context(browser, contexts, 1280, 900)
    second_ctx.route("**/rest/live/sessions/**", lambda route: route.abort())
    second = second_ctx.new_page()
    second.goto(watch_url(b, short_id))
    wait_for(lambda: safe_eval(second, LIVE_JS), 10, "the second agent live")
    replica(second).locator("#headline", has_text=DEMO_HEADLINE).wait_for(timeout=10_000)
    closes = second.evaluate("window.__closes")
    assert [c.split(" ")[0] for c in closes] == ["4003"], closes
    urls = second.evaluate("window.__sockets.map((s) => s.url)")
    assert urls == [f"{b.ws_base}/ws/viewer", f"{a.ws_base}/ws/viewer?node={a.name}"], urls

    demo.locator("#name").type("Grace", delay=5)
    for page in (first, second):
        wait_for(lambda p=page: replica(p).locator("#name").input_value() == "Grace", 5, "typing in both replicas")
    assert lookup(b.base, short_id)["sessionServerName"] == a.name
