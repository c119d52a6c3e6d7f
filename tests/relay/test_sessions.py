"""A visitor, viewers and the relay between them: ordering, joins, resume, permissions."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import protocol as p

from .client import live_session, run, viewer, visitor, watch_token

_ids = itertools.count(1)


def vid(prefix: str = "SESS") -> str:
    return f"{prefix}{next(_ids):06d}"


async def _frames(peer: Any, n: int) -> list[bytes]:
    return [await peer.recv_frame() for _ in range(n)]


def test_two_viewers_receive_every_frame_in_order_and_intact(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, one, _ = await live_session(relay, v)
        two, _ = await viewer(relay, watch_token(relay, v))
        await two.expect(p.SessionAccept)
        payloads = [bytes([i % 251]) * (10 + i * 37) for i in range(200)]
        await vis.send(p.DomKeyframe(data=b"snapshot"))
        for data in payloads:
            await vis.send(p.DomDelta(data=data))
        for peer in (one, two):
            frames = await _frames(peer, 201)
            headers = [p.peek(f) for f in frames]
            assert headers[0].kind is p.Kind.DOM_KEYFRAME
            assert [h.seq for h in headers] == list(range(1, 202))
            assert len({h.epoch for h in headers}) == 1
            assert [p.decode(f).data for f in frames[1:]] == payloads  # type: ignore[union-attr]

    run(scenario())


def test_late_joiner_gets_the_keyframe_then_the_deltas_since(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, first, _ = await live_session(relay, v)
        await vis.send(p.DomKeyframe(data=b"old"))
        await vis.send(p.DomDelta(data=b"old-1"))
        await vis.send(p.DomKeyframe(data=b"new"))
        await vis.send(p.DomDelta(data=b"new-1"))
        await vis.send(p.DomDelta(data=b"new-2"))
        await vis.send(p.Pointer(x=10, y=20))
        await _frames(first, 6)
        late, welcome = await viewer(relay, watch_token(relay, v))
        assert welcome.session
        assert isinstance(await late.recv(), p.SessionAccept)
        frames = await _frames(late, 4)
        msgs = [p.decode(f) for f in frames]
        assert msgs[:3] == [p.DomKeyframe(data=b"new"), p.DomDelta(data=b"new-1"), p.DomDelta(data=b"new-2")]
        assert [p.peek(f).seq for f in frames[:3]] == [3, 4, 5]
        assert msgs[3] == p.Pointer(x=10, y=20)
        await vis.send(p.Ping(t=1))  # the visitor is not asked again: the answer is the next frame it gets
        assert await vis.recv() == p.Pong(t=1)

    run(scenario())


def test_viewer_reconnecting_within_the_window_misses_nothing_and_gets_no_duplicate(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, welcome = await live_session(relay, v)
        await vis.send(p.DomKeyframe(data=b"k"))
        for i in range(5):
            await vis.send(p.DomDelta(data=b"a%d" % i))
        got = await _frames(view, 6)
        last = p.peek(got[-1])
        await view.close()
        for i in range(5):
            await vis.send(p.DomDelta(data=b"b%d" % i))
        back, again = await viewer(relay, welcome.resume, epoch=last.epoch, seq=last.seq)
        assert again.session == welcome.session
        assert isinstance(await back.recv(), p.SessionAccept)
        frames = await _frames(back, 5)
        assert [p.peek(f).seq for f in frames] == list(range(last.seq + 1, last.seq + 6))
        assert [p.decode(f).data for f in frames] == [b"b%d" % i for i in range(5)]  # type: ignore[union-attr]
        await vis.send(p.DomDelta(data=b"live"))
        live = await back.recv_frame()
        assert p.peek(live).seq == last.seq + 6

    run(scenario())


def test_viewer_with_an_unknown_epoch_is_resent_the_whole_log(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, welcome = await live_session(relay, v)
        await vis.send(p.DomKeyframe(data=b"k"))
        await vis.send(p.DomDelta(data=b"d"))
        await _frames(view, 2)
        await view.close()
        back, _ = await viewer(relay, welcome.resume, epoch=12345, seq=2)
        await back.expect(p.SessionAccept)
        frames = await _frames(back, 2)
        assert [p.decode(f) for f in frames] == [p.DomKeyframe(data=b"k"), p.DomDelta(data=b"d")]

    run(scenario())


def test_control_frames_without_the_permission_never_reach_the_visitor(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, welcome = await live_session(relay, v, allow_click=False, allow_console=False)
        assert "click" not in welcome.permissions and "scroll" in welcome.permissions
        await view.send(p.Click(node=1, x=1, y=1))
        await view.send(p.Click(node=2, x=1, y=1))
        await view.send(p.ConsoleEval(code="alert(1)"))
        await view.send(p.RemoteScroll(node=0, dx=0, dy=100))
        assert await vis.recv() == p.RemoteScroll(node=0, dx=0, dy=100)
        errors = [await view.recv(), await view.recv()]
        assert [e.code for e in errors] == ["forbidden", "forbidden"]  # type: ignore[union-attr]
        assert {e.message for e in errors} == {"click is not granted", "console is not granted"}  # type: ignore[union-attr]

    run(scenario())


def test_visitor_allow_list_narrows_what_the_grant_permits(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, _ = await live_session(relay, v)
        await vis.send(p.PermissionsUpdate(permissions=("scroll",)))
        update = await view.expect(p.PermissionsUpdate)
        assert update.permissions == ("scroll",)
        await view.send(p.Type(node=4, text="x"))
        await view.send(p.RemoteScroll(node=0, dx=1, dy=2))
        assert await vis.recv() == p.RemoteScroll(node=0, dx=1, dy=2)
        assert (await view.expect(p.Error)).code == "forbidden"

    run(scenario())


def test_nothing_streams_before_the_visitor_accepts(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, _ = await visitor(relay, v)  # known to the relay once its WELCOME has come
        view, _ = await viewer(relay, watch_token(relay, v))
        req = await vis.expect(p.SessionRequest)
        assert req.agent_name == "Ann Agent"
        await vis.send(p.DomKeyframe(data=b"too early"))
        await vis.send(p.SessionDecline(session=req.session, reason="no thanks"))
        declined = await view.recv()  # the next frame: the keyframe sent before it never came
        assert isinstance(declined, p.SessionDecline)
        assert await view.closed() == p.CloseCode.DECLINED
        await vis.send(p.Ping(t=2))  # the visitor, who declined, is told nothing more: the answer comes next
        assert await vis.recv() == p.Pong(t=2)

    run(scenario())


def test_visitor_ending_the_session_closes_viewers_with_session_ended(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, _ = await live_session(relay, v)
        await vis.send(p.SessionEnd(session=""))
        assert isinstance(await view.recv(), p.SessionEnd)
        assert await view.closed() == p.CloseCode.SESSION_ENDED

    run(scenario())


def test_visitor_reconnecting_continues_its_live_session(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, welcome = await live_session(relay, v)
        await vis.close()
        again, w2 = await visitor(relay, v)
        assert w2.session == welcome.session
        await again.send(p.DomKeyframe(data=b"after navigation"))
        assert await view.expect(p.DomKeyframe) == p.DomKeyframe(data=b"after navigation")

    run(scenario())


def test_ping_is_answered_with_the_same_time(relay: Any) -> None:
    async def scenario() -> None:
        vis, _ = await visitor(relay, vid())
        await vis.send(p.Ping(t=424242))
        assert await vis.expect(p.Pong) == p.Pong(t=424242)

    run(scenario())


async def _until(peer: Any, marker: p.Message, limit: int = 50) -> list[p.Message]:
    """Every message ``peer`` gets up to and including ``marker`` (bounded)."""
    got: list[p.Message] = []
    while not got or got[-1] != marker:
        assert len(got) < limit, got
        got.append(await peer.recv())
    return got


def test_viewer_resuming_from_before_a_newer_keyframe_gets_that_keyframe_not_a_gap(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, view, welcome = await live_session(relay, v)
        await vis.send(p.DomKeyframe(data=b"k1"))
        await vis.send(p.DomDelta(data=b"k1-a"))
        await vis.send(p.DomDelta(data=b"k1-b"))
        epoch = p.peek((await _frames(view, 3))[-1]).epoch
        await view.close()
        await vis.send(p.DomKeyframe(data=b"k2"))  # seq 4: the log is now k2 and what follows
        await vis.send(p.DomDelta(data=b"k2-a"))
        await vis.send(p.DomDelta(data=b"k2-b"))
        for resume_seq, expected in [
            (1, [4, 5, 6]),  # long before the new keyframe
            (3, [4, 5, 6]),  # the frame just before it
            (4, [5, 6]),  # the keyframe itself: exactly what follows
        ]:
            back, _ = await viewer(relay, welcome.resume, epoch=epoch, seq=resume_seq)
            assert isinstance(await back.recv(), p.SessionAccept)
            frames = await _frames(back, len(expected))
            assert [p.peek(f).seq for f in frames] == expected, resume_seq
            assert {p.peek(f).epoch for f in frames} == {epoch}
            if expected[0] == 4:
                assert p.decode(frames[0]) == p.DomKeyframe(data=b"k2")
            await back.close()

    run(scenario())


def test_nothing_the_visitor_sent_before_consent_reaches_a_viewer_or_a_late_joiners_replay(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        vis, _ = await visitor(relay, v)
        first, _ = await viewer(relay, watch_token(relay, v))
        req = await vis.expect(p.SessionRequest)
        secret: list[p.Message] = [
            p.DomKeyframe(data=b"before consent"),
            p.DomDelta(data=b"before consent"),
            p.ConsoleLines(level="log", lines=("before consent",)),
            p.Pointer(x=1, y=1),
            p.UrlChange(url="https://shop.example/before-consent"),
            p.ScreenFrame(mime="image/png", width=1, height=1, image=b"before consent"),
        ]
        for msg in secret:
            await vis.send(msg)
        await vis.send(p.SessionAccept(session=req.session))
        await vis.send(p.DomKeyframe(data=b"after consent"))
        await vis.send(p.Pointer(x=2, y=2))
        after: list[p.Message] = [
            p.SessionAccept(session=req.session),
            p.DomKeyframe(data=b"after consent"),
            p.Pointer(x=2, y=2),
        ]
        assert await _until(first, after[-1]) == after
        late, _ = await viewer(relay, watch_token(relay, v))
        assert await _until(late, after[-1]) == after
        marker = p.DomDelta(data=b"marker")  # positive control: nothing else was queued before it
        await vis.send(marker)
        assert await _until(late, marker) == [marker]
        assert await _until(first, marker) == [marker]

    run(scenario())


def test_a_late_joiner_is_sent_a_multi_megabyte_log_as_fast_as_it_reads(relay: Any) -> None:
    # A replay goes out through the outbox's cursor as the link drains; it must not
    # wait for the once-a-second sweep between two high-water marks' worth of frames.
    async def scenario() -> None:
        v = vid()
        vis, first, _ = await live_session(relay, v)
        count = 60  # 60 deltas of 60 KiB: about 14 high-water marks (256 KiB) of log
        await vis.send(p.DomKeyframe(data=b"k"))
        for i in range(count):
            await vis.send(p.DomDelta(data=i.to_bytes(4, "big") + b"d" * (60 * 1024)))
        assert p.peek((await _frames(first, count + 1))[-1]).seq == count + 1
        late, _ = await viewer(relay, watch_token(relay, v))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert isinstance(await late.recv(), p.SessionAccept)
        frames = await _frames(late, count + 1)
        took = loop.time() - started
        assert [p.peek(f).seq for f in frames] == list(range(1, count + 2))
        assert took < 4.0, f"the 3.6 MiB log took {took:.1f} s to replay"

    run(scenario())
