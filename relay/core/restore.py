"""Sessions across a relay restart: a room to its stored record, and back.

A live session's state is in the store (:func:`record_of` is what the
service saves on every change). When the relay starts again, :func:`restore`
rebuilds a room per open record with the hub's own classes: the same session
id, state (consent given or not), viewer slots, the viewers that left (their
resume tokens stay void), agents, the visitor's own permission list, metadata
and observer; a new epoch and an empty log. The
visitor and every viewer count as just gone: their resume windows run from
the restart, so the visitor's SDK and the viewers reconnect on their own (the
viewers with their resume tokens) and :meth:`Hub.sweep` ends the session as
for any other drop (``"visitor_gone"``, ``"agent_left"``) when they do not.
The visitor must be asked for a keyframe when it comes back: the log is empty.

Records that cannot be rebuilt are handed back for the caller to close
(``store.close_sessions(ids, time.time(), RELAY_RESTART)``), so that no
session is left open in the history.

Nothing here awaits or touches the store; the clocks are parameters.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from typing import NamedTuple

from ..storage.base import SessionRecord, ViewerRecord
from .hub import Hub, Room, SessionState, ViewerSlot

__all__ = ["RELAY_RESTART", "Restored", "record_of", "restore", "take_over"]

log = logging.getLogger("relay.restore")

RELAY_RESTART = "relay_restart"
"""``end_reason`` of the sessions :func:`restore` could not rebuild."""


class Restored(NamedTuple):
    rooms: list[Room]  # rebuilt and in ``hub.rooms``
    unrestorable: list[SessionRecord]  # still open in the store: close them with RELAY_RESTART


def record_of(room: Room, ended: float | None = None, end_reason: str = "") -> SessionRecord:
    """The record to save for ``room``'s session: history and, while open, what restores it.

    ``ended`` set means the session is over: its state is stored as ``""``.
    """
    return SessionRecord(
        id=room.session_id,
        visitor=room.visitor_id,
        agents=[dict(a) for a in room.agents],
        observer=dict(room.observer),
        started=room.started,
        ended=ended,
        went_live=room.state is SessionState.LIVE or room.went_live,
        features_used=sorted(room.features),
        metadata=dict(room.metadata),
        state="" if ended is not None or room.state is None else room.state.value,
        viewers=[
            ViewerRecord(
                id=s.viewer_id, agent_id=s.agent_id, agent_name=s.agent_name, permissions=sorted(s.permissions)
            )
            for s in room.slots.values()
        ],
        allow=sorted(room.visitor_allow),
        epoch=room.epoch,
        left_viewers=sorted(room.left),
        end_reason=end_reason if ended is not None else "",
    )


def restore(hub: Hub, records: Iterable[SessionRecord], clock: float | None = None) -> Restored:
    """Rebuild a room in ``hub`` for each open session record; return the rooms and the rest.

    ``clock`` is the hub's clock (``time.monotonic()``, what :meth:`Hub.sweep`
    compares with) at the restart; every resume window runs from it.

    A record is restored when it is open (``ended`` is None), well formed
    (a session id, a visitor, state ``"requested"`` or ``"live"``, at least
    one viewer slot, fields of the right types) and its visitor's newest open
    session (a room holds one session). Every other open record is returned in
    ``unrestorable``; so is one whose visitor already has a session in ``hub``.
    Ended records are skipped.
    """
    clock = time.monotonic() if clock is None else clock
    rest: list[SessionRecord] = []
    newest: dict[str, tuple[SessionRecord, _Parsed]] = {}
    for rec in records:
        if rec.ended is not None:
            continue
        parsed = _parse(rec)
        if parsed is None:
            log.warning("session %r of %r cannot be restored (state %r)", rec.id, rec.visitor, rec.state)
            rest.append(rec)
            continue
        kept = newest.get(rec.visitor)
        if kept is not None:
            if rec.started < kept[0].started:
                rest.append(rec)
                continue
            rest.append(kept[0])
        newest[rec.visitor] = (rec, parsed)
    rooms: list[Room] = []
    for rec, parsed in newest.values():
        existing = hub.rooms.get(rec.visitor)
        if existing is not None and existing.state is not None:
            rest.append(rec)
            continue
        room = existing or hub.room(rec.visitor)
        _rebuild(room, rec, parsed, clock)
        rooms.append(room)
    return Restored(rooms, rest)


def take_over(hub: Hub, rec: SessionRecord, epoch: int, clock: float | None = None) -> Room | None:
    """Cluster mode: rebuild ``rec``'s session in ``hub`` under the fencing ``epoch`` this node
    just claimed (its previous owner died or let it go). None when ``rec`` is not an open,
    well-formed record.

    As :func:`restore` does, but a visitor already connected here stays attached (and is asked
    for what the session needs: its consent again, or a keyframe), and the viewers' resume
    windows run from now."""
    parsed = _parse(rec) if rec.ended is None else None
    if parsed is None:
        return None
    clock = time.monotonic() if clock is None else clock
    room = hub.room(rec.visitor)
    visitor, left_at = room.visitor, room.visitor_left_at
    _rebuild(room, rec, parsed, clock)
    room.epoch = epoch
    if visitor is not None:
        room.attach_visitor(visitor)  # _rebuild detached it: this asks it again
    else:
        room.visitor_left_at = left_at if left_at is not None else clock
    return room


_STATES = {s.value: s for s in SessionState}


class _Parsed(NamedTuple):
    state: SessionState
    slots: list[ViewerSlot]
    agents: list[dict[str, str]]


def _strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _parse(rec: SessionRecord) -> _Parsed | None:
    """What a room needs from ``rec``, checked (records are JSON from disk); None if malformed."""
    state = _STATES.get(rec.state) if isinstance(rec.state, str) else None
    if state is None or not (rec.id and isinstance(rec.id, str) and rec.visitor and isinstance(rec.visitor, str)):
        return None
    if not isinstance(rec.started, int | float) or not (_strs(rec.allow) and _strs(rec.features_used)):
        return None
    if not (isinstance(rec.metadata, dict) and isinstance(rec.observer, dict) and _strs(rec.left_viewers)):
        return None
    if not (isinstance(rec.viewers, list) and rec.viewers and isinstance(rec.agents, list)):
        return None
    slots: list[ViewerSlot] = []
    for v in rec.viewers:
        if not isinstance(v, dict) or not v.get("id") or not _strs(v.get("permissions")):
            return None
        fields = (v["id"], v.get("agent_id"), v.get("agent_name"))
        if not all(isinstance(f, str) for f in fields):
            return None
        slots.append(ViewerSlot(v["id"], v["agent_id"], v["agent_name"], frozenset(v["permissions"])))
    agents: list[dict[str, str]] = []
    for a in rec.agents:
        if not isinstance(a, dict) or not (isinstance(a.get("id"), str) and isinstance(a.get("name"), str)):
            return None
        agents.append({"id": a["id"], "name": a["name"]})
    return _Parsed(state, slots, agents)


def _rebuild(room: Room, rec: SessionRecord, parsed: _Parsed, clock: float) -> None:
    room.session_id = rec.id
    room.state = parsed.state
    room.started = float(rec.started)
    room.epoch = _new_epoch(rec.epoch)
    room.seq = 0
    room._reset_log()
    room.latest = {}
    room.visitor = None
    room.visitor_left_at = clock
    room.visitor_allow = frozenset(rec.allow)
    room.viewers = []
    room.slots = {}
    for slot in parsed.slots:
        slot.left_at = clock
        room.slots[slot.viewer_id] = slot
    room.agents = parsed.agents
    room.features = set(rec.features_used)
    room.metadata = dict(rec.metadata)
    room.observer = dict(rec.observer)
    room.went_live = rec.went_live or parsed.state is SessionState.LIVE
    room.left = set(rec.left_viewers)


def _new_epoch(old: int) -> int:
    """A random u32 epoch (odd, as the hub makes them) other than ``old``."""
    while True:
        epoch = secrets.randbits(32) | 1
        if epoch != old:
            return epoch
