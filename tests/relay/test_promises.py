"""Documented promises against a real relay: replacement, waiting for an offline visitor, /stats."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import protocol as p

from .client import TIMEOUT, live_session, rest, run, viewer, visitor, watch_token

_ids = itertools.count(1)


def vid() -> str:
    return f"PROM{next(_ids):06d}"


async def _until(predicate: Any, what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``predicate`` (bounded) until it returns something true; that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert loop.time() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.02)


def test_a_second_visitor_socket_with_the_same_client_id_replaces_the_first_with_4510(relay: Any) -> None:
    async def scenario() -> None:
        v = vid()
        first, _ = await visitor(relay, v)
        second, welcome = await visitor(relay, v)
        assert welcome.client_id == v
        assert await first.closed() == p.CloseCode.REPLACED
        assert not p.should_reconnect(p.CloseCode.REPLACED)
        # The newer socket is the visitor now: it is asked for consent and its frames stream.
        view, _ = await viewer(relay, watch_token(relay, v))
        req = await second.expect(p.SessionRequest)
        await second.send(p.SessionAccept(session=req.session))
        assert await view.recv() == p.SessionAccept(session=req.session)
        await second.send(p.DomKeyframe(data=b"from the newer socket"))
        assert await view.recv() == p.DomKeyframe(data=b"from the newer socket")

    run(scenario())


def test_a_viewer_admitted_while_its_visitor_is_offline_waits_then_goes_live_when_it_returns_and_accepts(
    relay: Any,
) -> None:
    async def scenario() -> None:
        v = vid()
        gone, _ = await visitor(relay, v)
        await gone.close()

        def offline() -> bool:
            status, body = rest(relay, "GET", f"/api/visitors/{v}")
            return status == 200 and body["visitor"]["is_online"] is False

        await _until(offline, "the visitor is offline")
        view, welcome = await viewer(relay, watch_token(relay, v))
        assert welcome.session and welcome.client_id == v
        await view.send(p.Ping(t=1))
        assert await view.recv() == p.Pong(t=1)  # it waits: no SESSION_ACCEPT came before the answer
        back, again = await visitor(relay, v)
        assert again.session == ""  # not live yet: the visitor has not accepted
        req = await back.expect(p.SessionRequest)
        assert req.session == welcome.session and req.agent_name == "Ann Agent"
        await back.send(p.SessionAccept(session=req.session))
        assert await view.recv() == p.SessionAccept(session=welcome.session)
        await back.send(p.DomKeyframe(data=b"live"))
        assert await view.recv() == p.DomKeyframe(data=b"live")

    run(scenario())


STATS_KEYS = ("rooms", "sessions", "viewers", "visitors_online")


def _stats(relay: Any) -> dict[str, int]:
    status, body = rest(relay, "GET", "/stats", key=None)
    assert status == 200, body
    return dict(body)


def test_stats_count_rooms_sessions_viewers_and_visitors_as_they_change(relay_factory: Any) -> None:
    r = relay_factory().start()

    async def expect(what: str, **counts: int) -> None:
        await _until(lambda: {k: _stats(r)[k] for k in STATS_KEYS} == counts, f"{what}: {counts}")

    async def scenario() -> None:
        await expect("a fresh relay", rooms=0, sessions=0, viewers=0, visitors_online=0)
        a, _ = await visitor(r, "STATSA0001")
        await expect("visitor A online", rooms=1, sessions=0, viewers=0, visitors_online=1)
        b, _ = await visitor(r, "STATSB0001")
        await expect("visitor B online", rooms=2, sessions=0, viewers=0, visitors_online=2)
        one, _ = await viewer(r, watch_token(r, "STATSA0001"))
        req = await a.expect(p.SessionRequest)
        await expect("a viewer waits for A", rooms=2, sessions=1, viewers=1, visitors_online=2)
        await a.send(p.SessionAccept(session=req.session))
        two, _ = await viewer(r, watch_token(r, "STATSA0001"))
        await expect("a second viewer", rooms=2, sessions=1, viewers=2, visitors_online=2)
        await two.close()  # dropped, not left: its seat is kept for the resume window
        await expect("the second viewer dropped", rooms=2, sessions=1, viewers=1, visitors_online=2)
        await b.close()
        await expect("visitor B gone", rooms=1, sessions=1, viewers=1, visitors_online=1)
        await one.send(p.SessionEnd())
        assert await one.closed() == p.CloseCode.NORMAL
        held = "the first viewer left; the dropped one's seat holds the session"
        await expect(held, rooms=1, sessions=1, viewers=0, visitors_online=1)
        await a.close()
        await expect("visitor A gone; its session waits", rooms=1, sessions=1, viewers=0, visitors_online=0)
        errors = _stats(r)["protocol_errors"]
        bad, _ = await visitor(r, "STATSC0001")
        await bad.raw(b"\x01")
        assert await bad.closed() == p.CloseCode.PROTOCOL_ERROR
        await _until(lambda: _stats(r)["protocol_errors"] == errors + 1, "a protocol error counted")

    run(scenario())


def test_stats_count_control_frames_refused_for_want_of_a_permission(relay: Any) -> None:
    async def scenario() -> None:
        before = _stats(relay)["forbidden"]
        _, view, _ = await live_session(relay, vid(), allow_click=False)
        await view.send(p.Click(node=1, x=1, y=1))
        assert (await view.expect(p.Error)).code == "forbidden"  # refused and counted by now
        assert _stats(relay)["forbidden"] == before + 1

    run(scenario())
