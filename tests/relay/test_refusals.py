"""Bad tokens, bad frames, bad origins: refused with their close codes, nothing else harmed."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

import protocol as p
from relay.core.grants import Grant, Signer

from .client import TIMEOUT, Peer, live_session, open_socket, run, viewer, visitor, watch_token

_ids = itertools.count(1)


def vid() -> str:
    return f"REFU{next(_ids):06d}"


async def hello_viewer(relay: Any, token: str) -> tuple[p.Message, int | None]:
    peer = Peer(await open_socket(relay, "/ws/viewer", origin=None))
    await peer.send(p.Hello(role="viewer", version=p.PROTOCOL_VERSION, token=token))
    msg = await peer.recv()
    return msg, await peer.closed()


def test_forged_token_is_refused_with_4504(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        await visitor(relay, v)  # known to the relay once its WELCOME has come
        token = watch_token(relay, v)
        body, sig = token.split(".")
        forged = Signer(b"not-the-relays-secret-key").grant(
            Grant(visitor=v, agent_id="x", agent_name="x", permissions=("console",), expires=time.time() + 60)
        )
        for bad in (forged, body + "." + sig[::-1], "garbage", ""):
            msg, code = await hello_viewer(relay, bad)
            assert isinstance(msg, p.Error) and msg.code == "token_invalid"
            assert code == p.CloseCode.TOKEN_INVALID == msg.close_code

    run(scenario())


def test_expired_token_is_refused_with_4505(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        await visitor(relay, v)
        token = Signer(relay.secret.encode()).grant(
            Grant(visitor=v, agent_id="a", agent_name="A", permissions=(), expires=time.time() - 1)
        )
        msg, code = await hello_viewer(relay, token)
        assert isinstance(msg, p.Error) and msg.code == "token_expired"
        assert code == p.CloseCode.TOKEN_EXPIRED

    run(scenario())


def test_reused_token_is_refused_with_4506(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, _ = await live_session(relay, v)
        token = watch_token(relay, v)
        first = Peer(await open_socket(relay, "/ws/viewer", origin=None))
        await first.send(p.Hello(role="viewer", version=1, token=token))
        assert isinstance(await first.recv(), p.Welcome)
        msg, code = await hello_viewer(relay, token)
        assert isinstance(msg, p.Error) and msg.code == "token_reused"
        assert code == p.CloseCode.TOKEN_REUSED
        await vis.send(p.DomKeyframe(data=b"still fine"))
        assert await view.expect(p.DomKeyframe) == p.DomKeyframe(data=b"still fine")

    run(scenario())


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"\x01", p.CloseCode.PROTOCOL_ERROR),
        (lambda: p.encode(p.RemoteScroll(node=0, dx=1, dy=2))[:-3], p.CloseCode.PROTOCOL_ERROR),
        (lambda: b"\x01\x7f" + b"\x00" * 14 + b"\x80", p.CloseCode.UNKNOWN_KIND),
        (lambda: b"\x09" + p.encode(p.Reload())[1:], p.CloseCode.UNSUPPORTED_VERSION),
        (lambda: p.encode(p.Reload()) + b"\xc1", p.CloseCode.PROTOCOL_ERROR),
        (
            lambda: p.encode(p.Click(node=1, x=0, y=0)).replace(
                b"\x00\xa1y\x00", b"\x00\xa1y\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"
            ),
            p.CloseCode.PROTOCOL_ERROR,
        ),
        (lambda: p.encode(p.DomDelta(data=b"from a viewer")), p.CloseCode.FORBIDDEN),
        (lambda: b"x" * (70 * 1024), p.CloseCode.FRAME_TOO_BIG),
    ],
    ids=["short", "truncated", "unknown-kind", "bad-version", "trailing", "nan", "wrong-role", "oversize"],
)
def test_bad_viewer_frame_closes_only_that_viewer(relay: Any, make: Any, code: int) -> None:
    async def scenario() -> None:
        v = vid()
        vis, bad, _ = await live_session(relay, v)
        good, _ = await viewer(relay, watch_token(relay, v))
        await good.expect(p.SessionAccept)
        await bad.raw(make())
        assert await bad.closed() == code
        await vis.send(p.DomKeyframe(data=b"after"))
        assert await good.expect(p.DomKeyframe) == p.DomKeyframe(data=b"after")
        await good.send(p.RemoteScroll(node=0, dx=0, dy=1))
        assert await vis.expect(p.RemoteScroll) == p.RemoteScroll(node=0, dx=0, dy=1)

    run(scenario())


def test_oversize_delta_from_a_visitor_closes_it_with_4501_and_spares_other_sessions(relay: Any) -> None:
    async def scenario() -> None:
        bad_vis, _, _ = await live_session(relay, vid())
        vis, view, _ = await live_session(relay, vid())
        await bad_vis.raw(p.encode(p.DomDelta(data=b"z" * (65 * 1024))))
        assert await bad_vis.closed() == p.CloseCode.FRAME_TOO_BIG
        big = b"k" * (2 * 1024 * 1024)  # keyframes may be large
        await vis.send(p.DomKeyframe(data=big))
        assert await view.expect(p.DomKeyframe) == p.DomKeyframe(data=big)

    run(scenario())


def test_text_frames_are_refused_with_4500(relay: Any) -> None:
    async def scenario() -> None:
        vis, _ = await visitor(relay, vid())
        await vis.ws.send("hello")
        assert await vis.closed() == p.CloseCode.PROTOCOL_ERROR

    run(scenario())


def test_visitor_sending_a_control_frame_is_closed_as_forbidden(relay: Any) -> None:
    async def scenario() -> None:
        vis, _ = await visitor(relay, vid())
        await vis.send(p.Click(node=1, x=1, y=1))
        assert await vis.closed() == p.CloseCode.FORBIDDEN

    run(scenario())


def test_hello_with_another_protocol_version_gets_version_mismatch(relay: Any) -> None:
    async def scenario() -> None:
        peer = Peer(await open_socket(relay, "/ws/visitor"))
        await peer.send(p.Hello(role="visitor", version=99))
        msg = await peer.recv()
        assert isinstance(msg, p.Error) and msg.code == "version_mismatch"
        assert await peer.closed() == p.CloseCode.UNSUPPORTED_VERSION

    run(scenario())


def test_first_frame_must_be_hello(relay: Any) -> None:
    async def scenario() -> None:
        peer = Peer(await open_socket(relay, "/ws/visitor"))
        await peer.send(p.Presence(url="x"))
        assert await peer.closed() == p.CloseCode.PROTOCOL_ERROR

    run(scenario())


def test_visitor_socket_from_an_origin_not_allowed_is_refused_before_the_upgrade(relay: Any) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as info:
            await open_socket(relay, "/ws/visitor", origin="https://evil.example")
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            await open_socket(relay, "/ws/visitor", origin=None)

    run(scenario())


def test_allowed_origins_admits_a_listed_site(relay_factory: Any) -> None:
    r = relay_factory(ALLOWED_ORIGINS="https://shop.example, http://127.0.0.1:9").start()

    async def scenario() -> None:
        ws = await open_socket(r, "/ws/visitor", origin="https://shop.example")
        peer = Peer(ws)
        await peer.send(p.Hello(role="visitor", version=1))
        assert isinstance(await peer.recv(), p.Welcome)
        await open_socket(r, "/ws/visitor", origin=r.origin)  # the relay's own pages always may
        with pytest.raises(InvalidStatus):
            await open_socket(r, "/ws/visitor", origin="https://other.example")

    run(scenario())


def _delta_of(size: int) -> bytes:
    """A DOM_DELTA frame of exactly ``size`` bytes."""
    for overhead in (25, 27):  # the 16-byte header and {"data": bin16 | bin32 ...}
        frame = p.encode(p.DomDelta(data=b"d" * (size - overhead)))
        if len(frame) == size:
            return frame
    raise AssertionError(size)


def _with(frame: bytes, at: int, value: int) -> bytes:
    return frame[:at] + bytes([value]) + frame[at + 1 :]


_DELTA = p.encode(p.DomDelta(data=b"hostile"))
_LIM = p.DEFAULT_LIMITS


# Headers the hot path (the hub's _fast_peek) must refuse after the handshake, each
# with the close code docs/protocol.md gives it.
VISITOR_HOSTILE = [
    ("short-header", _DELTA[:15], p.CloseCode.PROTOCOL_ERROR),
    ("bad-version", _with(_DELTA, 0, 2), p.CloseCode.UNSUPPORTED_VERSION),
    ("reserved-bits", _with(_DELTA, 3, 1), p.CloseCode.PROTOCOL_ERROR),
    ("reserved-high-bit", _with(_DELTA, 2, 0x80), p.CloseCode.PROTOCOL_ERROR),
    ("unknown-kind", _with(_DELTA, 1, 0x7F), p.CloseCode.UNKNOWN_KIND),
    ("oversize-ordered", _delta_of(_LIM.max_frame + 1), p.CloseCode.FRAME_TOO_BIG),
    (
        "oversize-latest",
        _with(_delta_of(_LIM.max_frame + 1), 1, p.Kind.POINTER),  # a small latest kind over max_frame
        p.CloseCode.FRAME_TOO_BIG,
    ),
    (
        "oversize-big-kind",
        p.encode(p.ScreenFrame(mime="image/png", width=1, height=1, image=bytes(_LIM.max_keyframe))),
        p.CloseCode.FRAME_TOO_BIG,
    ),
    ("viewer-only-kind", p.encode(p.Click(node=1, x=1, y=1)), p.CloseCode.FORBIDDEN),
    ("viewer-and-relay-kind", p.encode(p.ResyncRequest(reason="x")), p.CloseCode.FORBIDDEN),
    ("relay-only-kind", p.encode(p.SessionRequest(session="s", agent_id="a", agent_name="A")), p.CloseCode.FORBIDDEN),
    ("device-only-kind", p.encode(p.Inventory(hostname="h", os="linux")), p.CloseCode.FORBIDDEN),
]


@pytest.mark.parametrize(("frame", "code"), [c[1:] for c in VISITOR_HOSTILE], ids=[c[0] for c in VISITOR_HOSTILE])
def test_hostile_frame_from_a_live_visitor_closes_it_with_the_documented_code_and_reaches_no_viewer(
    relay: Any, frame: bytes, code: int
) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, _ = await live_session(relay, v)
        await vis.raw(frame)
        assert await vis.closed() == code
        # Positive control: the visitor comes back within the resume window and sends a
        # keyframe; it is the first frame the viewer gets, so the hostile one never reached it.
        again, welcome = await visitor(relay, v)
        assert welcome.session
        await again.send(p.DomKeyframe(data=b"after"))
        first = await view.recv_frame()
        assert p.decode(first) == p.DomKeyframe(data=b"after") and p.peek(first).seq == 1

    run(scenario())


def test_a_frame_of_exactly_max_frame_from_a_visitor_is_routed(relay: Any) -> None:
    async def scenario() -> None:
        vis, view, _ = await live_session(relay, vid())
        await vis.send(p.DomKeyframe(data=b"k"))
        edge = _delta_of(_LIM.max_frame)
        await vis.raw(edge)
        frames = [await view.recv_frame(), await view.recv_frame()]
        assert [p.peek(f).seq for f in frames] == [1, 2]
        assert frames[1][16:] == edge[16:]

    run(scenario())


def test_a_socket_that_sends_no_hello_within_handshake_timeout_is_closed_with_4006(relay_factory: Any) -> None:
    r = relay_factory(HANDSHAKE_TIMEOUT="1").start()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        silent = Peer(await open_socket(r, "/ws/visitor"))
        opened = loop.time()
        talker, _ = await visitor(r, vid())  # says HELLO at once: admitted, no deadline left
        assert await silent.closed(TIMEOUT) == p.CloseCode.HANDSHAKE_TIMEOUT  # 1 s, not the default 10
        assert loop.time() - opened >= 0.9  # closed by the deadline, not at once
        await talker.send(p.Ping(t=7))  # past the deadline the admitted socket still works
        assert await talker.expect(p.Pong) == p.Pong(t=7)

    run(scenario())
