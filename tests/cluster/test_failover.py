"""Three nodes behind the shipped HAProxy config, with clients that behave as the browser code does.

A visitor and two viewers keep a session going through the balancer (following 4003 hints
and reconnecting with backoff on drops); the test kills or drains the node that owns the
session, again and again, and measures how long until both viewers are watching a fresh
keyframe again. The figures go to ``build/cluster-failover.json`` (for the README and the
closing note); the assertions are the promises: within 10 s, one session, no duplicate
ordered frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

import protocol as p

from ..redisprocs import RedisServer
from ..relay.client import rest, run, wait_for, watch_token
from .clients import Follower, report, status_of
from .harness import ORIGIN, Haproxy, Node, start_nodes, stop_nodes

pytestmark = pytest.mark.cluster

KILLS = int(os.environ.get("CLUSTER_KILLS", "20"))
VISITOR = "FAILOVER01"


@dataclass
class Seen:
    """What one viewer received: (monotonic time, epoch, seq, kind) of each ordered frame."""

    frames: list[tuple[float, int, int, int]] = field(default_factory=list)
    connects: int = 0
    closes: list[tuple[float, int | None]] = field(default_factory=list)  # (monotonic time, close code)

    def keyframe_since(self, t: float, old_epoch: int) -> float | None:
        for at, epoch, _seq, kind in self.frames:
            if at >= t and kind == p.Kind.DOM_KEYFRAME and epoch != old_epoch:
                return at
        return None

    def last_epoch(self) -> int:
        return self.frames[-1][1] if self.frames else 0

    def duplicates(self) -> list[tuple[int, int]]:
        keys = [(e, s) for _, e, s, _ in self.frames]
        return sorted({k for k in keys if keys.count(k) > 1})


async def visitor_loop(lb: Haproxy, stop: asyncio.Event) -> None:
    """The SDK's part: accept the session, answer keyframe requests, send a delta every 50 ms."""
    while not stop.is_set():
        try:
            peer, _ = await Follower(
                lb.ws_base,
                "visitor",
                p.Hello(role="visitor", version=p.PROTOCOL_VERSION, client_id=VISITOR),
                origin=ORIGIN,
            ).connect(timeout=15)
        except AssertionError:
            continue
        await peer.send(p.Presence(url="https://shop.example/"))

        async def deltas(peer: object = peer) -> None:
            n = 0
            while True:
                await asyncio.sleep(0.05)
                n += 1
                await peer.send(p.DomDelta(data=b"d%d" % n))  # type: ignore[attr-defined]

        sender = asyncio.get_running_loop().create_task(deltas())
        try:
            while not stop.is_set():
                msg = await peer.recv(3600)
                if isinstance(msg, p.SessionRequest):
                    await peer.send(p.SessionAccept(session=msg.session))
                elif isinstance(msg, p.ResyncRequest):
                    await peer.send(p.DomKeyframe(data=b"keyframe"))
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
        await asyncio.sleep(random.uniform(0, 0.5))  # the SDK's first backoff step, full jitter


async def viewer_loop(lb: Haproxy, token: str, seen: Seen, stop: asyncio.Event) -> None:
    """The watch page's part: resume with the last epoch and seq seen, follow hints."""
    resume = ""
    while not stop.is_set():
        epoch, seq = (seen.frames[-1][1], seen.frames[-1][2]) if seen.frames else (0, 0)
        hello = p.Hello(
            role="viewer", version=p.PROTOCOL_VERSION, token=resume or token, resume_epoch=epoch, resume_seq=seq
        )
        try:
            peer, welcome = await Follower(lb.ws_base, "viewer", hello).connect(timeout=15)
        except AssertionError:
            continue
        seen.connects += 1
        resume = welcome.resume or resume
        try:
            while not stop.is_set():
                frame = await peer.recv_frame(3600)
                h = p.peek(frame)
                if h.routing is p.Routing.ORDERED:
                    seen.frames.append((time.monotonic(), h.epoch, h.seq, h.kind))
        except (ConnectionClosed, TimeoutError):
            seen.closes.append((time.monotonic(), peer.ws.close_code))
        await asyncio.sleep(random.uniform(0, 0.5))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisServer, list[Node], Haproxy]]:
    server = RedisServer(tmp_path / "redis")
    nodes: list[Node] = []
    try:
        nodes = start_nodes(tmp_path, 3, server.url)
        for n in nodes:  # restarts keep the port the balancer knows
            n.env["PORT"] = str(n.port)
        with Haproxy(tmp_path / "haproxy", nodes).start() as lb:
            yield server, nodes, lb
    finally:
        stop_nodes(nodes)
        server.stop()


