"""The on-premise REST API (seed 000): every endpoint's success and error paths."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import protocol as p
from relay.core.grants import Signer

from .client import rest, run, visitor


async def _handled(peer: Any, t: int) -> None:
    """Everything ``peer`` sent before is handled once its PING is answered."""
    await peer.send(p.Ping(t=t))
    assert await peer.expect(p.Pong) == p.Pong(t=t)


async def _offline(relay: Any, short_id: str) -> dict[str, Any]:
    """Poll (bounded) until the relay reports ``short_id`` offline; its record."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        status, body = rest(relay, "GET", f"/api/visitors/{short_id}")
        if status == 200 and body["visitor"]["is_online"] is False:
            return dict(body["visitor"])
        assert loop.time() < deadline, f"{short_id} is still online: {body}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def people(relay: Any) -> dict[str, str]:
    """Two visitors with presence, seen one after the other (Ann, then Bob), both offline now."""

    async def connect() -> None:
        ann, _ = await visitor(
            relay,
            "APIANN0001",
            unique_id="user-17",
            identities=("Ann Example", "ann@example.com"),
            tags=("#vip",),
            lookup_code="4321",
        )
        await ann.send(
            p.Presence(
                url="https://shop.example/cart",
                unique_id="user-17",
                identities=("Ann Example", "ann@example.com"),
                tags=("#vip",),
                lookup_code="4321",
            )
        )
        await _handled(ann, 1)
        await ann.close()
        await _offline(relay, "APIANN0001")
        bob, _ = await visitor(relay, "APIBOB0001")
        await bob.send(p.Presence(url="https://shop.example/help", identities=("Bob",), lookup_code="9876"))
        await _handled(bob, 2)
        await bob.close()
        await _offline(relay, "APIBOB0001")

    run(connect())  # the store keeps the visitors
    return {"ann": "APIANN0001", "bob": "APIBOB0001"}


def test_requests_without_the_key_get_401_invalid_api_key(relay: Any, people: dict[str, str]) -> None:
    for key in (None, "wrong", relay.rest_key + "x", ""):
        status, body = rest(relay, "GET", "/api/visitors/list/latest", key=key)
        assert (status, body["status"], body["error"]) == (401, "error", "invalid_api_key")
        assert set(body) == {"status", "error", "message"} and body["message"]


def test_api_is_off_without_rest_key(relay_factory: Any) -> None:
    r = relay_factory(REST_KEY="").start()
    status, body = rest(r, "GET", "/api/visitors/list/latest", key="anything")
    assert status == 404 and body["status"] == "error" and body["error"] == "api_not_enabled"


def test_latest_lists_visitors_with_the_seed_fields(relay: Any, people: dict[str, str]) -> None:
    status, body = rest(relay, "GET", "/api/visitors/list/latest")
    assert status == 200 and body["status"] == "ok"
    ann = next(v for v in body["visitors"] if v["short_id"] == people["ann"])
    assert ann["unique_id"] == "user-17"
    assert ann["identities"] == ["Ann Example", "ann@example.com"]
    assert ann["tags"] == ["#vip"] and ann["lookup_code"] == "4321"
    assert ann["last_url"] == "https://shop.example/cart"
    assert ann["ip_address"] == "127.0.0.1"
    assert ann["first_seen_at"].endswith("Z") and ann["is_online"] is False
    for key in ("browser_name", "device_type", "last_seen_at", "is_in_session"):
        assert key in ann


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ann", {"APIANN0001"}),
        ("ANN@EXAMPLE", {"APIANN0001"}),
        ("4321", {"APIANN0001"}),
        ("code:9876", {"APIBOB0001"}),
        ("tag:#vip", {"APIANN0001"}),
        ("url:/help", {"APIBOB0001"}),
        ("unique_id:user-17", {"APIANN0001"}),
        ("shop.example online:false", {"APIANN0001", "APIBOB0001"}),
        ("shop.example online:true", set()),
        ("ann code:9876", set()),
        ("nobody-at-all", set()),
        ("100%_", set()),
    ],
)
def test_search_matches_free_text_and_field_terms(
    relay: Any, people: dict[str, str], query: str, expected: set[str]
) -> None:
    status, body = rest(relay, "GET", f"/api/visitors/list/search?search={quote(query)}")
    assert status == 200 and body["status"] == "ok"
    found = {v["short_id"] for v in body["visitors"]} & {"APIANN0001", "APIBOB0001"}
    assert found == expected


