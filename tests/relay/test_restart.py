"""A restart is not an outage: open sessions come back from the store with the same id.

The first half runs :mod:`relay.core.restore` against the hub with no event
loop and no sockets. The second half restarts real relay processes (SIGTERM,
then SIGKILL) on the same port and data directory, with a visitor and a
viewer that reconnect as the SDK and the watch page do.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import protocol as p
from relay.core.hub import Hub, HubConfig, Peer, Room, SessionState, ViewerSlot
from relay.core.restore import RELAY_RESTART, Restored, record_of, restore
from relay.storage.base import SessionRecord

from .client import live_session, rest, run, viewer, visitor, wait_for

WINDOW = 60.0
T0 = 1000.0  # the hub's clock at the restart


# --- a hub with no sockets ------------------------------------------------------------------
class Link:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write(self, frame: bytes) -> None:
        self.sent.append(frame)

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str = "") -> None:
        self.closed = self.closed or (code, reason)

    def set_max_message(self, size: int) -> None:
        pass

    def messages(self) -> list[p.Message]:
        return [p.decode(f) for f in self.sent]


class History:
    """The listener: records the sessions that end; every other report is ignored."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []

    def __getattr__(self, report: str) -> Callable[..., None]:
        return lambda *args: None  # session_changed, keyframe_asked, ...

    def session_ended(self, room: Room, reason: str) -> None:
        self.ended.append((room.session_id, reason))

    def message(self, room: Room, peer: Peer, msg: p.Message) -> None:
        if isinstance(msg, p.SessionAccept):
            room.go_live()


def new_hub() -> tuple[Hub, History]:
    history = History()
    return Hub(HubConfig(resume_window=WINDOW), history), history


def connect_visitor(hub: Hub, room: Room) -> tuple[Peer, Link]:
    link = Link()
    peer = hub.new_peer("visitor", room.visitor_id, link, room)
    room.attach_visitor(peer)
    return peer, link


def connect_viewer(hub: Hub, room: Room, slot: ViewerSlot, epoch: int = 0, seq: int = 0) -> tuple[Peer, Link]:
    link = Link()
    peer = hub.new_peer("viewer", slot.viewer_id, link, room)
    room.admit_viewer(slot, peer, lambda _: None, epoch, seq)
    return peer, link


def before_the_restart() -> tuple[Room, SessionRecord]:
    """A live session with two viewers, a restricted page, metadata and history; and its record."""
    hub, _ = new_hub()
    room = hub.room("VIS0000001")
    room.metadata, room.observer = {"ticket": "T-1"}, {"id": "o1", "name": "Obs"}
    vis, _ = connect_visitor(hub, room)
    connect_viewer(hub, room, ViewerSlot("w1", "a1", "Ann", frozenset({"click", "scroll", "type"})))
    connect_viewer(hub, room, ViewerSlot("w2", "a2", "Bob", frozenset({"draw"})))
    gone, _ = connect_viewer(hub, room, ViewerSlot("w3", "a3", "Cy", frozenset()))
    room.from_visitor(vis, p.encode(p.SessionAccept(session=room.session_id)))
    room.detach_viewer(gone, leaving=True)  # Cy ended his part: his resume token is void
    room.set_visitor_allow(["click", "draw"])
    room.from_visitor(vis, p.encode(p.DomKeyframe(data=b"page")))
    room.from_visitor(vis, p.encode(p.DomDelta(data=b"change")))
    room.features.add("click")
    assert room.state is SessionState.LIVE and room.seq == 2
    return room, record_of(room)


def restored(records: list[SessionRecord]) -> tuple[Hub, History, Restored]:
    hub, history = new_hub()
    return hub, history, restore(hub, records, clock=T0)


def open_record(sid: str, visitor: str, state: str = "live", started: float = 10.0, **kw: Any) -> SessionRecord:
    viewers = kw.pop("viewers", [{"id": "w1", "agent_id": "a1", "agent_name": "Ann", "permissions": ["click"]}])
    return SessionRecord(sid, visitor, started=started, state=state, viewers=viewers, **kw)


