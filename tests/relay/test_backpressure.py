"""A viewer that stops reading never slows the visitor or the other viewers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import protocol as p

from ..conftest import Relay
from .client import TIMEOUT, Peer, live_session, run, visitor, watch_token


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """These tests push tens of MiB through one visitor on purpose: past RATE_BYTES."""
    r = Relay(tmp_path_factory.mktemp("relay"), RATE_BYTES=str(1024**3)).start()
    yield r
    r.stop()


FRAME = 60 * 1024  # under the 64 KiB delta limit
COUNT = 300  # 18 MiB: far past kernel buffers, the 256 KiB high-water mark and the 1 MiB ordered limit


async def stuck_viewer(relay: Any, token: str) -> Peer:
    """A viewer with a tiny receive buffer that reads nothing after its handshake."""
    from websockets.asyncio.client import connect

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", relay.port))
    ws = await connect(f"{relay.ws_base}/ws/viewer", sock=sock, compression=None, max_queue=1, max_size=None)
    from .client import _open

    _open.append(ws)
    peer = Peer(ws)
    await peer.send(p.Hello(role="viewer", version=1, token=token))
    assert isinstance(await peer.recv(), p.Welcome)
    return peer


async def _fill(relay: Any, client_id: str) -> tuple[Peer, Peer, Peer]:
    vis, fast, _ = await live_session(relay, client_id)
    slow = await stuck_viewer(relay, watch_token(relay, client_id))
    await slow.expect(p.SessionAccept)
    await vis.send(p.DomKeyframe(data=b"K" * 1000))
    assert p.peek(await fast.recv_frame()).kind is p.Kind.DOM_KEYFRAME
    return vis, fast, slow


def test_stuck_viewer_does_not_slow_the_visitor_or_the_fast_viewer(relay: Any) -> None:
    async def scenario() -> None:
        vis, fast, slow = await _fill(relay, "BACKP00001")

        async def send_all() -> None:
            # Paced (~60 MB/s) so that the fast reader, on this same event loop, keeps up.
            for i in range(COUNT):
                await vis.send(p.DomDelta(data=i.to_bytes(4, "big") + b"d" * (FRAME - 4)))
                if i % 8 == 7:
                    await asyncio.sleep(0.008)

        async def receive_all() -> list[int]:
            seqs = []
            for _ in range(COUNT):
                seqs.append(p.peek(await fast.recv_frame(TIMEOUT)).seq)
            return seqs

        _, seqs = await asyncio.wait_for(asyncio.gather(send_all(), receive_all()), 20)
        assert seqs == list(range(2, COUNT + 2))  # every delta, in order, none lost

        # The stuck one now reads: its queue overflowed, so after the backlog it is
        # resynchronised from the keyframe and ends on the newest seq with no gap after it.
        seen: list[tuple[p.Kind, int]] = []
        while not seen or seen[-1][1] != COUNT + 1:
            h = p.peek(await slow.recv_frame(TIMEOUT))
            seen.append((h.kind, h.seq))
        kinds = [k for k, _ in seen]
        assert kinds[0] is p.Kind.DOM_KEYFRAME  # the keyframe it had before it stalled
        resync = len(kinds) - 1 - kinds[::-1].index(p.Kind.DOM_KEYFRAME)
        assert resync > 0, "the stuck viewer was never resynchronised"
        assert resync < COUNT, "the stuck viewer was queued every frame instead of a resync"
        assert [s for _, s in seen[resync:]] == [1, *range(2, COUNT + 2)]

    run(scenario())


def test_viewer_stuck_past_the_slow_timeout_is_closed_with_4001(relay_factory: Any) -> None:
    relay = relay_factory(SLOW_TIMEOUT="1", LOG_LEVEL="info").start()

    async def scenario() -> None:
        vis, fast, slow = await _fill(relay, "BACKP00002")
        for _ in range(60):
            await vis.send(p.DomDelta(data=b"x" * FRAME))
        for _ in range(60):
            await fast.recv_frame()
        # Reading would un-stick the viewer: wait until the relay says it closed it
        # (its log line), then read up to the close frame queued behind the backlog.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10 * TIMEOUT
        while "closing slow viewer" not in relay.log():
            assert loop.time() < deadline, "the stuck viewer was never closed as slow"
            await asyncio.sleep(0.05)
        assert await slow.closed(TIMEOUT) == p.CloseCode.SLOW_CONSUMER
        await vis.send(p.DomDelta(data=b"fine"))
        assert await fast.expect(p.DomDelta) == p.DomDelta(data=b"fine")

    run(scenario())


# --- the QUEUE_MAX_BYTES threshold itself ---------------------------------------------------
class RawViewer:
    """A viewer on a bare socket: between the test's reads nothing buffers it but the kernel.

    (A websockets client reads ahead into its own buffers, so how much a "stuck" one
    absorbs is not known; this one absorbs its small receive buffer and no more.)
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    async def open(cls, relay: Any, token: str) -> RawViewer:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", relay.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                "GET /ws/viewer HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        viewer = cls(sock)
        async with asyncio.timeout(TIMEOUT):
            while b"\r\n\r\n" not in viewer.buf:
                viewer.buf += await viewer._read()
        head, _, viewer.buf = viewer.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        await viewer.send(p.encode(p.Hello(role="viewer", version=p.PROTOCOL_VERSION, token=token)))
        return viewer

    async def _read(self) -> bytes:
        chunk = await asyncio.get_running_loop().sock_recv(self.sock, 256 * 1024)
        if not chunk:
            raise ConnectionError("the relay closed the connection")
        return chunk

    async def send(self, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + body)

    async def recv_frame(self, timeout: float = TIMEOUT) -> bytes:
        """The next binary message (pings and other control frames are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = self._parse()
                if frame is None:
                    self.buf += await self._read()
                    continue
                opcode, payload = frame
                if opcode == 0x8:
                    raise ConnectionError(f"closed by the relay: {payload[:2].hex()}")
                if opcode == 0x2:
                    return payload

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            return None
        self.buf = buf[at + n :]
        return opcode, buf[at : at + n]

    def close(self) -> None:
        self.sock.close()


def _kernel_send_buffer_max() -> int:
    """The most a relay's kernel send buffer can grow to (net.ipv4.tcp_wmem's maximum)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 8 * 1024 * 1024