def test_empty_search_and_latest_list_online_visitors_first_then_the_most_recently_seen(
    relay: Any, people: dict[str, str]
) -> None:
    # Carl comes online, then Dave comes and goes: Dave was seen last, but Carl is online.
    async def arrive() -> None:
        carl, _ = await visitor(relay, "APICARL001")
        await _handled(carl, 3)
        dave, _ = await visitor(relay, "APIDAVE001")
        await _handled(dave, 4)
        await dave.close()
        await _offline(relay, "APIDAVE001")
        expected = ["APICARL001", "APIDAVE001", people["bob"], people["ann"]]  # from the order of events
        # The same order from each visitor's own record, as GET /api/visitors/<id> reports it.
        records = {}
        for short_id in expected:
            status, body = rest(relay, "GET", f"/api/visitors/{short_id}")
            assert status == 200
            records[short_id] = {k: v for k, v in body["visitor"].items() if k != "sessions"}
        assert records["APIDAVE001"]["last_seen_at"] > records["APICARL001"]["last_seen_at"]
        by_rule = sorted(records, key=lambda i: records[i]["last_seen_at"], reverse=True)
        by_rule.sort(key=lambda i: not records[i]["is_online"])  # stable: online first, then most recent
        assert by_rule == expected
        for query in ("/api/visitors/list/search?search=", "/api/visitors/list/search?search=%20%20"):
            for path in (query, "/api/visitors/list/latest"):
                status, body = rest(relay, "GET", path)
                assert status == 200 and body["status"] == "ok"
                listed = [v for v in body["visitors"] if v["short_id"] in records]
                assert [v["short_id"] for v in listed] == expected, path
                assert listed == [records[i] for i in expected], path

    run(arrive())


def test_get_visitor_returns_it_with_sessions_and_404_for_unknown(relay: Any, people: dict[str, str]) -> None:
    status, body = rest(relay, "GET", f"/api/visitors/{people['bob']}")
    assert status == 200 and body["visitor"]["short_id"] == people["bob"] and body["visitor"]["sessions"] == []
    status, body = rest(relay, "GET", "/api/visitors/NOSUCHVISITOR")
    assert (status, body["status"], body["error"]) == (404, "error", "not_found")


def _claims(relay: Any, url: str) -> dict[str, Any]:
    token = parse_qs(urlsplit(url).query)["token"][0]
    return Signer(relay.secret.encode()).verify("g", token)


def test_watch_url_signs_a_grant_with_the_seed_defaults(relay: Any, people: dict[str, str]) -> None:
    body = {"licenseToken": "token1234", "agent": {"id": "123", "name": "Joe Smith"}, "branding": {"naked": True}}
    status, answer = rest(relay, "POST", f"/api/visitors/{people['ann']}/watch_url", body)
    assert status == 200 and answer["status"] == "ok"
    url = answer["watch_url"]
    assert url.startswith(f"{relay.base}/screen?id={people['ann']}&token=")
    claims = _claims(relay, url)
    assert claims["v"] == people["ann"] and claims["a"] == "123" and claims["an"] == "Joe Smith"
    assert sorted(claims["p"]) == ["agent_redirect", "audio", "click", "draw", "scroll", "type"]
    assert claims["b"]["naked"] is True and claims["b"]["on_end_url"] is None
    assert time.time() + 500 < claims["e"] <= time.time() + 601