def test_the_record_of_a_live_room_holds_what_a_restart_needs() -> None:
    room, rec = before_the_restart()
    assert (rec.id, rec.visitor, rec.state, rec.ended, rec.end_reason) == (
        room.session_id,
        "VIS0000001",
        "live",
        None,
        "",
    )
    assert rec.viewers == [
        {"id": "w1", "agent_id": "a1", "agent_name": "Ann", "permissions": ["click", "scroll", "type"]},
        {"id": "w2", "agent_id": "a2", "agent_name": "Bob", "permissions": ["draw"]},
    ]
    assert rec.allow == ["click", "draw"] and rec.epoch == room.epoch and rec.went_live
    assert rec.agents == [{"id": "a1", "name": "Ann"}, {"id": "a2", "name": "Bob"}, {"id": "a3", "name": "Cy"}]
    assert rec.left_viewers == ["w3"]
    ended = record_of(room, ended=2000.0, end_reason="visitor_gone")
    assert (ended.state, ended.ended, ended.end_reason, ended.went_live) == ("", 2000.0, "visitor_gone", True)


def test_a_live_session_is_rebuilt_with_its_id_slots_and_consent_and_a_new_epoch() -> None:
    before, rec = before_the_restart()
    hub, history, (rooms, unrestorable) = restored([rec])
    assert unrestorable == [] and history.ended == []
    (room,) = rooms
    assert hub.rooms == {"VIS0000001": room}
    assert (room.session_id, room.state, room.started) == (before.session_id, SessionState.LIVE, before.started)
    assert room.epoch != before.epoch and room.epoch % 2 == 1
    assert (room.seq, room.log, room.latest) == (0, [], {})
    assert {k: (s.agent_name, s.permissions, s.peer, s.left_at) for k, s in room.slots.items()} == {
        "w1": ("Ann", frozenset({"click", "scroll", "type"}), None, T0),
        "w2": ("Bob", frozenset({"draw"}), None, T0),
    }
    assert (room.visitor, room.visitor_left_at, room.viewers) == (None, T0, [])
    assert room.visitor_allow == frozenset({"click", "draw"})
    assert room.agents == before.agents and room.features == {"click"} and room.went_live
    assert room.left == {"w3"}
    assert (room.metadata, room.observer) == ({"ticket": "T-1"}, {"id": "o1", "name": "Obs"})
    assert record_of(room).viewers == rec.viewers  # saved again, it reads the same


def test_the_returning_visitor_is_asked_for_a_keyframe_and_the_returning_viewer_gets_it() -> None:
    before, rec = before_the_restart()
    hub, _, (rooms, _) = restored([rec])
    (room,) = rooms
    # The viewer comes back first, with its resume token's slot and the epoch and seq it had.
    _, wlink = connect_viewer(
        hub, room, ViewerSlot("w1", "a1", "Ann", frozenset({"click", "scroll", "type"})), before.epoch, 2
    )
    vis, vlink = connect_visitor(hub, room)
    assert not any(isinstance(m, p.SessionRequest) for m in vlink.messages())  # consent was given before
    room.from_visitor(vis, p.encode(p.DomDelta(data=b"stale")))  # a delta from before it knew: dropped
    assert len([m for m in vlink.messages() if isinstance(m, p.ResyncRequest)]) == 1  # asked once
    assert [type(m) for m in wlink.messages()] == [p.SessionAccept]  # nothing replayed: the log is empty
    room.from_visitor(vis, p.encode(p.DomKeyframe(data=b"page again")))
    frame = wlink.sent[-1]
    head = p.peek(frame)
    assert (head.kind, head.epoch, head.seq) == (p.Kind.DOM_KEYFRAME, room.epoch, 1)
    assert head.epoch != before.epoch
    # The other viewer, back later, gets the log from the new keyframe.
    _, late = connect_viewer(hub, room, ViewerSlot("w2", "a2", "Bob", frozenset({"draw"})), before.epoch, 2)
    assert [p.peek(f).kind for f in late.sent[1:]] == [p.Kind.DOM_KEYFRAME]


def test_a_session_waiting_for_consent_asks_the_returning_visitor_again() -> None:
    rec = open_record("s1", "VIS0000002", state="requested")
    hub, _, (rooms, _) = restored([rec])
    (room,) = rooms
    assert room.state is SessionState.REQUESTED and not room.went_live
    _, vlink = connect_visitor(hub, room)
    (request,) = [m for m in vlink.messages() if isinstance(m, p.SessionRequest)]
    assert (request.session, request.agent_name, request.permissions) == ("s1", "Ann", ("click",))


