"""A viewer that stops reading never slows the visitor or the other viewers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import protocol as p

from .client import TIMEOUT, Peer, live_session, run, watch_token

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
    relay = relay_factory(SLOW_TIMEOUT="1").start()

    async def scenario() -> None:
        vis, fast, slow = await _fill(relay, "BACKP00002")
        for _ in range(60):
            await vis.send(p.DomDelta(data=b"x" * FRAME))
        for _ in range(60):
            await fast.recv_frame()
        await asyncio.sleep(3.0)
        assert await slow.closed(TIMEOUT) == p.CloseCode.SLOW_CONSUMER
        await vis.send(p.DomDelta(data=b"fine"))
        assert await fast.expect(p.DomDelta) == p.DomDelta(data=b"fine")

    run(scenario())