def test_watch_url_applies_permissions_observer_and_metadata(relay: Any, people: dict[str, str]) -> None:
    body = {
        "agent": {"id": 7, "name": "Ann"},
        "permissions": {"allow_click": False, "allow_console": True},
        "observer": {"id": "o1", "name": "Olga"},
        "metadata": {"ticket": "T-1", "priority": 2, "vip": True},
        "branding": {"on_end_url": "https://crm.example/done", "retry_url": "https://crm.example/retry"},
    }
    status, answer = rest(relay, "POST", f"/api/visitors/{people['ann']}/watch_url", body)
    assert status == 200, answer
    claims = _claims(relay, answer["watch_url"])
    assert "click" not in claims["p"] and "console" in claims["p"]
    assert claims["o"] == "o1" and claims["m"] == {"ticket": "T-1", "priority": 2, "vip": True}
    assert claims["b"]["on_end_url"] == "https://crm.example/done"


@pytest.mark.parametrize(
    ("body", "status", "error", "field"),
    [
        ({}, 400, "missing_field", "agent.id"),
        ({"agent": {"id": "1"}}, 400, "missing_field", "agent.name"),
        ({"agent": {"name": "x"}}, 400, "missing_field", "agent.id"),
        ({"agent": "joe"}, 400, "invalid_field", "agent"),
        ({"agent": {"id": "1", "name": "x"}, "metadata": {"a": {"nested": 1}}}, 400, "invalid_field", "metadata.a"),
        ({"agent": {"id": "1", "name": "x"}, "metadata": {"a": [1]}}, 400, "invalid_field", "metadata.a"),
        ({"agent": {"id": "1", "name": "x"}, "metadata": "flat?"}, 400, "invalid_field", "metadata"),
        (
            {"agent": {"id": "1", "name": "x"}, "permissions": {"allow_click": "yes"}},
            400,
            "invalid_field",
            "permissions.allow_click",
        ),
        (
            {"agent": {"id": "1", "name": "x"}, "permissions": {"allow_clik": True}},
            400,
            "unknown_field",
            "permissions.allow_clik",
        ),
        ({"agent": {"id": "1", "name": "x"}, "branding": {"naked": "true"}}, 400, "invalid_field", "branding.naked"),
        (
            {"agent": {"id": "1", "name": "x"}, "branding": {"on_end_url": "javascript:alert(1)"}},
            400,
            "invalid_field",
            "branding.on_end_url",
        ),
        ({"agent": {"id": "1", "name": "x"}, "licenseToken": 5}, 400, "invalid_field", "licenseToken"),
    ],
)
def test_watch_url_rejects_bad_bodies_naming_the_field(
    relay: Any, people: dict[str, str], body: Any, status: int, error: str, field: str
) -> None:
    got_status, answer = rest(relay, "POST", f"/api/visitors/{people['ann']}/watch_url", body)
    assert got_status == status
    assert answer["status"] == "error" and answer["error"] == error and answer["field"] == field
    assert field in answer["message"]


def test_watch_url_rejects_malformed_json_and_unknown_visitors(relay: Any, people: dict[str, str]) -> None:
    status, answer = rest(relay, "POST", f"/api/visitors/{people['ann']}/watch_url", b"{not json")
    assert (status, answer["error"]) == (400, "invalid_json")
    status, answer = rest(relay, "POST", f"/api/visitors/{people['ann']}/watch_url", b"[1, 2]")
    assert (status, answer["error"]) == (400, "invalid_json")
    body = {"agent": {"id": "1", "name": "x"}}
    status, answer = rest(relay, "POST", "/api/visitors/NOSUCHVISITOR/watch_url", body)
    assert (status, answer["error"]) == (404, "not_found")


def test_unknown_api_paths_and_methods_answer_in_the_seed_error_shape(relay: Any) -> None:
    status, answer = rest(relay, "GET", "/api/nothing/here")
    assert (status, answer["status"], answer["error"]) == (404, "error", "not_found")
    assert set(answer) == {"status", "error", "message"} and answer["message"]
    status, answer = rest(relay, "DELETE", "/api/visitors/list/latest")
    assert status == 405 and answer["status"] == "error"