def test_the_sweep_ends_a_restored_session_nobody_came_back_to_when_the_window_passes() -> None:
    hub, history, _ = restored([open_record("s1", "VIS0000003")])
    hub.sweep(now=T0 + WINDOW - 1)
    assert history.ended == [] and "VIS0000003" in hub.rooms
    hub.sweep(now=T0 + WINDOW + 1)
    assert history.ended == [("s1", "visitor_gone")] and hub.rooms == {}


def test_the_sweep_ends_a_restored_session_whose_viewers_do_not_come_back() -> None:
    hub, history, (rooms, _) = restored([open_record("s1", "VIS0000004")])
    _, vlink = connect_visitor(hub, rooms[0])
    hub.sweep(now=T0 + WINDOW + 1)
    assert history.ended == [("s1", "agent_left")]
    assert p.SessionEnd(session="s1", reason="agent_left") in vlink.messages()


def test_records_that_cannot_be_rebuilt_are_handed_back_to_be_closed() -> None:
    good = open_record("good", "V1")
    bad = [
        open_record("legacy", "V2", state=""),  # made before restarts were kept
        open_record("odd", "V3", state="paused"),
        open_record("nobody", "V4", viewers=[]),
        open_record("broken", "V5", viewers=[{"id": "w1", "agent_id": 5, "agent_name": "A", "permissions": []}]),
        open_record("perm", "V6", viewers=[{"id": "w1", "agent_id": "a", "agent_name": "A", "permissions": "click"}]),
        open_record("", "V7"),
        open_record("agents", "V8", agents=[["a1", "Ann"]]),
        open_record("older", "V1", started=5.0),  # the visitor's newer session wins
    ]
    ended = open_record("ended", "V9")
    ended.ended = 20.0
    hub, _, (rooms, unrestorable) = restored([bad[-1], good, *bad[:-1], ended])
    assert [r.session_id for r in rooms] == ["good"] and list(hub.rooms) == ["V1"]
    assert sorted(r.id for r in unrestorable) == sorted(r.id for r in bad)
    assert RELAY_RESTART == "relay_restart"


def test_a_visitor_that_already_has_a_session_keeps_it() -> None:
    hub, _ = new_hub()
    room = hub.room("V1")
    connect_viewer(hub, room, ViewerSlot("w9", "a9", "Zed", frozenset()))
    current = room.session_id
    rooms, unrestorable = restore(hub, [open_record("stored", "V1")], clock=T0)
    assert rooms == [] and [r.id for r in unrestorable] == ["stored"] and room.session_id == current


# --- real relays ----------------------------------------------------------------------------
def stored_sessions(data_dir: Path) -> list[dict[str, Any]]:
    """The sessions table as the relay's store left it (read while it runs: WAL allows it)."""
    with contextlib.closing(sqlite3.connect(data_dir / "relay.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM sessions ORDER BY started")]