def owner(server: RedisServer) -> str:
    with server.client() as r:
        raw = r.get(f"cobrowse:{{{VISITOR}}}:owner")
    return raw.decode().split(" ")[0] if raw else ""


async def _watching(seen: list[Seen], since: float, epochs: list[int], limit: float) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        times = [s.keyframe_since(since, e) for s, e in zip(seen, epochs, strict=True)]
        if all(t is not None for t in times):
            return max(t for t in times if t is not None) - since
        await asyncio.sleep(0.02)
    raise AssertionError(f"viewers not watching again within {limit} s: {[s.frames[-3:] for s in seen]}")


@contextlib.asynccontextmanager
async def streaming(lb: Haproxy) -> AsyncIterator[list[Seen]]:
    """The session through the balancer: the visitor's SDK and two watch pages, until the block
    ends; yields what each viewer received, once both watch a first keyframe."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(visitor_loop(lb, stop))]
    await asyncio.sleep(0.5)
    seen = [Seen(), Seen()]
    for s in seen:
        tasks.append(loop.create_task(viewer_loop(lb, watch_token(lb, VISITOR), s, stop)))
    try:
        await _watching(seen, 0.0, [0, 0], 15)
        yield seen
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_killing_the_owner_again_and_again_viewers_watch_again_within_10_s(
    cluster: tuple[RedisServer, list[Node], Haproxy],
) -> None:
    server, nodes, lb = cluster
    by_name = {n.name: n for n in nodes}
    restarts: list[threading.Thread] = []

    async def scenario() -> list[float]:
        async with streaming(lb) as seen:
            times: list[float] = []
            for _ in range(KILLS):
                name = owner(server)
                assert name, "nobody owns the session"
                victim = by_name[name]
                epochs = [s.last_epoch() for s in seen]
                for t in restarts:  # a node restarted meanwhile is back before the next kill
                    await asyncio.to_thread(t.join, 30)
                killed = time.monotonic()
                await asyncio.to_thread(victim.stop, signal.SIGKILL, 10)
                times.append(await _watching(seen, killed, epochs, 10))
                t = threading.Thread(target=victim.start, args=(30,), daemon=True)
                t.start()
                restarts.append(t)
            for s in seen:
                assert not s.duplicates(), s.duplicates()
            return times

    times = run(scenario())
    for t in restarts:
        t.join(30)
    status, body = rest(lb, "GET", f"/api/visitors/{VISITOR}")
    assert status == 200 and len(body["visitor"]["sessions"]) == 1, body
    q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
    figures = {"kills": len(times), "p50_s": round(statistics.median(times), 3), "p99_s": round(q[98], 3)}
    figures["max_s"] = round(max(times), 3)
    report("kill_to_watching", figures)
    assert max(times) < 10, figures


def test_sigterm_drains_health_503_first_the_balancer_stops_routing_then_1001_and_clients_move(
    cluster: tuple[RedisServer, list[Node], Haproxy],
) -> None:
    server, nodes, lb = cluster
    by_name = {n.name: n for n in nodes}

    async def scenario() -> None:
        async with streaming(lb) as seen:
            victim = by_name[owner(server)]
            epochs = [s.last_epoch() for s in seen]
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            await asyncio.to_thread(wait_for, lambda: status_of(f"{victim.base}/health") == 503, 2, "503 first")
            await asyncio.to_thread(lb.wait_state, victim.name, "DOWN", 5)
            down = time.monotonic()
            closes = [c for s in seen for c in s.closes if c[0] >= sent]
            assert not closes, f"sockets closed before the balancer took the node out: {closes}"
            await _watching(seen, sent, epochs, 15)
            codes = [code for s in seen for t, code in s.closes if t >= sent]
            assert codes and all(c in (1001, p.CloseCode.SESSION_MOVED) for c in codes), codes
            assert all(t >= down for s in seen for t, _ in s.closes if t >= sent)
            assert await asyncio.to_thread(victim.proc.wait, 15) == 0
            assert owner(server) not in ("", victim.name)

    run(scenario())
    status, body = rest(lb, "GET", f"/api/visitors/{VISITOR}")
    assert status == 200 and len(body["visitor"]["sessions"]) == 1, body
