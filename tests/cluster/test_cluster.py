"""Cluster mode with real processes: redis-server and relay nodes on loopback (no balancer here;
tests/cluster/test_failover.py puts HAProxy in front).

Clients reach nodes directly and follow the relay's 4003 hints as the browser code does
(:class:`tests.cluster.clients.Follower`, the node name mapped to its address).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

import protocol as p
from relay.core.grants import Grant, Signer

from ..conftest import base_env, free_port
from ..redisprocs import RedisClusterProcs, RedisServer, SentinelGroup
from ..relay.client import rest, run, visitor, wait_for, watch_token
from .clients import Follower, Hop, report, status_of
from .harness import ORIGIN, SECRET_KEY, Node, start_nodes, stop_nodes

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
            with urllib.request.urlopen(f"{b.base}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            assert 'cobrowse_cluster_takeovers_total{node="node2"} 1.0' in metrics, metrics
            assert 'cobrowse_cluster_owned_rooms{node="node2"} 1.0' in metrics
            assert 'cobrowse_cluster_healthy{node="node2"} 1.0' in metrics

        run(scenario())
    finally:
        stop_nodes(nodes)


async def _session(entry: Node, nodes: list[Node], client_id: str, server: RedisServer) -> tuple[Any, Any, p.Welcome]:
    """A visitor on ``entry`` and one viewer watching it live (the viewer follows to the owner)."""
    vpeer, _ = await Follower(
        entry.ws_base, "visitor", hello_visitor(client_id), origin=ORIGIN, direct=direct(nodes)
    ).connect()
    await vpeer.send(p.Presence(url="https://shop.example/"))
    await asyncio.sleep(0.2)
    token = watch_token(entry, client_id)
    wpeer, ww = await Follower(entry.ws_base, "viewer", hello_viewer(token), direct=direct(nodes)).connect()
    req = await vpeer.expect(p.SessionRequest)
    await vpeer.send(p.SessionAccept(session=req.session))
    await wpeer.expect(p.SessionAccept)
    await vpeer.send(p.DomKeyframe(data=b"k0"))
    assert (await wpeer.expect(p.DomKeyframe)).data == b"k0"
    stored_live(server, client_id, req.session)
    return vpeer, wpeer, ww


def test_a_zombie_owner_woken_after_a_takeover_delivers_nothing_more(tmp_path: Path, redis_own: RedisServer) -> None:
    nodes = start_nodes(tmp_path, 2, redis_own.url)
    a, b = nodes
    try:

        async def scenario() -> None:
            vpeer, wpeer, _ = await _session(a, nodes, "ZOMBIE0001", redis_own)
            assert a.proc is not None
            a.proc.send_signal(signal.SIGSTOP)
            try:
                # The visitor comes back on node2: node1 still listens on its channel but does not
                # answer, so node2 waits for node1's claim to lapse (OWNERSHIP_TTL=2), then owns it.
                vis2 = Follower(b.ws_base, "visitor", hello_visitor("ZOMBIE0001"), origin=ORIGIN, direct=direct(nodes))
                vpeer2, vw2 = await vis2.connect(timeout=20)
                assert vw2.node == "node2" and vw2.session, vw2
                assert any(h.error and h.error.close_code == p.CloseCode.INTERNAL_ERROR for h in vis2.hops), vis2.hops
                await vpeer2.expect(p.ResyncRequest)
            finally:
                a.proc.send_signal(signal.SIGCONT)
            # The old visitor socket on node1 sends on; node1 must serve nothing of it.
            with contextlib.suppress(ConnectionClosed):
                await vpeer.send(p.DomKeyframe(data=b"zombie"))
                await vpeer.send(p.DomDelta(data=b"zombie"))
            got: list[p.Message] = []
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    got.append(await wpeer.recv(5))
            assert not [m for m in got if isinstance(m, p.DomKeyframe | p.DomDelta)], got
            moved = [m for m in got if isinstance(m, p.Error)]
            assert moved and moved[0].code == "session_moved" and moved[0].node == "node2", got
            assert wpeer.ws.close_code == p.CloseCode.SESSION_MOVED

        run(scenario())
    finally:
        stop_nodes(nodes)


def test_redis_restarted_empty_every_node_says_503_then_recovers_and_reowns_its_rooms(
    tmp_path: Path, redis_own: RedisServer
) -> None:
    nodes = start_nodes(tmp_path, 2, redis_own.url)
    a, _b = nodes
    try:

        async def scenario() -> None:
            vpeer, wpeer, ww = await _session(a, nodes, "RESTART001", redis_own)
            redis_own.kill()
            for n in nodes:
                wait_for(lambda n=n: status_of(f"{n.base}/health") == 503, 10, f"{n.name} 503 without Redis")
            # meanwhile a new visitor is refused with a retryable code, a REST call with a 503
            f = Follower(_b.ws_base, "visitor", hello_visitor("OUTAGE0001"), origin=ORIGIN, attempts=1)
            with pytest.raises(AssertionError):
                await f.connect(timeout=8)
            assert f.hops[0].error is not None and f.hops[0].error.close_code == p.CloseCode.INTERNAL_ERROR, f.hops
            status, body = await asyncio.to_thread(rest, _b, "GET", "/api/visitors/OUTAGE0001")
            assert status == 503 and body["error"] == "unavailable", body
            await asyncio.sleep(2.5)  # past OWNERSHIP_TTL: node1's claim has lapsed meanwhile
            redis_own.restart()  # no persistence: it comes back empty
            for n in nodes:
                wait_for(lambda n=n: status_of(f"{n.base}/health") == 200, 15, f"{n.name} 200 again")
            # node1 claims its room again under a new epoch: the viewer is sent to resume...
            assert await wpeer.closed(10) == p.CloseCode.SESSION_MOVED
            ask = await vpeer.expect(p.ResyncRequest, 10)
            assert ask.reason == "resume"
            await vpeer.send(p.DomKeyframe(data=b"fresh"))
            view2 = Follower(a.ws_base, "viewer", hello_viewer(ww.resume, ww.epoch, 1), direct=direct(nodes))
            wpeer2, ww2 = await view2.connect()
            assert ww2.epoch != ww.epoch
            assert (await wpeer2.expect(p.DomKeyframe)).data == b"fresh"

        run(scenario())
    finally:
        stop_nodes(nodes)


def test_sentinel_failover_every_node_moves_to_the_new_master_and_says_503_meanwhile(tmp_path: Path) -> None:
    down_after = 1000
    with SentinelGroup(tmp_path / "sentinel", down_after_ms=down_after) as group:
        nodes = start_nodes(tmp_path, 2, group.url)
        try:
            for n in nodes:
                assert status_of(f"{n.base}/health") == 200
            old = group.current_master_port()
            killed_at = time.monotonic()
            group.kill_master()
            seen_503 = {n.name: False for n in nodes}
            back: dict[str, float] = {}
            deadline = killed_at + down_after / 1000 + 5 + 10
            while len(back) < len(nodes) and time.monotonic() < deadline:
                for n in nodes:
                    if n.name in back:
                        continue
                    status = status_of(f"{n.base}/health")
                    if status == 503:
                        seen_503[n.name] = True
                    elif status == 200 and seen_503[n.name]:
                        back[n.name] = time.monotonic() - killed_at
                time.sleep(0.05)
            new = group.current_master_port()
            assert new != old
            assert all(seen_503.values()), seen_503  # never healthy while it could not write
            assert set(back) == {n.name for n in nodes}, (back, seen_503)
            # each node writes its heartbeat to the new master within down-after + 5 s
            report(
                "sentinel_failover_s", {"down_after_s": down_after / 1000, **{k: round(v, 2) for k, v in back.items()}}
            )
            assert max(back.values()) < down_after / 1000 + 5, back
            with group.server(new).client() as r:
                for n in nodes:
                    beat = r.get(f"cobrowse:node:{n.name}")
                    assert beat is not None and json.loads(beat)["t"] > time.time() - 3
                assert r.info("replication")["role"] == "master"
            # The old master restarted (as after a crash) comes back believing it is the master until
            # the sentinels demote it; no node connects to it meanwhile or after: none writes there.
            stale = group.server(old)
            stale.restart()
            with stale.client() as r:
                wait_for(lambda: r.info("replication")["role"] == "slave", 15, "the old master demoted")
                time.sleep(2.0)  # two heartbeats of every node
                clients = [c for c in r.client_list() if not c.get("name", "").startswith("sentinel")]
                writers = [c for c in clients if not set(c.get("flags", "")) & {"M", "S"} and c["cmd"] != "client|list"]
                assert writers == [], writers
        finally:
            stop_nodes(nodes)


def test_the_live_session_api_answers_from_any_node_and_stop_is_forwarded_to_the_owner(
    tmp_path: Path, redis_own: RedisServer
) -> None:
    urls = [{"NODE_URL": "http://node1.example/cobrowse"}, {"NODE_URL": "http://node2.example/cobrowse"}]
    nodes = start_nodes(tmp_path, 2, redis_own.url, per_node=urls)
    a, b = nodes
    hdrs = {"Origin": ORIGIN}
    try:

        async def scenario() -> None:
            vpeer, wpeer, _ = await _session(a, nodes, "LIVEAPI100", redis_own)
            status, _, body = http(f"{b.base}/rest/live/sessions/LIVEAPI100", headers=hdrs)
            assert status == 200, body
            assert body["sessionServerName"] == "node1"
            assert body["sessionServerUrl"] == "http://node1.example/cobrowse"
            status, headers, body = http(
                f"{b.base}/rest/live/sessions", "POST", headers=hdrs, body={"userToken": "LIVEAPI100"}
            )
            assert status == 200 and body["sessionServerName"] == "node1", body
            assert headers["Set-Cookie"].startswith("gcbSessionServer=node1;")
            status, _, again = http(f"{a.base}/rest/live/sessions/{body['sessionToken']}", headers=hdrs)
            assert status == 200 and again["sessionServerName"] == "node1"
            status, _, times = await asyncio.to_thread(
                http, f"{b.base}/rest/live/users/LIVEAPI100/session/stop", headers=hdrs
            )
            assert status == 200 and times["deactivationTime"] >= times["activationTime"] > 0, times
            assert (await vpeer.expect(p.SessionEnd)).reason == "stopped"
            assert await wpeer.closed() == p.CloseCode.SESSION_ENDED
            status, _, _ = http(f"{b.base}/rest/live/users/LIVEAPI100/session/stop", headers=hdrs)
            assert status == 404

        run(scenario())
    finally:
        stop_nodes(nodes)


def test_start_up_refuses_a_node_name_already_live_and_an_unreachable_redis_in_one_line(
    two: list[Node], redis_server: RedisServer
) -> None:
    env = base_env(
        DATA_DIR=str(two[0].data_dir / "dup"),
        PORT="0",
        REDIS_URL=redis_server.url,
        NODE_NAME="node1",
        SECRET_KEY=SECRET_KEY,
    )
    done = subprocess.run([sys.executable, "-m", "relay"], env=env, capture_output=True, text=True, timeout=30)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "NODE_NAME: a node named 'node1'" in lines[0], lines
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["NODE_NAME"] = "node9"
    done = subprocess.run([sys.executable, "-m", "relay"], env=env, capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert (
        done.returncode == 1 and len(lines) == 1 and lines[0].startswith("cobrowse-relay: REDIS_URL: cannot reach")
    ), lines


def test_per_address_limits_hold_across_nodes(tmp_path: Path, redis_own: RedisServer) -> None:
    nodes = start_nodes(tmp_path, 2, redis_own.url, MAX_SOCKETS_PER_IP="12", NEW_VISITORS_PER_IP="8")
    a, b = nodes
    try:

        async def scenario() -> None:
            async def one(node: Node, client_id: str) -> Hop:
                f = Follower(node.ws_base, "visitor", hello_visitor(client_id), origin=ORIGIN, attempts=1)
                with contextlib.suppress(AssertionError):
                    await f.connect(timeout=5)
                return f.hops[-1]

            for i in range(6):  # 6 sockets and 6 new visitor ids on node1
                assert (await one(a, f"LIMITA{i:04}")).welcome is not None
            await asyncio.sleep(2.5)  # the nodes exchange what they hold every second
            admitted = [await one(b, f"LIMITB{i:04}") for i in range(3)]
            assert [h.welcome is not None for h in admitted] == [True, True, False], admitted
            assert admitted[2].error is not None and "new visitors" in admitted[2].error.message
            # known ids are not new: now the socket limit (12: 6 on node1, 2 on node2, 4 more)
            known = [await one(b, f"LIMITA{i:04}") for i in range(6)]
            assert [h.welcome is not None for h in known] == [True] * 4 + [False] * 2, known
            assert known[4].error is not None and "too many sockets" in known[4].error.message

        run(scenario())
    finally:
        stop_nodes(nodes)


def test_a_node_whose_redis_turned_read_only_says_503_until_it_can_write_again(
    tmp_path: Path, redis_own: RedisServer
) -> None:
    """A master demoted to a replica (what a failover does to the old master) answers reads but
    refuses writes: the node must not look healthy meanwhile (Centrifugo #766)."""
    other = RedisServer(tmp_path / "other")
    nodes = start_nodes(tmp_path, 1, redis_own.url)
    (node,) = nodes
    try:
        assert status_of(f"{node.base}/health") == 200
        with redis_own.client() as r:
            r.execute_command("REPLICAOF", "127.0.0.1", str(other.port))
            wait_for(lambda: status_of(f"{node.base}/health") == 503, 10, "503 on a read-only Redis")
            r.execute_command("REPLICAOF", "NO", "ONE")
        wait_for(lambda: status_of(f"{node.base}/health") == 200, 10, "200 once it can write")
    finally:
        stop_nodes(nodes)
        other.stop()


def test_a_second_visitor_tab_on_another_node_is_sent_to_the_owner(tmp_path: Path, redis_own: RedisServer) -> None:
    nodes = start_nodes(tmp_path, 2, redis_own.url)
    a, b = nodes
    try:

        async def scenario() -> None:
            vpeer, wpeer, _ = await _session(a, nodes, "SECONDTAB1", redis_own)
            tab2 = Follower(b.ws_base, "visitor", hello_visitor("SECONDTAB1"), origin=ORIGIN, direct=direct(nodes))
            peer2, w2 = await tab2.connect()
            assert tab2.hops[0].error is not None and tab2.hops[0].error.node == "node1", tab2.hops
            assert w2.node == "node1" and w2.session  # the session stays where it is
            assert await vpeer.closed() == p.CloseCode.REPLACED  # as on one node: the newer tab wins
            await peer2.send(p.DomKeyframe(data=b"tab2"))  # its SDK records its own page from the start
            got = await wpeer.expect(p.DomKeyframe)
            assert got.data == b"tab2"  # the viewer never moved

        run(scenario())
    finally:
        stop_nodes(nodes)


def test_nodes_run_on_a_three_master_redis_cluster_too(tmp_path: Path) -> None:
    """REDIS_URL=redis+cluster://...: every key a node writes lives in one slot per command (the
    visitor's hash tag), so the whole of cluster mode works on a Redis Cluster, takeovers included."""
    with RedisClusterProcs(tmp_path / "rc") as rc:
        nodes = start_nodes(tmp_path, 2, rc.url)
        a, b = nodes
        try:

            async def scenario() -> None:
                for n in nodes:
                    assert status_of(f"{n.base}/health") == 200
                _vpeer, _wpeer, ww = await _session_on(a, b, nodes, "RCLUSTER01")
                a.stop(signal.SIGKILL, 10)
                vis2 = Follower(b.ws_base, "visitor", hello_visitor("RCLUSTER01"), origin=ORIGIN, direct=direct(nodes))
                vpeer2, vw2 = await vis2.connect()
                assert vw2.node == "node2" and vw2.session
                await vpeer2.expect(p.ResyncRequest)
                await vpeer2.send(p.DomKeyframe(data=b"after"))
                view2 = Follower(b.ws_base, "viewer", hello_viewer(ww.resume, ww.epoch, 1), direct=direct(nodes))
                wpeer2, ww2 = await view2.connect()
                assert ww2.epoch != ww.epoch and (await wpeer2.expect(p.DomKeyframe)).data == b"after"

            run(scenario())
        finally:
            stop_nodes(nodes)


async def _session_on(a: Node, b: Node, nodes: list[Node], client_id: str) -> tuple[Any, Any, p.Welcome]:
    """A visitor on ``a``, a viewer entering through ``b`` (sent to ``a``), live, one keyframe seen."""
    vpeer, _ = await Follower(a.ws_base, "visitor", hello_visitor(client_id), origin=ORIGIN).connect()
    await vpeer.send(p.Presence(url="https://shop.example/"))
    await asyncio.sleep(0.3)
    token = watch_token(b, client_id)
    wpeer, ww = await Follower(b.ws_base, "viewer", hello_viewer(token), direct=direct(nodes)).connect()
    assert ww.node == a.name
    req = await vpeer.expect(p.SessionRequest)
    await vpeer.send(p.SessionAccept(session=req.session))
    await wpeer.expect(p.SessionAccept)
    await vpeer.send(p.DomKeyframe(data=b"k0"))
    assert (await wpeer.expect(p.DomKeyframe)).data == b"k0"
    await asyncio.sleep(0.3)  # the live state stored
    return vpeer, wpeer, ww


def test_a_viewer_arriving_on_another_node_right_after_its_visitor_is_sent_to_the_visitor(
    two: list[Node],
) -> None:
    """The visitor's location is written before its WELCOME: a viewer that reaches the other node
    the next instant is sent to it (it used to claim the session where it stood and wait)."""
    a, b = two
    signer = Signer(SECRET_KEY.encode())

    async def pair(i: int) -> None:
        client_id = f"RACE{i:06}"
        vpeer, _ = await Follower(a.ws_base, "visitor", hello_visitor(client_id), origin=ORIGIN).connect()
        grant = Grant(client_id, "a1", "Ann", ("allow_click",), time.time() + 60)
        wpeer, ww = await Follower(b.ws_base, "viewer", hello_viewer(signer.grant(grant)), direct=direct(two)).connect()
        assert ww.node == "node1", ww
        req = await vpeer.expect(p.SessionRequest)
        await vpeer.send(p.SessionAccept(session=req.session))
        await wpeer.expect(p.SessionAccept)

    async def scenario() -> None:
        await asyncio.gather(*(pair(i) for i in range(20)))

    run(scenario())


def test_a_session_whose_node_died_and_to_which_nobody_returns_is_closed_node_lost(
    tmp_path: Path, redis_own: RedisServer
) -> None:
    nodes = start_nodes(tmp_path, 2, redis_own.url, RESUME_WINDOW="2")
    a, b = nodes
    try:

        async def scenario() -> str:
            _, _, ww = await _session(a, nodes, "ORPHAN0001", redis_own)
            return ww.session

        session = run(scenario())
        a.stop(signal.SIGKILL, 10)

        def closed() -> dict[str, Any] | None:
            status, body = rest(b, "GET", "/api/visitors/ORPHAN0001")
            assert status == 200, body
            s = body["visitor"]["sessions"][0]
            return body["visitor"] if s["ended_at"] is not None else None

        visitor = wait_for(closed, 15, "the orphaned session closed")
        assert [s["id"] for s in visitor["sessions"]] == [session]
        with redis_own.client() as r:
            assert r.hget(f"cobrowse:{{ORPHAN0001}}:s:{session}", "end_reason") == b'"node_lost"'
        wait_for(lambda: rest(b, "GET", "/api/visitors/ORPHAN0001")[1]["visitor"]["is_online"] is False, 10, "offline")
    finally:
        stop_nodes(nodes)