def _delta(size: int, i: int) -> bytes:
    """A DOM_DELTA frame of exactly ``size`` bytes, tagged with ``i``."""
    overhead = len(p.encode(p.DomDelta(data=b""))) + 1  # bin8 -> bin16 length for these sizes
    frame = p.encode(p.DomDelta(data=i.to_bytes(4, "big") + b"d" * (size - overhead - 4)))
    assert len(frame) == size, len(frame)
    return frame


DELTA = 1000  # bytes per held frame
HELD = 70  # frames held: 70,000 bytes of ordered frames, just over the 64 KiB minimum limit


@pytest.mark.parametrize(
    ("limit", "resynced"),
    [(DELTA * HELD, False), (DELTA * HELD - 1, True)],
    ids=["limit-equal-to-the-held-bytes", "limit-one-byte-under-the-held-bytes"],
)
def test_a_viewer_is_resynchronised_once_its_held_ordered_bytes_pass_queue_max_bytes_and_not_before(
    relay_factory: Any, limit: int, resynced: bool
) -> None:
    # The viewer's link is first backed up past its high-water mark by one big
    # latest-class frame (a SCREEN_FRAME bigger than every kernel buffer between
    # the relay and a viewer that reads nothing), so that every ordered byte after
    # it is held by the relay and counted against QUEUE_MAX_BYTES.
    screen = _kernel_send_buffer_max() + 1024 * 1024
    relay = relay_factory(
        QUEUE_MAX_BYTES=str(limit),
        MAX_KEYFRAME=str(screen + 64 * 1024),
        MAX_INFLIGHT_BYTES=str(max(64 * 1024 * 1024, 2 * (screen + 64 * 1024))),
        SLOW_TIMEOUT="120",
        PING_INTERVAL="600",
        RATE_BYTES=str(1024**3),  # one socket sends several MiB at once here, on purpose
    ).start()

    async def scenario() -> None:
        vis, _ = await visitor(relay, "QUEUE00001")
        raw = await RawViewer.open(relay, watch_token(relay, "QUEUE00001"))
        try:
            assert isinstance(p.decode(await raw.recv_frame()), p.Welcome)
            req = await vis.expect(p.SessionRequest)
            await vis.send(p.SessionAccept(session=req.session))
            assert isinstance(p.decode(await raw.recv_frame()), p.SessionAccept)
            await vis.send(p.DomKeyframe(data=b"K"))
            assert p.peek(await raw.recv_frame()).seq == 1
            # From here the viewer reads nothing until every frame is sent.
            await vis.send(p.ScreenFrame(mime="image/png", width=1, height=1, image=bytes(screen)))
            await vis.send(p.Ping(t=1))
            assert await vis.expect(p.Pong) == p.Pong(t=1)  # relayed and flushed: the link is backed up
            for i in range(HELD):
                await vis.raw(_delta(DELTA, i))
            await vis.send(p.Ping(t=2))
            assert await vis.expect(p.Pong) == p.Pong(t=2)  # every delta routed while the viewer read nothing

            assert p.peek(await raw.recv_frame()).kind is p.Kind.SCREEN_FRAME
            seen: list[tuple[p.Kind, int]] = []
            for _ in range(HELD + 2):  # bounded: the deltas, plus the keyframe of a resync
                h = p.peek(await raw.recv_frame())
                seen.append((h.kind, h.seq))
                if h.seq == HELD + 1:
                    break
            deltas = [(p.Kind.DOM_DELTA, seq) for seq in range(2, HELD + 2)]
            if resynced:
                assert seen == [(p.Kind.DOM_KEYFRAME, 1), *deltas]
            else:
                assert seen == deltas
        finally:
            raw.close()

    run(scenario())
