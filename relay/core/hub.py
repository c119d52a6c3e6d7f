"""Rooms, fan-out and per-peer outboxes.

A room is one visitor's: the visitor's socket, the viewers watching it, the
live session (if any) and its log. Frames are routed on their header alone
(:func:`protocol.peek`); content frames are never decoded. Nothing here
awaits: peers write through a :class:`Link` (the transport's port) and
anything that needs storage is reported to a :class:`Listener`.

Backpressure (ARCHITECTURE.md "Backpressure"): a frame goes straight to the
link while the link's buffer is under ``high``; past it, the outbox holds
frames. Latest-wins kinds replace their queued predecessor; ordered kinds are
counted, and past ``max_ordered`` bytes the queue is cleared and the peer is
marked for a resync from the log. The sweeper closes a peer whose link has
stayed backed up for ``slow_timeout`` (4001).

Replays (a late joiner, a resume, a resync) never copy the log into a
socket's buffer: the outbox keeps a cursor (``replay_next``, the next seq to
send) and :meth:`Room.pump` writes log frames only while the link is under
``high``, continuing each time it drains. While a cursor is set, live ordered
frames for that peer are skipped: the log holds them and the cursor reaches
them. A newer keyframe that truncates the log moves the cursor to it.

The log holds at most ``log_max_bytes`` before the visitor is asked for a new
keyframe; a visitor that keeps sending deltas past ``log_max_bytes +
max_keyframe`` without one is closed (4005), so the log stays bounded.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from protocol import (
    KIND_INFO,
    CloseCode,
    Error,
    Kind,
    Message,
    PermissionsUpdate,
    ProtocolError,
    ResyncRequest,
    Role,
    Routing,
    SessionAccept,
    SessionDecline,
    SessionEnd,
    SessionRequest,
    decode,
    encode,
    peek,
    stamp,
)
from protocol.codec import HEADER_SIZE, WIRE_VERSION, Limits
from protocol.kinds import KindInfo

from .limits import SocketRates

__all__ = ["FOREVER", "Link", "Listener", "Outbox", "Peer", "Room", "Hub", "SessionState", "HubConfig"]

log = logging.getLogger("relay.hub")


class Link(Protocol):
    """What the hub needs of a socket. Implemented by the transport."""

    def write(self, frame: bytes) -> None:
        """Hand one frame to the socket's buffer; never blocks, never raises."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        ...

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with ``code``; idempotent."""

    def set_max_message(self, size: int) -> None:
        """The largest message the peer may send from now on."""

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` and discard, unparsed, whatever the peer still sends (a flood)."""


class Listener(Protocol):
    """What the hub reports for persistence. Called synchronously; must not block."""

    def session_changed(self, room: Room) -> None: ...
    def session_ended(self, room: Room, reason: str) -> None: ...
    def message(self, room: Room, peer: Peer, msg: Message) -> None: ...
    def keyframe_asked(self, room: Room, reason: str) -> None: ...
    def consent_asked(self, room: Room) -> None: ...


@dataclass(frozen=True, slots=True)
class HubConfig:
    limits: Limits = field(default_factory=Limits)
    high_water: int = 256 * 1024  # link buffer above which the outbox holds frames
    max_ordered: int = 1024 * 1024  # held ordered bytes before a resync
    slow_timeout: float = 10.0
    resume_window: float = 60.0
    log_max_bytes: int = 16 * 1024 * 1024


class SessionState(Enum):
    REQUESTED = "requested"  # an agent is waiting for the visitor to accept
    LIVE = "live"


_ORDERED, _LATEST, _CONTROL = Routing.ORDERED, Routing.LATEST, Routing.CONTROL
FOREVER = float("inf")
_CLOSED_SLOW = FOREVER  # stalled_since of a peer closed as slow: never past the deadline again


class _Held:
    """A frame held while the link is backed up; latest-wins entries are rewritten in place."""

    __slots__ = ("frame", "kind", "ordered")

    def __init__(self, kind: int, frame: bytes, ordered: int) -> None:
        self.kind, self.frame, self.ordered = kind, frame, ordered


