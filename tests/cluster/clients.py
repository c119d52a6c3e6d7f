"""Clients for cluster tests: sockets that follow the relay's redirects (close 4003 with a hint),
as the browser SDK and viewer do, through a balancer or straight to the nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import protocol as p

from ..relay.client import TIMEOUT, Peer, _open

__all__ = ["Follower", "Hop", "join", "report", "status_of"]


@dataclass
class Hop:
    """Where one attempt went and how it ended."""

    url: str
    welcome: p.Welcome | None = None
    error: p.Error | None = None
    close: int | None = None


@dataclass
class Follower:
    """Connects ``role`` with ``hello`` to ``entry`` (a ws base URL), following 4003 hints to
    ``{url or entry}/ws/<role>?node=NAME`` (``direct`` maps node names to ws bases when there is
    no balancer: the test's stand-in for NODE_URL). Retries retryable refusals (4000, a 503 at
    the handshake) with a short pause, ``attempts`` times at most."""

    entry: str
    role: str
    hello: p.Hello
    origin: str | None = None
    direct: Mapping[str, str] = field(default_factory=dict)
    attempts: int = 20
    hops: list[Hop] = field(default_factory=list)

    async def connect(self, timeout: float = 20.0) -> tuple[Peer, p.Welcome]:
        node = ""
        url_base = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(self.attempts):
            base = url_base or (self.direct.get(node) if node else None) or self.entry
            url = f"{base}/ws/{self.role}" + (f"?node={node}" if node else "")
            hop = Hop(url)
            self.hops.append(hop)
            try:
                ws = await connect(
                    url, origin=self.origin, compression=None, max_size=16 * 1024 * 1024, open_timeout=TIMEOUT
                )
            except (InvalidStatus, OSError, TimeoutError):
                node, url_base = "", ""
                await asyncio.sleep(0.2)
                if loop.time() > deadline:
                    break
                continue
            _open.append(ws)
            peer = Peer(ws)
            with contextlib.suppress(ConnectionClosed):  # refused before HELLO: its ERROR is still read
                await peer.send(self.hello)
            try:
                first = await peer.recv(max(0.1, deadline - loop.time()))
            except (ConnectionClosed, TimeoutError):
                hop.close = ws.close_code
                await asyncio.sleep(0.2)
                continue
            if isinstance(first, p.Welcome):
                hop.welcome = first
                return peer, first
            assert isinstance(first, p.Error), first
            hop.error = first
            hop.close = await peer.closed()
            if first.close_code == p.CloseCode.SESSION_MOVED and first.node:
                node, url_base = first.node, first.url
                continue
            if not p.should_reconnect(first.close_code or 1000):
                raise AssertionError(f"refused for good: {first}")
            node, url_base = "", ""
            await asyncio.sleep(0.2)
            if loop.time() > deadline:
                break
        raise AssertionError(f"no welcome after {len(self.hops)} attempts: {self.hops}")


async def join(entry: str, role: str, hello: p.Hello, **kw: Any) -> tuple[Peer, p.Welcome, Follower]:
    f = Follower(entry, role, hello, **kw)
    peer, welcome = await f.connect()
    return peer, welcome, f


def status_of(url: str) -> int:
    """The HTTP status a GET of ``url`` answers; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def report(name: str, data: object) -> None:
    """Keep a measured figure in ``build/cluster-failover.json`` (for the README and the closing note)."""
    from ..conftest import ROOT

    path = ROOT / "build" / "cluster-failover.json"
    path.parent.mkdir(exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    old[name] = data
    path.write_text(json.dumps(old, indent=2) + "\n")
