"""The hub's promises under any interleaving: a Hypothesis state machine over Hub, Room and Outbox.

No event loop and no sockets: each peer writes to a recording link whose kernel
buffer the machine controls (it can stall: written bytes stay unsent, so its
buffer passes the high-water mark; and drain: the kernel takes them and the hub
is told). Time is a fake clock the sweeps advance. The machine only calls what
the service and the transport call: ``Room.attach_visitor`` / ``detach_visitor``,
``Room.admit_viewer`` / ``detach_viewer``, ``Room.from_visitor`` / ``from_viewer``,
``Hub.drained``, ``Hub.sweep``.

The invariants are the documented promises, checked after every step:

- per viewer socket, what it receives starts with its WELCOME, has nothing of the
  session's content before SESSION_ACCEPT, and its ordered frames, split at each
  keyframe, have strictly consecutive seqs within one epoch (no gap, no duplicate),
  each the very frame the visitor sent with that seq;
- after a resume from (epoch, seq), the first ordered frame is seq+1 in that epoch
  or a keyframe (a stale, foreign or future position gets the keyframe, never a gap);
- the held ordered bytes of any outbox never exceed its ``max_ordered``;
- the room's log is the newest keyframe and the frames after it, consecutive,
  up to the visitor's last seq, and bounded (see the two log tests at the end).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import protocol as p
from protocol.codec import Limits
from relay.core import hub as hub_module
from relay.core.hub import Hub, HubConfig, Peer, Room, SessionState, ViewerSlot

LIMITS = Limits(max_frame=512, max_keyframe=2048)
CONFIG = HubConfig(
    limits=LIMITS,
    high_water=400,  # a few frames: links back up often
    max_ordered=600,  # and overflow into resyncs often
    slow_timeout=10.0,
    resume_window=60.0,
    log_max_bytes=1500,  # a few deltas: the log fills often
)
ORDERED_KINDS = frozenset({p.Kind.DOM_KEYFRAME, p.Kind.DOM_DELTA, p.Kind.CONSOLE_LINES})
CONTENT_KINDS = ORDERED_KINDS | {p.Kind.POINTER, p.Kind.SCROLL, p.Kind.VIEWPORT, p.Kind.SCREEN_FRAME}


class Clock:
    """Stands in for the hub module's ``time``: the sweeps and the seats read the same clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.7e9 + self.now


class Secrets:
    """Stands in for the hub module's ``secrets``: epochs and session ids, the same on every replay."""

    def __init__(self) -> None:
        self.n = 0

    def randbits(self, k: int) -> int:
        self.n += 1
        return (0x9E3779B1 * self.n) % (1 << k)

    def token_hex(self, nbytes: int) -> str:
        self.n += 1
        return f"{self.n:0{2 * nbytes}x}"