class Outbox:
    """One peer's outbound path: the link, and what is held while it is backed up."""

    __slots__ = ("_latest", "counts", "held_ordered", "high", "link", "max_ordered", "queue", "replay_next")

    def __init__(self, link: Link, high: int, max_ordered: int) -> None:
        self.link = link
        self.high = high
        self.max_ordered = max_ordered
        self.queue: deque[_Held] = deque()
        self._latest: dict[int, _Held] = {}
        self.held_ordered = 0
        self.replay_next = 0  # 0: not replaying; else the next log seq to send (1: from the keyframe)
        self.counts: Hub | None = None  # whose counters an overflow resync adds to (set by Hub.new_peer)

    @property
    def needs_resync(self) -> bool:
        return self.replay_next != 0

    def backed_up(self) -> bool:
        return bool(self.queue) or self.link.buffered() >= self.high

    def send(self, frame: bytes, routing: Routing, kind: int) -> None:
        if not self.queue and not self.replay_next and self.link.buffered() < self.high:
            self.link.write(frame)
            return
        if routing is _LATEST:
            held = self._latest.get(kind)
            if held is not None:
                held.frame = frame  # the older position, the newer value
                return
            held = self._latest[kind] = _Held(kind, frame, 0)
            self.queue.append(held)
        elif routing is _ORDERED:
            if self.replay_next:
                return  # the log holds it; the replay cursor will reach it
            self.queue.append(_Held(kind, frame, len(frame)))
            self.held_ordered += len(frame)
            if self.held_ordered > self.max_ordered:
                self.clear()
                self.replay_next = 1  # resynchronise from the keyframe
                if self.counts is not None:
                    self.counts.resyncs_overflow += 1
        else:
            self.queue.append(_Held(kind, frame, 0))

    def clear(self) -> None:
        self.queue.clear()
        self._latest.clear()
        self.held_ordered = 0

    def drain(self) -> bool:
        """Move held frames to the link while it has room. True when the replay may go on."""
        q = self.queue
        while q and self.link.buffered() < self.high:
            held = q.popleft()
            if held.ordered:
                self.held_ordered -= held.ordered
            elif self._latest.get(held.kind) is held:
                del self._latest[held.kind]
            self.link.write(held.frame)
        return not q and self.replay_next != 0 and self.link.buffered() < self.high


class Peer:
    """A connected socket in a room: the visitor or one viewer."""

    __slots__ = (
        "address",
        "agent_id",
        "agent_name",
        "id",
        "outbox",
        "permissions",
        "rates",
        "role",
        "room",
        "stalled_since",
        "warned",
    )

    def __init__(self, role: str, peer_id: str, outbox: Outbox, room: Room) -> None:
        self.role = role
        self.id = peer_id
        self.outbox = outbox
        self.room = room
        self.permissions: frozenset[str] = frozenset()
        self.agent_id = ""
        self.agent_name = ""
        self.warned: set[int] = set()
        self.stalled_since: float | None = None
        self.rates: SocketRates | None = None
        self.address = ""  # the client address, for per-address limits

    def send(self, msg: Message) -> None:
        info = KIND_INFO[msg.KIND]
        assert info is not None
        frame = encode(msg)
        hub = self.room.hub
        hub.out_session += 1  # every kind the relay itself sends is session-class
        hub.out_session_bytes += len(frame)
        self.outbox.send(frame, info.routing, msg.KIND)

    def close(self, code: int, reason: str = "") -> None:
        self.outbox.clear()
        self.outbox.link.close(code, reason)


@dataclass(slots=True)
class ViewerSlot:
    """A viewer admitted to the session; survives its socket for the resume window."""

    viewer_id: str
    agent_id: str
    agent_name: str
    permissions: frozenset[str]
    peer: Peer | None = None
    left_at: float | None = None


