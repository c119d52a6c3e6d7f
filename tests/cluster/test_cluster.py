"""Cluster mode with real processes: redis-server and relay nodes on loopback (no balancer here;
tests/cluster/test_failover.py puts HAProxy in front).

Clients reach nodes directly and follow the relay's 4003 hints as the browser code does
(:class:`tests.cluster.clients.Follower`, the node name mapped to its address).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import protocol as p
import pytest

from ..redisprocs import RedisServer
from ..relay.client import rest, run, visitor, wait_for, watch_token
from .clients import Follower
from .harness import ORIGIN, Node, start_nodes, stop_nodes

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[list[Node]]:
    nodes = start_nodes(tmp_path_factory.mktemp("two"), 2, redis_server.url)
    try:
        yield nodes
    finally:
        stop_nodes(nodes)


def direct(nodes: list[Node]) -> dict[str, str]:
    return {n.name: n.ws_base for n in nodes}


def hello_visitor(client_id: str) -> p.Hello:
    return p.Hello(role="visitor", version=p.PROTOCOL_VERSION, client_id=client_id)


def hello_viewer(token: str, epoch: int = 0, seq: int = 0) -> p.Hello:
    return p.Hello(role="viewer", version=p.PROTOCOL_VERSION, token=token, resume_epoch=epoch, resume_seq=seq)


def http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, Any, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, r.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


def stored_live(server: RedisServer, visitor: str, session: str) -> None:
    """Wait until the session's record in Redis says it is live (the owner writes it in the background)."""
    with server.client() as r:
        wait_for(
            lambda: r.hget(f"cobrowse:{{{visitor}}}:s:{session}", "state") == b'"live"', 5, "the live state stored"
        )


def test_a_viewer_on_the_wrong_node_is_sent_to_the_owner_and_watches(two: list[Node]) -> None:
    a, b = two

    async def scenario() -> None:
        vis, welcome = await visitor(a, "WRONGNODE1")
        assert welcome.node == "node1"
        await asyncio.sleep(0.2)  # the visitor's location is written
        token = watch_token(b, "WRONGNODE1")
        f = Follower(b.ws_base, "viewer", hello_viewer(token), direct=direct(two))
        view, vw = await f.connect()
        assert [h.error.node for h in f.hops if h.error] == ["node1"]
        assert f.hops[0].close == p.CloseCode.SESSION_MOVED
        assert vw.node == "node1"
        req = await vis.expect(p.SessionRequest)
        await vis.send(p.SessionAccept(session=req.session))
        await view.expect(p.SessionAccept)
        await vis.send(p.DomKeyframe(data=b"hello"))
        got = await view.expect(p.DomKeyframe)
        assert got.data == b"hello"

    run(scenario())


def test_one_watch_url_opened_on_two_nodes_at_once_admits_exactly_one_viewer(two: list[Node]) -> None:
    a, b = two

    async def scenario() -> None:
        await visitor(a, "TWICE00001")
        await asyncio.sleep(0.2)
        token = watch_token(a, "TWICE00001")
        results = await asyncio.gather(
            *(
                Follower(n.ws_base, "viewer", hello_viewer(token), direct=direct(two), attempts=4).connect()
                for n in (a, b, a, b)
            ),
            return_exceptions=True,
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        assert len(admitted) == 1, results
        assert all(
            "token_reused" in str(r) or "TOKEN_REUSED" in str(r) or "4506" in str(r)
            for r in results
            if isinstance(r, BaseException)
        ), results

    run(scenario())


def test_health_and_the_cluster_view(two: list[Node]) -> None:
    a, b = two
    for n in two:
        status, _, body = http(f"{n.base}/stats")
        assert status == 200 and body["node"] == n.name
        assert sorted(x["name"] for x in body["nodes"]) == ["node1", "node2"]
        with urllib.request.urlopen(f"{n.base}/health", timeout=5) as r:
            assert r.status == 200


@pytest.fixture
def redis_own(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (its nodes may reuse the names node1, node2...)."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


def test_the_owner_killed_its_session_is_taken_over_where_the_visitor_returns(
    tmp_path: Path, redis_own: RedisServer
) -> None:
    redis_server = redis_own
    nodes = start_nodes(tmp_path, 2, redis_server.url)
    a, b = nodes
    try:

        async def scenario() -> None:
            vis = Follower(a.ws_base, "visitor", hello_visitor("KILLED0001"), origin=ORIGIN, direct=direct(nodes))
            vpeer, _ = await vis.connect()
            await vpeer.send(p.Presence(url="https://shop.example/"))
            await asyncio.sleep(0.2)
            token = watch_token(a, "KILLED0001")
            view = Follower(a.ws_base, "viewer", hello_viewer(token), direct=direct(nodes))
            wpeer, ww = await view.connect()
            req = await vpeer.expect(p.SessionRequest)
            await vpeer.send(p.SessionAccept(session=req.session))
            await wpeer.expect(p.SessionAccept)
            await vpeer.send(p.DomKeyframe(data=b"before"))
            first = await wpeer.expect(p.DomKeyframe)
            assert first.data == b"before"
            stored_live(redis_server, "KILLED0001", req.session)  # a kill within ms of going live would lose it

            a.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            a.proc.wait(10)  # type: ignore[union-attr]
            killed = time.monotonic()
            # The visitor's SDK comes back through the balancer: here, to the other node.
            vis2 = Follower(b.ws_base, "visitor", hello_visitor("KILLED0001"), origin=ORIGIN, direct=direct(nodes))
            vpeer2, vw2 = await vis2.connect()
            assert vw2.node == "node2" and vw2.session == req.session  # the same session, taken over
            ask = await vpeer2.expect(p.ResyncRequest)
            assert ask.reason == "resume"
            await vpeer2.send(p.DomKeyframe(data=b"after"))
            assert ww.resume
            view2 = Follower(b.ws_base, "viewer", hello_viewer(ww.resume, ww.epoch, 1), direct=direct(nodes))
            wpeer2, ww2 = await view2.connect()
            assert ww2.node == "node2" and ww2.epoch != ww.epoch
            got = await wpeer2.expect(p.DomKeyframe)
            watching = time.monotonic() - killed
            assert got.data == b"after" and watching < 10
            status, body = rest(b, "GET", "/api/visitors/KILLED0001")
            assert status == 200 and len(body["visitor"]["sessions"]) == 1, body

        run(scenario())
    finally:
        stop_nodes(nodes)