class Link:
    """A socket: ``stuck`` keeps written bytes unsent, so ``buffered()`` grows past the high-water mark."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.stuck = False
        self.unsent = 0
        self.closed: tuple[int, str] | None = None
        self.max_message = 0

    def write(self, frame: bytes) -> None:
        if self.closed is not None:
            return  # as the transport: nothing follows a close
        self.sent.append(frame)
        if self.stuck:
            self.unsent += len(frame)

    def buffered(self) -> int:
        return self.unsent

    def close(self, code: int, reason: str = "") -> None:
        self.closed = self.closed or (code, reason)

    def set_max_message(self, size: int) -> None:
        self.max_message = size

    def fail(self, code: int, reason: str) -> None:
        self.close(code, reason)


class Listener:
    """The service's part, as far as the hub's promises need it."""

    def session_changed(self, room: Room) -> None:
        pass

    def session_ended(self, room: Room, reason: str) -> None:
        pass

    def keyframe_asked(self, room: Room, reason: str) -> None:
        pass

    def consent_asked(self, room: Room) -> None:
        pass

    def message(self, room: Room, peer: Peer, msg: p.Message) -> None:
        if isinstance(msg, p.SessionAccept) and peer.role == "visitor":
            room.go_live()
        elif isinstance(msg, p.ResyncRequest) and peer.role == "viewer" and not peer.outbox.needs_resync:
            room.replay(peer)  # as Service.message: one replay at a time


@dataclass
class Watch:
    """What one viewer socket has received, checked frame by frame."""

    viewer: str
    link: Link
    resumed_from: tuple[int, int] | None  # the (epoch, seq) it claimed, or None for a fresh join
    checked: int = 0
    welcomed: bool = False
    accepted: bool = False
    epoch: int = 0
    last: int | None = None  # seq of the last ordered frame applied; None: needs a keyframe
    ordered: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.resumed_from is not None:
            self.epoch, self.last = self.resumed_from


class HubMachine(RuleBasedStateMachine):
    """One visitor's room, its visitor socket (replaced when closed) and up to four viewers."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._patches = pytest.MonkeyPatch()
        self._patches.setattr(hub_module, "time", self.clock)
        self._patches.setattr(hub_module, "secrets", Secrets())
        self.hub = Hub(CONFIG, Listener())
        self.room = self.hub.room("V1")
        self.visitor: Peer | None = None
        self.visitor_link = Link()
        self.viewers: dict[str, Peer] = {}  # connected viewer sockets by viewer id
        self.watches: dict[int, Watch] = {}  # by id(link), every viewer socket ever opened
        self.stamped: dict[tuple[int, int], bytes] = {}  # (epoch, seq) -> the frame as stamped
        self.applied: dict[str, tuple[int, int]] = {}  # viewer id -> last (epoch, seq) it applied, across sockets
        self.ids = itertools.count()

    def teardown(self) -> None:
        self._patches.undo()

    # --- helpers: what the transport and the service do ------------------------------------
    def _connect_visitor(self) -> None:
        self.room = self.hub.room("V1")
        self.visitor_link = Link()
        self.visitor = self.hub.new_peer("visitor", "V1", self.visitor_link, self.room)
        self.room.attach_visitor(self.visitor)
        self._lost()

    def _lost(self) -> None:
        """Sockets the hub closed are gone: the transport reports each once (on_disconnect)."""
        for vid, peer in list(self.viewers.items()):
            link = peer.outbox.link
            assert isinstance(link, Link)
            if link.closed is not None:
                del self.viewers[vid]
                peer.room.detach_viewer(peer, leaving=False)
        if self.visitor is not None and self.visitor_link.closed is not None:
            peer, self.visitor = self.visitor, None
            peer.room.detach_visitor(peer)
        self.room = self.hub.room("V1")  # as the service: a room forgotten when idle comes back empty

    def _seat(self, vid: str, resume: tuple[int, int] | None) -> None:
        link = Link()
        room = self.hub.room("V1")
        self.room = room
        peer = self.hub.new_peer("viewer", vid, link, room)
        self.watches[id(link)] = Watch(vid, link, resume)
        old = self.viewers.get(vid)
        slot = ViewerSlot(vid, "a1", "Ann", frozenset({"click"}))
        epoch, seq = resume or (0, 0)

        def greet(v: Peer) -> None:  # as Service.welcome_viewer: straight to the link, before anything else
            welcome = p.Welcome(version=1, session=room.session_id, client_id="V1", epoch=0, node="n", heartbeat=20)
            v.outbox.link.write(p.encode(welcome))

        room.admit_viewer(slot, peer, greet, epoch, seq)
        self.viewers[vid] = peer
        if old is not None:
            old_link = old.outbox.link
            assert isinstance(old_link, Link) and old_link.closed is not None  # replaced: 4510
            assert old_link.closed[0] == p.CloseCode.REPLACED
        self._lost()

    def _from_visitor(self, frame: bytes) -> None:
        assert self.visitor is not None
        before = self.room.seq
        self.room.from_visitor(self.visitor, frame)
        if self.room.seq == before + 1:
            self.stamped[(self.room.epoch, self.room.seq)] = p.stamp(frame, self.room.epoch, self.room.seq)
        self._lost()

    # --- rules ---------------------------------------------------------------------------------
    @initialize()
    def visitor_connects(self) -> None:
        self._connect_visitor()

    @precondition(lambda self: self.visitor is None)
    @rule()
    def visitor_comes_back(self) -> None:
        self._connect_visitor()

    @precondition(lambda self: self.visitor is not None)
    @rule()
    def visitor_drops(self) -> None:
        assert self.visitor is not None
        self.visitor_link.close(1006)
        self._lost()

    @precondition(lambda self: self.visitor is not None and self.room.state is SessionState.REQUESTED)
    @rule()
    def visitor_accepts(self) -> None:
        self._from_visitor(p.encode(p.SessionAccept(session=self.room.session_id)))

    @precondition(lambda self: self.visitor is not None)
    @rule(size=st.integers(0, LIMITS.max_keyframe - 64))
    def visitor_sends_a_keyframe(self, size: int) -> None:
        self._from_visitor(p.encode(p.DomKeyframe(data=b"k" * size)))

    @precondition(lambda self: self.visitor is not None)
    @rule(sizes=st.lists(st.integers(0, LIMITS.max_frame - 64), min_size=1, max_size=12), console=st.booleans())
    def visitor_sends_deltas(self, sizes: list[int], console: bool) -> None:
        for size in sizes:  # a burst: what fills queues and logs (ignoring any keyframe request)
            msg: p.Message = (
                p.ConsoleLines(level="log", lines=("c" * size,)) if console else p.DomDelta(data=b"d" * size)
            )
            self._from_visitor(p.encode(msg))
            if self.visitor is None:
                break  # closed by the hub (4005)

    @precondition(lambda self: self.visitor is not None)
    @rule(kind=st.sampled_from(["pointer", "scroll", "screen"]), v=st.integers(0, 1000))
    def visitor_sends_a_latest_frame(self, kind: str, v: int) -> None:
        frames: dict[str, p.Message] = {
            "pointer": p.Pointer(x=v, y=v),
            "scroll": p.Scroll(x=0, y=v),
            "screen": p.ScreenFrame(mime="image/png", width=1, height=1, image=b"s" * (v % 700)),
        }
        self._from_visitor(p.encode(frames[kind]))

    @precondition(lambda self: len(self.room.slots) < 4)
    @rule()
    def a_viewer_joins(self) -> None:
        self._seat(f"w{next(self.ids)}", None)

    @precondition(lambda self: bool(self.room.slots))
    @rule(
        data=st.data(),
        epoch=st.sampled_from(["own", "own", "current", "other", "zero"]),
        seq=st.sampled_from(["own", "own", "log-start", "before-log", "end", "future", "any"]),
    )
    def a_viewer_resumes(self, data: st.DataObject, epoch: str, seq: str) -> None:
        vid = data.draw(st.sampled_from(sorted(self.room.slots)))
        room = self.room
        own_epoch, own_seq = self.applied.get(vid, (0, 0))  # what a real viewer sends: its last applied frame
        claim_epoch = {"own": own_epoch, "current": room.epoch, "other": room.epoch ^ 0x5A5A, "zero": 0}[epoch]
        if seq == "future":
            claim_seq = room.seq + data.draw(st.integers(1, 5))
        elif seq == "any":
            claim_seq = data.draw(st.integers(0, room.seq + 2))
        else:
            claim_seq = {
                "own": own_seq,
                "log-start": room.log_first_seq,
                "before-log": max(room.log_first_seq - 2, 0),
                "end": room.seq,
            }[seq]
        self._seat(vid, (claim_epoch, claim_seq))

    @precondition(lambda self: bool(self.viewers))
    @rule(
        data=st.data(),
        missed=st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=8),
    )
    def a_viewer_drops_misses_frames_and_resumes_from_its_last_one(
        self, data: st.DataObject, missed: list[tuple[bool, int]]
    ) -> None:
        # The reconnect every real viewer does: what it applied last is what it sends.
        vid = data.draw(st.sampled_from(sorted(self.viewers)))
        peer = self.viewers.pop(vid)
        link = peer.outbox.link
        assert isinstance(link, Link)
        link.close(1006)
        peer.room.detach_viewer(peer, leaving=False)
        self._lost()
        for keyframe, size in missed:
            if self.visitor is None:
                break
            self._from_visitor(p.encode(p.DomKeyframe(data=b"k" * size) if keyframe else p.DomDelta(data=b"d" * size)))
        if vid in self.room.slots:  # still seated (the session may have ended meanwhile)
            self._seat(vid, self.applied.get(vid, (0, 0)))

    @precondition(lambda self: bool(self.viewers))
    @rule(data=st.data(), leaving=st.booleans())
    def a_viewer_goes(self, data: st.DataObject, leaving: bool) -> None:
        vid = data.draw(st.sampled_from(sorted(self.viewers)))
        peer = self.viewers.pop(vid)
        link = peer.outbox.link
        assert isinstance(link, Link)
        if leaving:  # SESSION_END from the viewer, as Service.message handles it
            peer.room.detach_viewer(peer, leaving=True)
        link.close(1000 if leaving else 1006)
        peer.room.detach_viewer(peer, leaving=False)
        self._lost()

    @precondition(lambda self: bool(self.viewers))
    @rule(data=st.data())
    def a_viewer_asks_for_a_resync(self, data: st.DataObject) -> None:
        peer = self.viewers[data.draw(st.sampled_from(sorted(self.viewers)))]
        peer.room.from_viewer(peer, p.encode(p.ResyncRequest()))
        self._lost()

    @precondition(lambda self: bool(self.viewers))
    @rule(data=st.data())
    def a_viewer_stalls(self, data: st.DataObject) -> None:
        link = self.viewers[data.draw(st.sampled_from(sorted(self.viewers)))].outbox.link
        assert isinstance(link, Link)
        link.stuck = True

    @precondition(lambda self: bool(self.viewers))
    @rule(data=st.data())
    def a_viewer_drains(self, data: st.DataObject) -> None:
        peer = self.viewers[data.draw(st.sampled_from(sorted(self.viewers)))]
        link = peer.outbox.link
        assert isinstance(link, Link)
        link.stuck, link.unsent = False, 0
        self.hub.drained(peer)
        self._lost()

    @rule(dt=st.sampled_from([0.5, 3.0, 10.5, 30.0, 61.0]))
    def time_passes_and_the_sweeper_runs(self, dt: float) -> None:
        self.clock.now += dt
        self.hub.sweep(now=self.clock.now)
        self._lost()

    # --- invariants ------------------------------------------------------------------------------
    @invariant()
    def every_viewer_socket_gets_a_consistent_stream(self) -> None:
        for watch in self.watches.values():
            for frame in watch.link.sent[watch.checked :]:
                watch.checked += 1
                h = p.peek(frame)
                if not watch.welcomed:
                    assert h.kind is p.Kind.WELCOME, f"{h.kind.name} before WELCOME"
                    watch.welcomed = True
                    continue
                if h.kind is p.Kind.SESSION_ACCEPT:
                    watch.accepted = True
                if h.kind in CONTENT_KINDS:
                    assert watch.accepted, f"{h.kind.name} before SESSION_ACCEPT"
                if h.kind not in ORDERED_KINDS:
                    continue
                assert self.stamped.get((h.epoch, h.seq)) == frame, f"not the frame sent as {h.epoch}/{h.seq}"
                if h.kind is not p.Kind.DOM_KEYFRAME:
                    assert watch.last is not None, f"seq {h.seq} with no keyframe before it"
                    assert (h.epoch, h.seq) == (watch.epoch, watch.last + 1), (
                        f"after {watch.epoch}/{watch.last} came {h.epoch}/{h.seq}"
                        f" (resumed from {watch.resumed_from}, so far {watch.ordered[-5:]})"
                    )
                watch.epoch, watch.last = h.epoch, h.seq
                watch.ordered.append((h.epoch, h.seq))
                self.applied[watch.viewer] = (h.epoch, h.seq)

    @invariant()
    def held_ordered_bytes_stay_within_max_ordered(self) -> None:
        peers = list(self.viewers.values()) + ([self.visitor] if self.visitor else [])
        for peer in peers:
            ob = peer.outbox
            assert ob.held_ordered <= CONFIG.max_ordered, (ob.held_ordered, CONFIG.max_ordered)
            assert ob.held_ordered == sum(h.ordered for h in ob.queue)

    @invariant()
    def the_log_is_the_newest_keyframe_and_what_followed_it(self) -> None:
        room = self.room
        log_ = room.log
        assert room.log_bytes == sum(map(len, log_))
        if not log_:
            return
        heads = [p.peek(f) for f in log_]
        assert heads[0].kind is p.Kind.DOM_KEYFRAME
        assert all(h.kind is not p.Kind.DOM_KEYFRAME for h in heads[1:])
        assert [h.seq for h in heads] == list(range(room.log_first_seq, room.seq + 1))
        assert {h.epoch for h in heads} == {room.epoch}
        # The documented bound: asked for a keyframe past log_max_bytes, closed (4005)
        # before a delta would take it past log_max_bytes + max_keyframe.
        assert room.log_bytes <= CONFIG.log_max_bytes + LIMITS.max_keyframe or len(log_) == 1


MACHINE_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_hub_keeps_its_promises_under_any_interleaving() -> None:
    HubMachine.TestCase.settings = MACHINE_SETTINGS
    HubMachine.TestCase().runTest()


def test_a_machine_runs_on_its_own_clock_and_ids_and_puts_the_real_ones_back() -> None:
    real = vars(hub_module)["time"], vars(hub_module)["secrets"]
    epochs = []
    for _ in range(2):
        machine = HubMachine()
        try:
            machine.visitor_connects()
            machine.clock.now = 5.0
            machine.a_viewer_joins()
            (peer,) = machine.viewers.values()
            machine.room.detach_viewer(peer, leaving=False)
            assert machine.room.slots[peer.id].left_at == 5.0  # the seat's clock is the machine's
            epochs.append(machine.room.epoch)
        finally:
            machine.teardown()
        assert (vars(hub_module)["time"], vars(hub_module)["secrets"]) == real
    assert epochs[0] == epochs[1]  # an example replays exactly: same epochs, same frame sizes
