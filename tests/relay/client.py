"""A small protocol client for tests: real websockets to a real relay."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import protocol as p

TIMEOUT = 5.0
_open: list[ClientConnection] = []


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 50 ms until it is truthy; return its value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def upgrade_request(path: str = "/ws/visitor", origin: str | None = None, extra: str = "") -> bytes:
    """A raw websocket upgrade request head, for tests that speak bytes; ``extra``: more header lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    origin_line = f"Origin: {origin}\r\n" if origin else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{origin_line}{extra}\r\n"
    ).encode()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a scenario; close every socket it opened, whatever happened."""

    async def scenario() -> Any:
        try:
            return await coro
        finally:
            sockets = list(_open)
            _open.clear()
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    return asyncio.run(scenario())


def rest(relay: Any, method: str, path: str, body: Any = None, key: str | None = "default") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key == "default":
        key = relay.rest_key
    if key is not None:
        headers["Authorization"] = key
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"{relay.base}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode()


def watch_token(relay: Any, visitor: str, **permissions: bool) -> str:
    body = {"agent": {"id": "a1", "name": "Ann Agent"}, "permissions": permissions}
    status, answer = rest(relay, "POST", f"/api/visitors/{visitor}/watch_url", body)
    assert status == 200, answer
    url = answer["watch_url"]
    return str(url.split("token=", 1)[1])


class Peer:
    """One socket: send messages or raw bytes; receive decoded messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[bytes] = []

    async def send(self, msg: p.Message, **kw: int) -> None:
        await self.ws.send(p.encode(msg, **kw))

    async def raw(self, data: bytes) -> None:
        await self.ws.send(data)

    async def recv_frame(self, timeout: float = TIMEOUT) -> bytes:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes)
        self.frames.append(data)
        return data

    async def recv(self, timeout: float = TIMEOUT) -> p.Message:
        return p.decode(await self.recv_frame(timeout))

    async def expect(self, cls: type, timeout: float = TIMEOUT) -> Any:
        """Receive until a message of ``cls`` arrives (skipping others); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - loop.time()))
            if isinstance(msg, cls):
                return msg

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the relay to close the socket; return the close code."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed:
            pass
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()

    async def flood(self, frame: bytes, count: int) -> int | None:
        """Send ``frame`` up to ``count`` times, or until the relay closes the socket; its close code."""
        for _ in range(count):
            try:
                await self.raw(frame)
            except ConnectionClosed:
                break
        return await self.closed()


async def open_socket(relay: Any, path: str, origin: str | None = "relay", **kw: Any) -> ClientConnection:
    if origin == "relay":
        origin = relay.origin
    ws = await connect(
        f"{relay.ws_base}{path}",
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        max_size=16 * 1024 * 1024,
        open_timeout=TIMEOUT,
        **kw,
    )
    _open.append(ws)
    return ws


async def visitor(relay: Any, client_id: str = "", **presence: Any) -> tuple[Peer, p.Welcome]:
    peer = Peer(await open_socket(relay, "/ws/visitor"))
    await peer.send(p.Hello(role="visitor", version=p.PROTOCOL_VERSION, client_id=client_id))
    welcome = await peer.recv()
    assert isinstance(welcome, p.Welcome), welcome
    await peer.send(p.Presence(url="https://shop.example/", **presence))
    return peer, welcome


async def viewer(relay: Any, token: str, epoch: int = 0, seq: int = 0) -> tuple[Peer, p.Welcome]:
    peer = Peer(await open_socket(relay, "/ws/viewer", origin=None))
    await peer.send(p.Hello(role="viewer", version=p.PROTOCOL_VERSION, token=token, resume_epoch=epoch, resume_seq=seq))
    welcome = await peer.recv()
    assert isinstance(welcome, p.Welcome), welcome
    return peer, welcome


async def live_session(relay: Any, client_id: str, **permissions: bool) -> tuple[Peer, Peer, p.Welcome]:
    """A visitor that accepted one viewer: (visitor, viewer, viewer's welcome)."""
    vis, _ = await visitor(relay, client_id)
    await asyncio.sleep(0.05)  # presence stored before the watch URL is asked for
    token = watch_token(relay, client_id, **permissions)
    view, welcome = await viewer(relay, token)
    req = await vis.expect(p.SessionRequest)
    await vis.send(p.SessionAccept(session=req.session))
    await view.expect(p.SessionAccept)
    return vis, view, welcome