class Room:
    """One visitor's room. See the module docstring for the rules."""

    def __init__(self, hub: Hub, visitor_id: str) -> None:
        self.hub = hub
        self.visitor_id = visitor_id
        self.visitor: Peer | None = None
        self.visitor_left_at: float | None = time.monotonic()
        self.visitor_allow: frozenset[str] = frozenset()  # empty: the page restricts nothing
        self.slots: dict[str, ViewerSlot] = {}
        self.viewers: list[Peer] = []  # connected viewers, the fan-out list
        self.session_id = ""
        self.state: SessionState | None = None
        self.started = 0.0
        self.epoch = 0
        self.seq = 0
        self.log: list[bytes] = []
        self.log_first_seq = 0
        self.log_bytes = 0
        self.resync_asked = False
        self.latest: dict[int, bytes] = {}
        self.features: set[str] = set()
        self.forbidden = 0
        self.metadata: dict[str, object] = {}
        self.observer: dict[str, str] = {}
        self.agents: list[dict[str, str]] = []
        self.went_live = False
        self.left: set[str] = set()  # viewers that ended their part: their resume tokens are void
        # Cluster mode (relay/cluster): whether this node holds the room's ownership lease, the
        # monotonic time past which it may no longer serve the room unless the lease was refreshed
        # (frames past it are dropped: fencing), and the fencing epoch the next session takes.
        self.owned = False
        self.lease_until = FOREVER
        self.next_epoch = 0
        self.fenced = False  # a frame was dropped past the lease: the next claim takes a new epoch

    # --- session lifecycle -------------------------------------------------------
    def _new_session(self) -> None:
        self.session_id = secrets.token_hex(8)
        self.state = SessionState.REQUESTED
        self.started = time.time()
        self.epoch = self.next_epoch or (secrets.randbits(32) | 1)
        self.next_epoch = 0
        self.seq = 0
        self._reset_log()
        self.features = set()
        self.agents = []
        self.went_live = False
        self.left = set()

    def _request_visitor(self) -> None:
        if self.visitor is None or self.state is not SessionState.REQUESTED:
            return
        first = next(iter(self.slots.values()), None)
        self.visitor.send(
            SessionRequest(
                session=self.session_id,
                agent_id=first.agent_id if first else "",
                agent_name=first.agent_name if first else "",
                permissions=tuple(sorted(self.union_permissions())),
            )
        )
        self.hub.listener.consent_asked(self)

    def union_permissions(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for s in self.slots.values():
            out |= s.permissions
        return out

    def go_live(self) -> None:
        if self.state is not SessionState.REQUESTED:
            return
        self.state = SessionState.LIVE
        if self.visitor is not None:
            self.visitor.outbox.link.set_max_message(self.hub.config.limits.max_keyframe)
        self.hub.listener.session_changed(self)
        accept = encode(SessionAccept(session=self.session_id))
        self.hub.out_session += len(self.viewers)
        self.hub.out_session_bytes += len(self.viewers) * len(accept)
        for v in self.viewers:
            v.outbox.send(accept, Routing.SESSION, Kind.SESSION_ACCEPT)

    def end_session(self, reason: str, viewer_code: int = CloseCode.SESSION_ENDED) -> None:
        if self.state is None:
            return
        ended = SessionEnd(session=self.session_id, reason=reason)
        if viewer_code == CloseCode.DECLINED:
            ended_frame = encode(SessionDecline(session=self.session_id, reason=reason))
        else:
            ended_frame = encode(ended)
        self.hub.out_session += len(self.viewers)
        self.hub.out_session_bytes += len(self.viewers) * len(ended_frame)
        for v in list(self.viewers):
            v.outbox.send(ended_frame, Routing.SESSION, 0)
            v.close(viewer_code, reason)
        if self.visitor is not None:
            if viewer_code != CloseCode.DECLINED and reason != "visitor_ended":
                self.visitor.send(ended)  # the visitor did not end it itself: tell it
            self.visitor.outbox.link.set_max_message(self.hub.config.limits.max_frame)
        self.hub.listener.session_ended(self, reason)
        self._forget_session()

    def _forget_session(self) -> None:
        """No session in this room any more (its participants were told)."""
        self.viewers.clear()
        self.slots.clear()
        self.state = None
        self.session_id = ""
        self._reset_log()
        self.latest.clear()
        self.hub.forget_if_idle(self)

    @property
    def claim_epoch(self) -> int:
        """Cluster mode: the fencing epoch this node's claim holds (the next session's before one starts)."""
        return self.epoch if self.state is not None else self.next_epoch

    def _reset_log(self) -> None:
        self.log = []
        self.log_bytes = 0
        self.log_first_seq = 0
        self.resync_asked = False

    # --- cluster mode: ownership moves (relay/cluster) --------------------------------------
    def surrender(self, goodbye: bytes, code: int, reason: str) -> None:
        """Another node owns this room now: close every participant here with ``goodbye``
        (an ERROR naming the owner) and ``code``, and forget the session without ending it
        (its record is the new owner's to keep)."""
        for v in list(self.viewers):
            v.outbox.clear()
            v.outbox.link.write(goodbye)
            v.close(code, reason)
        if self.visitor is not None:
            self.visitor.outbox.clear()
            self.visitor.outbox.link.write(goodbye)
            self.visitor.close(code, reason)
        self.owned = False
        self.lease_until = FOREVER
        self._forget_session()

    def reepoch(self, epoch: int, code: int, reason: str) -> None:
        """Serve the session on under a new fencing epoch (this node re-owned it after its
        lease lapsed, or after Redis lost it): what was logged under the old epoch may have a
        gap, so the log is dropped, the viewers are closed with ``code`` to resume (they get a
        fresh keyframe) and the visitor is asked for one."""
        self.epoch = epoch
        self.seq = 0
        self._reset_log()
        self.latest.clear()
        for v in list(self.viewers):
            v.close(code, reason)
        if self.state is SessionState.LIVE and self.visitor is not None:
            self._ask_keyframe("resume")
        self.hub.listener.session_changed(self)

    # --- membership ---------------------------------------------------------------
    def attach_visitor(self, peer: Peer) -> None:
        old, self.visitor = self.visitor, peer
        self.visitor_left_at = None
        if old is not None:
            old.close(CloseCode.REPLACED, "replaced by a newer connection")
        if self.state is SessionState.REQUESTED:
            self._request_visitor()
        elif self.state is SessionState.LIVE:
            peer.outbox.link.set_max_message(self.hub.config.limits.max_keyframe)
            if not self.log or self.log_bytes > self.hub.config.log_max_bytes:
                self.resync_asked = False  # a new socket: ask it, whatever the old one was asked
                self._ask_keyframe("resume" if not self.log else "log full")

    def detach_visitor(self, peer: Peer) -> None:
        if self.visitor is peer:
            self.visitor = None
            self.visitor_left_at = time.monotonic()
            self.hub.forget_if_idle(self)

    def admit_viewer(
        self,
        slot: ViewerSlot,
        peer: Peer,
        greet: Callable[[Peer], None],
        resume_epoch: int = 0,
        resume_seq: int = 0,
    ) -> None:
        """Seat a viewer: ``greet`` sends its WELCOME before anything else reaches it."""
        old = self.slots.get(slot.viewer_id)
        if old is not None and old.peer is not None:
            if old.peer in self.viewers:
                self.viewers.remove(old.peer)
            old.peer.close(CloseCode.REPLACED, "replaced by a newer connection")
        new_session = self.state is None
        if new_session:
            self._new_session()
        slot.peer = peer
        slot.left_at = None
        self.slots[slot.viewer_id] = slot
        peer.permissions = self.effective(slot.permissions)
        peer.agent_id, peer.agent_name = slot.agent_id, slot.agent_name
        agent = {"id": slot.agent_id, "name": slot.agent_name}
        if agent not in self.agents:
            self.agents.append(agent)
        greet(peer)
        self.viewers.append(peer)
        if self.state is SessionState.LIVE:
            peer.send(SessionAccept(session=self.session_id))
            self.hub.resyncs_joined += 1
            self.replay(peer, resume_epoch, resume_seq)
        elif new_session:
            self._request_visitor()
        self.hub.listener.session_changed(self)

    def detach_viewer(self, peer: Peer, leaving: bool) -> None:
        if peer in self.viewers:
            self.viewers.remove(peer)
        slot = self.slots.get(peer.id)
        if slot is not None and slot.peer is peer:
            slot.peer = None
            slot.left_at = time.monotonic()
            if leaving:
                del self.slots[peer.id]
                self.left.add(peer.id)
        if self.state is not None and not self.slots:
            self.end_session("agent_left")
        elif leaving and self.state is not None:
            self.hub.listener.session_changed(self)  # the stored session forgets that viewer

    def effective(self, granted: frozenset[str]) -> frozenset[str]:
        return granted & self.visitor_allow if self.visitor_allow else granted

    def set_visitor_allow(self, allow: Iterable[str]) -> None:
        new = frozenset(allow)
        if new == self.visitor_allow:
            return
        self.visitor_allow = new
        if self.state is not None:
            self.hub.listener.session_changed(self)
        for v in self.viewers:
            slot = self.slots.get(v.id)
            if slot is not None:
                v.permissions = self.effective(slot.permissions)
                v.send(PermissionsUpdate(permissions=tuple(sorted(v.permissions))))

    # --- replay -------------------------------------------------------------------
    def replay(self, peer: Peer, resume_epoch: int = 0, resume_seq: int = 0) -> None:
        """Send the log to ``peer``: from after ``resume_seq`` when possible, else whole.

        The frames go out through the outbox's cursor as the link drains (see the
        module docstring); ordered frames held for ``peer`` are dropped first."""
        ob = peer.outbox
        ob.queue = deque(h for h in ob.queue if not h.ordered)
        ob.held_ordered = 0
        start = 1
        if self.log and resume_epoch == self.epoch and self.log_first_seq <= resume_seq + 1 <= self.seq + 1:
            start = resume_seq + 1
        ob.replay_next = start
        self.pump(peer)

    def pump(self, peer: Peer) -> None:
        """Write the replay's next log frames while ``peer``'s link has room."""
        ob = peer.outbox
        nxt = ob.replay_next
        if not nxt or ob.queue:
            return
        log_ = self.log
        first = self.log_first_seq
        end = first + len(log_)
        if nxt < first:
            nxt = first  # a newer keyframe truncated the log: start from it
        link, high, hub = ob.link, ob.high, self.hub
        while nxt < end and link.buffered() < high:
            frame = log_[nxt - first]
            link.write(frame)
            hub.out_ordered += 1
            hub.out_ordered_bytes += len(frame)
            nxt += 1
        if nxt < end:
            ob.replay_next = nxt
            return
        ob.replay_next = 0  # caught up: live frames flow again
        hub.out_latest += len(self.latest)
        hub.out_latest_bytes += sum(map(len, self.latest.values()))
        for kind, frame in self.latest.items():
            ob.send(frame, Routing.LATEST, kind)

    # --- frames from the visitor (hot path) -----------------------------------------
    def from_visitor(self, peer: Peer, data: bytes) -> None:
        info = _fast_peek(data, self.hub.config.limits)
        routing = info.routing
        if routing is _ORDERED:
            hub = self.hub
            hub.in_ordered += 1
            hub.in_ordered_bytes += len(data)
            if self.state is not SessionState.LIVE:
                return  # nothing streams before the visitor accepted
            kind = info.kind
            if kind != Kind.DOM_KEYFRAME and not self.log:
                self._ask_keyframe("no keyframe")
                return
            self.seq += 1
            frame = stamp(data, self.epoch, self.seq)
            if kind == Kind.DOM_KEYFRAME:
                self.log = [frame]
                self.log_first_seq = self.seq
                self.log_bytes = len(frame)
                self.resync_asked = False
            else:
                cfg = self.hub.config
                if self.log_bytes + len(frame) > cfg.log_max_bytes + cfg.limits.max_keyframe:
                    self.seq -= 1
                    peer.close(CloseCode.OVERLOADED, "log full: no keyframe was sent")
                    return
                self.log.append(frame)
                self.log_bytes += len(frame)
                if self.log_bytes > cfg.log_max_bytes:
                    self._ask_keyframe("log full")
            n = len(self.viewers)
            hub.out_ordered += n
            hub.out_ordered_bytes += n * len(frame)
            for v in self.viewers:
                v.outbox.send(frame, _ORDERED, kind)
        elif routing is _LATEST:
            hub = self.hub
            hub.in_latest += 1
            hub.in_latest_bytes += len(data)
            if self.state is not SessionState.LIVE:
                return
            kind = info.kind
            self.latest[kind] = data
            n = len(self.viewers)
            hub.out_latest += n
            hub.out_latest_bytes += n * len(data)
            for v in self.viewers:
                v.outbox.send(data, _LATEST, kind)
        elif info.senders.isdisjoint(_VISITOR_ROLE):
            raise ProtocolError("bad_value", f"{info.kind.name} is not sent by visitors")
        else:
            self.hub.in_session += 1
            self.hub.in_session_bytes += len(data)
            msg = decode(data, self.hub.config.limits)
            self.hub.listener.message(self, peer, msg)

    def _ask_keyframe(self, reason: str) -> None:
        if self.visitor is not None and not self.resync_asked:
            self.resync_asked = True
            self.hub.keyframes_asked += 1
            self.visitor.send(ResyncRequest(reason=reason))
            self.hub.listener.keyframe_asked(self, reason)

    # --- frames from a viewer ----------------------------------------------------------
    def from_viewer(self, peer: Peer, data: bytes) -> None:
        h = peek(data, self.hub.config.limits)
        if h.routing is _CONTROL:
            self.hub.in_control += 1
            self.hub.in_control_bytes += len(data)
            perm = h.info.permission
            if perm is not None and perm.value not in peer.permissions:
                self.forbidden += 1
                self.hub.forbidden += 1
                if h.kind not in peer.warned:
                    peer.warned.add(h.kind)
                    peer.send(Error(code="forbidden", message=f"{perm.value} is not granted"))
                return
            decode(data, self.hub.config.limits)  # control frames are small: validate for the visitor
            if perm is not None and perm.value not in self.features:
                self.features.add(perm.value)
                self.hub.listener.session_changed(self)  # stored: it survives a crash
            if self.visitor is not None and self.state is SessionState.LIVE:
                self.hub.out_control += 1
                self.hub.out_control_bytes += len(data)
                self.visitor.outbox.send(data, _CONTROL, h.kind)
        elif h.info.senders.isdisjoint(_VIEWER_ROLE):
            raise ProtocolError("bad_value", f"{h.kind.name} is not sent by viewers")
        else:
            self.hub.in_session += 1
            self.hub.in_session_bytes += len(data)
            msg = decode(data, self.hub.config.limits)
            self.hub.listener.message(self, peer, msg)


_VISITOR_ROLE = frozenset({Role.VISITOR})
_VIEWER_ROLE = frozenset({Role.VIEWER})


def _fast_peek(data: bytes, limits: Limits) -> KindInfo:
    """:func:`protocol.peek` for the hot path: same checks, no header object.

    Anything unusual goes to ``peek`` itself, which raises the precise error.
    """
    n = len(data)
    if n >= HEADER_SIZE and data[0] == WIRE_VERSION and not data[2] and not data[3]:
        info = KIND_INFO[data[1]]
        if info is not None and n <= (limits.max_keyframe if info.big else limits.max_frame):
            return info
    return peek(data, limits).info


class Hub:
    """All rooms of this node."""

    def __init__(self, config: HubConfig, listener: Listener) -> None:
        self.config = config
        self.listener = listener
        self.rooms: dict[str, Room] = {}
        self.rescued = 0  # peers the sweep found drained with frames still waiting
        self.forbidden = 0  # control frames dropped for want of a permission, all rooms
        # Monotonic counters read by /metrics at scrape time (relay/metrics.py); plain ints so the
        # hot path pays one attribute increment. in_*: frames the hub routed from peers, by routing
        # class (one refused by a rate limit or malformed is not routed); out_*: frames handed to
        # peers' outboxes or written from the log (a fan-out counts once per recipient).
        self.in_ordered = self.in_ordered_bytes = self.out_ordered = self.out_ordered_bytes = 0
        self.in_latest = self.in_latest_bytes = self.out_latest = self.out_latest_bytes = 0
        self.in_control = self.in_control_bytes = self.out_control = self.out_control_bytes = 0
        self.in_session = self.in_session_bytes = self.out_session = self.out_session_bytes = 0
        self.resyncs_joined = 0  # replays for a viewer seated in a live session (late joiner, resume)
        self.resyncs_overflow = 0  # replays after a viewer's ordered queue overflowed
        self.resyncs_requested = 0  # replays a viewer asked for (RESYNC_REQUEST), counted by the service
        self.keyframes_asked = 0  # RESYNC_REQUESTs sent to visitors
        self.slow_closed = 0  # peers the sweep closed as slow (4001)

    def room(self, visitor_id: str) -> Room:
        room = self.rooms.get(visitor_id)
        if room is None:
            room = self.rooms[visitor_id] = Room(self, visitor_id)
        return room

    def forget_if_idle(self, room: Room) -> None:
        if room.visitor is None and room.state is None and not room.slots:
            self.rooms.pop(room.visitor_id, None)

    def new_peer(self, role: str, peer_id: str, link: Link, room: Room) -> Peer:
        outbox = Outbox(link, self.config.high_water, self.config.max_ordered)
        outbox.counts = self
        return Peer(role, peer_id, outbox, room)

    def drained(self, peer: Peer) -> None:
        """The peer's link buffer fell below its low mark."""
        if peer.outbox.drain():
            peer.room.pump(peer)

    def peers(self) -> Iterable[Peer]:
        for room in self.rooms.values():
            if room.visitor is not None:
                yield room.visitor
            yield from room.viewers

    def sweep(self, now: float | None = None) -> None:
        """Close stuck peers; expire rooms whose visitor or viewers left too long ago."""
        now = time.monotonic() if now is None else now
        cfg = self.config
        for peer in list(self.peers()):
            if peer.outbox.backed_up():
                if peer.stalled_since is None:
                    peer.stalled_since = now
                elif now - peer.stalled_since > cfg.slow_timeout:
                    log.info("closing slow %s %s", peer.role, peer.id)
                    self.slow_closed += 1
                    peer.stalled_since = _CLOSED_SLOW  # closed: counted once while its close frame waits
                    peer.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            else:
                peer.stalled_since = None
                if peer.outbox.needs_resync or peer.outbox.queue:
                    self.rescued += 1  # a drain the transport never reported: should stay 0
                    self.drained(peer)
        for room in list(self.rooms.values()):
            if room.state is None:
                continue
            left = room.visitor_left_at
            if room.visitor is None and left is not None and now - left > cfg.resume_window:
                room.end_session("visitor_gone")
                continue
            expired = False
            for slot in list(room.slots.values()):
                if slot.peer is None and slot.left_at is not None and now - slot.left_at > cfg.resume_window:
                    del room.slots[slot.viewer_id]
                    expired = True
            if room.state is not None and not room.slots:
                room.end_session("agent_left")
            elif expired:
                self.listener.session_changed(room)

    def close_all(self, code: int, reason: str) -> None:
        for peer in list(self.peers()):
            peer.close(code, reason)