def restart_scenario(relay_factory: Any, tmp_path: Path, sig: signal.Signals, viewer_first: bool) -> None:
    data = tmp_path / "data"
    first = relay_factory(data_dir=data).start()
    short_id = f"RESTART{int(sig):03d}"
    seen: dict[str, Any] = {}

    async def before() -> None:
        vis, view, welcome = await live_session(first, short_id)
        await vis.send(p.DomKeyframe(data=b"page"))
        await vis.send(p.DomDelta(data=b"change"))
        await view.expect(p.DomKeyframe)
        head = p.peek(view.frames[-1])
        await view.expect(p.DomDelta)
        seen.update(session=welcome.session, resume=welcome.resume, epoch=head.epoch, seq=head.seq + 1)
        # What a crash must not lose: the live state is committed before the kill.
        await asyncio.to_thread(
            wait_for,
            lambda: [s for s in stored_sessions(data) if s["id"] == welcome.session and s["state"] == "live"],
            what="the live session in the store",
        )
        await asyncio.to_thread(first.stop, sig)
        expected = p.CloseCode.GOING_AWAY if sig == signal.SIGTERM else p.CloseCode.ABNORMAL
        assert await vis.closed() == expected
        assert await view.closed() == expected

    run(before())
    again = relay_factory(data_dir=data, port=first.port).start()

    async def after() -> None:
        async def viewer_back() -> tuple[Any, p.Welcome]:
            view, welcome = await viewer(again, seen["resume"], seen["epoch"], seen["seq"])
            assert welcome.session == seen["session"] and welcome.client_id == short_id
            assert welcome.epoch != seen["epoch"]
            await view.expect(p.SessionAccept)
            return view, welcome

        if viewer_first:
            view, vwelcome = await viewer_back()
        vis, welcome = await visitor(again, short_id)
        assert welcome.session == seen["session"]  # the SDK continues the session without asking
        await vis.expect(p.ResyncRequest)
        await vis.send(p.DomKeyframe(data=b"page after restart"))
        if not viewer_first:
            view, vwelcome = await viewer_back()
        key = await view.expect(p.DomKeyframe)
        assert key.data == b"page after restart"
        head = p.peek(view.frames[-1])
        assert (head.epoch, head.seq) == (vwelcome.epoch, 1)
        await vis.send(p.DomDelta(data=b"typed after restart"))
        delta = await view.expect(p.DomDelta)
        assert delta.data == b"typed after restart" and p.peek(view.frames[-1]).seq == 2

    run(after())
    status, body = rest(again, "GET", f"/api/visitors/{short_id}")
    assert status == 200
    (session,) = body["visitor"]["sessions"]  # the same session, not a new one
    assert session["id"] == seen["session"] and session["ended_at"] is None


def test_after_a_sigterm_restart_visitor_and_viewer_resume_the_same_session(relay_factory: Any, tmp_path: Path) -> None:
    restart_scenario(relay_factory, tmp_path, signal.SIGTERM, viewer_first=True)


def test_after_a_sigkill_restart_visitor_and_viewer_resume_the_same_session(relay_factory: Any, tmp_path: Path) -> None:
    restart_scenario(relay_factory, tmp_path, signal.SIGKILL, viewer_first=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restored_session_nobody_returns_to_is_closed_with_a_reason_when_the_window_passes(
    relay_factory: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    first = relay_factory(data_dir=data, RESUME_WINDOW="1").start()
    short_id = "WINDOW0001"

    async def before() -> str:
        _, _, welcome = await live_session(first, short_id)
        await asyncio.to_thread(
            wait_for, lambda: [s for s in stored_sessions(data) if s["state"] == "live"], what="the live session"
        )
        await asyncio.to_thread(first.stop, sig)
        return welcome.session

    session_id = run(before())
    assert [s["ended"] for s in stored_sessions(data)] == [None]
    again = relay_factory(data_dir=data, port=first.port, RESUME_WINDOW="1").start()

    def ended() -> Any:
        _, body = rest(again, "GET", f"/api/visitors/{short_id}")
        return body["visitor"]["sessions"]

    (session,) = wait_for(lambda: [s for s in ended() if s["ended_at"]], what="the session to end")
    assert session["id"] == session_id
    (row,) = stored_sessions(data)
    assert row["ended"] is not None and row["end_reason"] in ("visitor_gone", "agent_left") and row["state"] == ""
    assert [s for s in stored_sessions(data) if s["ended"] is None] == []


def test_an_open_session_that_cannot_be_restored_is_closed_at_start_up(relay_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = relay_factory(data_dir=data).start()
    run(visitor(first, "LEGACY0001"))
    first.stop(signal.SIGTERM)
    with contextlib.closing(sqlite3.connect(data / "relay.sqlite3")) as db, db:
        # A session left open by a version that kept no restart state.
        db.execute("INSERT INTO sessions (id, visitor, started) VALUES ('legacy1', 'LEGACY0001', ?)", (time.time(),))
    again = relay_factory(data_dir=data, port=first.port).start()
    (row,) = stored_sessions(data)
    assert row["ended"] is not None and row["end_reason"] == "relay_restart"
    _, body = rest(again, "GET", "/api/visitors/LEGACY0001")
    assert body["visitor"]["sessions"][0]["ended_at"] is not None
