"""The live-session API (seed 001) on a single node: shapes as in the seed, CORS, cookie, stop.

(tests/cluster/test_cluster.py checks the same calls answered from the node that does not
serve the session.)
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import protocol as p

from .client import live_session, run, visitor


def call(
    relay: Any, method: str, path: str, body: Any = None, origin: str | None = "relay", **headers: str
) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) of ``method {BASE}/rest/live{path}``; ``origin`` "relay" is the relay's own."""
    hdrs = {"Content-Type": "application/json", **headers}
    if origin == "relay":
        hdrs["Origin"] = relay.origin
    elif origin is not None:
        hdrs["Origin"] = origin
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{relay.base}/rest/live{path}", data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, r.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


def node(relay: Any) -> str:
    """The relay's NODE_NAME (the hostname by default), as /stats says."""
    with urllib.request.urlopen(f"{relay.base}/stats", timeout=10) as r:
        return str(json.loads(r.read())["node"])


def test_a_visitor_starts_a_session_gets_a_9_digit_token_and_a_sticky_cookie(relay: Any) -> None:
    async def scenario() -> None:
        vis, _ = await visitor(relay, "LIVEAPI001")
        await asyncio.sleep(0.1)
        status, headers, body = call(relay, "POST", "/sessions", {"userToken": "LIVEAPI001"})
        assert status == 200, body
        assert set(body) == {"sessionToken", "sessionServerName"}
        assert len(body["sessionToken"]) == 9 and body["sessionToken"].isdigit()
        assert body["sessionServerName"] == node(relay)
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"gcbSessionServer={node(relay)};"), cookie
        assert headers["Access-Control-Allow-Origin"] == relay.origin
        # the token names the session: GET by it, and the console finds the visitor by it
        status, headers, got = call(relay, "GET", f"/sessions/{body['sessionToken']}")
        assert status == 200 and got == {"sessionToken": body["sessionToken"], "sessionServerName": node(relay)}
        from .client import rest

        status, found = rest(relay, "GET", f"/api/live_sessions/{body['sessionToken']}")
        assert status == 200 and found["visitor"]["short_id"] == "LIVEAPI001"
        assert rest(relay, "GET", "/api/live_sessions/123456789")[0] == 404
        await vis.close()

    run(scenario())


def test_get_session_is_refused_without_an_allowed_origin_or_referer(relay: Any) -> None:
    async def scenario() -> None:
        await visitor(relay, "LIVEAPI002")
        await asyncio.sleep(0.1)
        status, _, body = call(relay, "GET", "/sessions/LIVEAPI002", origin=None)
        assert status == 403 and body["error"] == "origin_not_allowed"
        status, _, body = call(relay, "GET", "/sessions/LIVEAPI002", origin="https://evil.example")
        assert status == 403
        status, headers, body = call(relay, "GET", "/sessions/LIVEAPI002", origin=None, Referer=f"{relay.origin}/x?y")
        assert status == 200 and body["sessionServerName"] == node(relay)
        assert "sessionServerUrl" not in body  # NODE_URL is unset
        status, headers, _ = call(relay, "OPTIONS", "/sessions")
        assert status == 204 and "POST" in headers["Access-Control-Allow-Methods"]

    run(scenario())


def test_unknown_ids_and_offline_visitors_are_404_or_409_with_cors(relay: Any) -> None:
    status, headers, body = call(relay, "GET", "/sessions/999999999")
    assert status == 404 and body["error"] == "not_found"
    assert headers["Access-Control-Allow-Origin"] == relay.origin  # the page can read why
    status, _, body = call(relay, "POST", "/sessions", {"userToken": "NOSUCHVISITOR"})
    assert status == 404
    status, _, body = call(relay, "POST", "/sessions", {"userToken": "../x"})
    assert status == 400 and body["field"] == "userToken"
    status, _, body = call(relay, "GET", "/users/NOSUCHVISITOR/session/stop")
    assert status == 404
    status, _, body = call(relay, "POST", "/sessions", "x" * 10)  # a JSON string, not an object
    assert status == 400


def test_stop_ends_the_live_session_and_answers_its_times_in_ms(relay: Any) -> None:
    async def scenario() -> None:
        vis, view, _ = await live_session(relay, "LIVEAPI003")
        status, _, body = call(relay, "GET", "/sessions/LIVEAPI003")
        assert status == 200 and len(body["sessionToken"]) == 16  # no code: the session id
        status, _, body = call(relay, "GET", "/users/LIVEAPI003/session/stop")
        assert status == 200, body
        assert set(body) == {"activationTime", "deactivationTime"}
        assert 0 < body["activationTime"] <= body["deactivationTime"] and body["activationTime"] > 1e12
        end = await vis.expect(p.SessionEnd)
        assert end.reason == "stopped"
        assert await view.closed() == p.CloseCode.SESSION_ENDED
        status, _, _ = call(relay, "GET", "/users/LIVEAPI003/session/stop")
        assert status == 404  # nothing live any more

    run(scenario())
