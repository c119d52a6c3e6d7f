"""The hub with no event loop and no sockets: a recording link stands in for each socket."""

from __future__ import annotations

from typing import Any

import pytest

import protocol as p
from relay.core.hub import Hub, HubConfig, Outbox, Peer, Room, ViewerSlot


class RecordingLink:
    """A socket whose kernel buffer we control: ``stuck`` bytes stay 'unsent'."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.stuck = 0
        self.closed: tuple[int, str] | None = None

    def write(self, frame: bytes) -> None:
        self.sent.append(frame)

    def buffered(self) -> int:
        return self.stuck

    def close(self, code: int, reason: str = "") -> None:
        self.closed = self.closed or (code, reason)

    def set_max_message(self, size: int) -> None:
        self.max_message = size

    def messages(self) -> list[p.Message]:
        return [p.decode(f) for f in self.sent]


class Quiet:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def session_changed(self, room: Room) -> None:
        pass

    def session_ended(self, room: Room, reason: str) -> None:
        self.ended.append(reason)

    def message(self, room: Room, peer: Peer, msg: p.Message) -> None:
        if isinstance(msg, p.SessionAccept):
            room.go_live()

    def consent_asked(self, room: Room) -> None:
        pass

    def keyframe_asked(self, room: Room, reason: str) -> None:
        pass


def make_hub(**config: Any) -> tuple[Hub, Quiet]:
    listener = Quiet()
    return Hub(HubConfig(**config), listener), listener


def seat(hub: Hub, room: Room, viewer_id: str, perms: tuple[str, ...] = ("click",)) -> tuple[Peer, RecordingLink]:
    link = RecordingLink()
    peer = hub.new_peer("viewer", viewer_id, link, room)
    slot = ViewerSlot(viewer_id, "a1", "Ann", frozenset(perms))
    room.admit_viewer(slot, peer, lambda _: None)
    return peer, link


def live_room(hub: Hub) -> tuple[Room, Peer, RecordingLink]:
    room = hub.room("V1")
    vlink = RecordingLink()
    vis = hub.new_peer("visitor", "V1", vlink, room)
    room.attach_visitor(vis)
    seat(hub, room, "w1")
    room.from_visitor(vis, p.encode(p.SessionAccept()))
    return room, vis, vlink


def test_held_latest_frames_coalesce_and_ordered_frames_keep_their_order() -> None:
    link = RecordingLink()
    box = Outbox(link, high=100, max_ordered=10_000)
    link.stuck = 100
    box.send(b"p1", p.Routing.LATEST, p.Kind.POINTER)
    box.send(b"d1", p.Routing.ORDERED, p.Kind.DOM_DELTA)
    box.send(b"p2", p.Routing.LATEST, p.Kind.POINTER)
    box.send(b"d2", p.Routing.ORDERED, p.Kind.DOM_DELTA)
    box.send(b"p3", p.Routing.LATEST, p.Kind.POINTER)
    assert link.sent == []
    link.stuck = 0
    assert box.drain() is False
    assert link.sent == [b"p3", b"d1", b"d2"]
    assert box.held_ordered == 0 and not box.backed_up()


def test_ordered_overflow_clears_the_queue_and_asks_for_a_resync_once_drained() -> None:
    link = RecordingLink()
    box = Outbox(link, high=100, max_ordered=25)
    link.stuck = 500
    for i in range(3):
        box.send(b"x" * 10 + bytes([i]), p.Routing.ORDERED, p.Kind.DOM_DELTA)
    assert box.needs_resync and not box.queue
    box.send(b"later", p.Routing.ORDERED, p.Kind.DOM_DELTA)  # in the log; not held
    assert not box.queue
    assert box.drain() is False  # still backed up
    link.stuck = 0
    assert box.drain() is True and box.needs_resync  # the room pumps the log from here


def test_overflowing_viewer_is_resent_the_log_and_the_other_viewer_is_untouched() -> None:
    hub, _ = make_hub(high_water=1000, max_ordered=3000)
    room, vis, _ = live_room(hub)
    slow, slow_link = seat(hub, room, "w2")
    fast = room.viewers[0]
    fast_link = fast.outbox.link
    assert isinstance(fast_link, RecordingLink)
    room.from_visitor(vis, p.encode(p.DomKeyframe(data=b"K")))
    slow_link.stuck = 5000
    for i in range(10):
        room.from_visitor(vis, p.encode(p.DomDelta(data=bytes([i]) * 500)))
    assert [m for m in fast_link.messages() if isinstance(m, p.DomDelta)] == [
        p.DomDelta(data=bytes([i]) * 500) for i in range(10)
    ]
    assert slow.outbox.needs_resync
    before = len(slow_link.sent)
    slow_link.stuck = 0
    hub.drained(slow)
    resent = [p.peek(f) for f in slow_link.sent[before:]]
    assert resent[0].kind is p.Kind.DOM_KEYFRAME and [h.seq for h in resent] == list(range(1, 12))


def test_sweep_closes_a_peer_backed_up_past_the_slow_timeout() -> None:
    hub, _ = make_hub(slow_timeout=10.0)
    room, _, _ = live_room(hub)
    _, link = seat(hub, room, "w2")
    link.stuck = 10**6
    hub.sweep(now=100.0)
    assert link.closed is None
    hub.sweep(now=105.0)
    assert link.closed is None
    hub.sweep(now=110.5)
    assert link.closed is not None and link.closed[0] == p.CloseCode.SLOW_CONSUMER


def test_replay_resumes_after_the_given_seq_within_the_epoch() -> None:
    hub, _ = make_hub()
    room, vis, _ = live_room(hub)
    room.from_visitor(vis, p.encode(p.DomKeyframe(data=b"K")))
    for i in range(4):
        room.from_visitor(vis, p.encode(p.DomDelta(data=b"%d" % i)))
    link = RecordingLink()
    peer = hub.new_peer("viewer", "w9", link, room)
    room.replay(peer, resume_epoch=room.epoch, resume_seq=3)
    assert [p.peek(f).seq for f in link.sent] == [4, 5]
    link.sent.clear()
    room.replay(peer, resume_epoch=room.epoch ^ 1, resume_seq=3)
    assert [p.peek(f).seq for f in link.sent] == [1, 2, 3, 4, 5]


def test_a_new_keyframe_truncates_the_log_without_resetting_seq() -> None:
    hub, _ = make_hub()
    room, vis, _ = live_room(hub)
    room.from_visitor(vis, p.encode(p.DomKeyframe(data=b"K1")))
    room.from_visitor(vis, p.encode(p.DomDelta(data=b"d")))
    room.from_visitor(vis, p.encode(p.DomKeyframe(data=b"K2")))
    assert [p.peek(f).seq for f in room.log] == [3] and room.log_first_seq == 3


def test_deltas_without_a_keyframe_ask_the_visitor_for_one() -> None:
    hub, _ = make_hub()
    room, vis, vlink = live_room(hub)
    room.from_visitor(vis, p.encode(p.DomDelta(data=b"orphan")))
    room.from_visitor(vis, p.encode(p.DomDelta(data=b"orphan")))
    asks = [m for m in vlink.messages() if isinstance(m, p.ResyncRequest)]
    assert len(asks) == 1 and room.log == []


def test_forbidden_control_is_dropped_counted_and_reported_once() -> None:
    hub, _ = make_hub()
    room, _, vlink = live_room(hub)
    viewer = room.viewers[0]
    link = viewer.outbox.link
    assert isinstance(link, RecordingLink)
    for _ in range(3):
        room.from_viewer(viewer, p.encode(p.ConsoleEval(code="x")))
    assert room.forbidden == 3
    assert [m for m in link.messages() if isinstance(m, p.Error)] == [
        p.Error(code="forbidden", message="console is not granted")
    ]
    assert not any(isinstance(m, p.ConsoleEval) for m in vlink.messages())


def test_last_viewer_leaving_ends_the_session_for_the_visitor() -> None:
    hub, listener = make_hub()
    room, _, vlink = live_room(hub)
    room.detach_viewer(room.viewers[0], leaving=True)
    assert listener.ended == ["agent_left"] and room.state is None
    assert isinstance(vlink.messages()[-1], p.SessionEnd)


def test_a_dropped_viewer_keeps_its_seat_for_the_resume_window() -> None:
    hub, listener = make_hub(resume_window=30.0)
    room, _, _ = live_room(hub)
    room.detach_viewer(room.viewers[0], leaving=False)
    slot = room.slots["w1"]
    assert slot.left_at is not None
    hub.sweep(now=slot.left_at + 29)
    assert room.state is not None
    hub.sweep(now=slot.left_at + 31)
    assert room.state is None and listener.ended == ["agent_left"]


@pytest.mark.parametrize("kind", [p.Click(node=1, x=1, y=1), p.SessionRequest(session="", agent_id="", agent_name="")])
def test_visitor_frames_of_another_role_raise_a_protocol_error(kind: p.Message) -> None:
    hub, _ = make_hub()
    room, vis, _ = live_room(hub)
    with pytest.raises(p.ProtocolError):
        room.from_visitor(vis, p.encode(kind))


def test_a_visitor_gone_past_the_resume_window_ends_the_session() -> None:
    hub, listener = make_hub(resume_window=30.0)
    room, vis, _ = live_room(hub)
    room.detach_visitor(vis)
    left = room.visitor_left_at
    assert left is not None
    hub.sweep(now=left + 29)
    assert room.state is not None
    hub.sweep(now=left + 31)
    assert listener.ended == ["visitor_gone"] and "V1" not in hub.rooms


def test_an_allow_list_of_none_leaves_a_viewer_no_control() -> None:
    hub, _ = make_hub()
    room, _, _ = live_room(hub)
    room.set_visitor_allow(["none"])
    assert room.viewers[0].permissions == frozenset()
    room.set_visitor_allow([])
    assert room.viewers[0].permissions == frozenset({"click"})
