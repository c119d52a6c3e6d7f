"""The Upscope cloud REST API v1.1 (seed 002): every endpoint, field and documented error."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import protocol as p
from relay.core.grants import Signer

from ..conftest import base_env, free_port
from .client import live_session, run, visitor
from .schemathesis_run import schemathesis
from .test_readme import _section, _shell_blocks

V = "/api/v1.1"
VISITOR_KEYS = {
    "api_key",
    "browser_name",
    "device_name",
    "device_type",
    "first_seen_at",
    "identities",
    "integration",
    "ip_address",
    "is_in_session",
    "is_online",
    "js_configuration",
    "last_seen_at",
    "last_url",
    "location_city",
    "location_country",
    "location_country_name",
    "lookup_code",
    "short_id",
    "tags",
    "unique_id",
    "_type",
}
SESSION_KEYS = {
    "id",
    "length_seconds",
    "formatted_length",
    "call_length_seconds",
    "formatted_call_length",
    "started_at",
    "ended_at",
    "went_live",
    "features_used",
    "visitor_id",
    "team",
    "agents",
    "metadata",
    "_type",
}
AGENT = {"id": "ext-123", "name": "Joe Smith"}


def cloud(relay: Any, method: str, path: str, body: Any = None, key: str | None = "default") -> tuple[int, Any]:
    """A call with ``X-Api-Key``; the answer decoded as JSON, else as text."""
    headers = {"Content-Type": "application/json"}
    if key == "default":
        key = relay.rest_key
    if key is not None:
        headers["X-Api-Key"] = key
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"{relay.base}{V}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


async def _handled(peer: Any, t: int) -> None:
    await peer.send(p.Ping(t=t))
    assert await peer.expect(p.Pong) == p.Pong(t=t)


async def _until(relay: Any, path: str, check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body = cloud(relay, "GET", path)
        if check(status, body):
            return body
        assert time.monotonic() < deadline, (path, status, body)
        await asyncio.sleep(0.02)


def _offline(status: int, body: Any) -> bool:
    return status == 200 and body["visitor"]["is_online"] is False


@pytest.fixture(scope="module")
def ann(relay: Any) -> str:
    """A visitor with presence and a pageview, offline now."""

    async def connect() -> None:
        peer, _ = await visitor(relay, "CLOUDANN01")
        await peer.send(
            p.Presence(
                url="https://shop.example/cart",
                unique_id="user-42",
                identities=("Ann Cloud", "ann@cloud.example"),
                tags=("#customer",),
                lookup_code="5555",
            )
        )
        if hasattr(p, "Pageview"):
            await peer.send(p.Pageview(url="https://shop.example/cart", title="Cart"))
        await _handled(peer, 1)
        await peer.close()
        await _until(relay, "/visitors/CLOUDANN01.json", _offline)

    run(connect())
    return "CLOUDANN01"


# --- auth ------------------------------------------------------------------------------------
CALLS = [
    ("GET", "/usage.json", None),
    ("GET", "/list.json?search=x", None),
    ("GET", "/visitors/CLOUDANN01.json", None),
    ("DELETE", "/visitors/CLOUDANN01.json", None),
    ("DELETE", "/visitors.json?all=true", None),
    ("POST", "/visitors/CLOUDANN01/watch_url.json", {"agent": AGENT}),
    ("DELETE", "/visitors/CLOUDANN01/session", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CALLS)
def test_every_endpoint_needs_the_x_api_key_401_invalid_api_key(
    relay: Any, ann: str, method: str, path: str, body: Any
) -> None:
    for key in (None, "", "wrong", relay.rest_key + "x", relay.rest_key.upper()):
        status, answer = cloud(relay, method, path, body, key=key)
        assert (status, answer["status"], answer["error"]) == (401, "error", "invalid_api_key"), key
        assert set(answer) == {"status", "error", "message"} and "X-Api-Key" in answer["message"]
    # The on-premise API's header is not this API's.
    headers = {"Authorization": relay.rest_key}
    req = urllib.request.Request(f"{relay.base}{V}/usage.json", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    caught.value.close()
    assert caught.value.code == 401
    assert cloud(relay, "GET", "/visitors/CLOUDANN01.json")[0] == 200  # nothing was deleted


def test_the_api_is_off_without_rest_key(relay_factory: Any) -> None:
    r = relay_factory(REST_KEY="").start()
    for method, path, body in CALLS:
        status, answer = cloud(r, method, path, body, key="anything")
        assert (status, answer["error"]) == (404, "api_not_enabled"), path


# --- usage.json ------------------------------------------------------------------------------
def test_usage_has_the_seed_shape_and_counts_from_the_store(relay: Any, ann: str) -> None:
    status, body = cloud(relay, "GET", "/usage.json")
    assert status == 200 and set(body) == {"usage"}
    usage = body["usage"]
    assert {k: set(v) for k, v in usage.items()} == {
        "visitors": {"online_now", "last_24_hrs", "last_30_days"},
        "agents": {"today", "last_30_days"},
        "session_counts": {"now", "today", "last_30_days"},
        "session_seconds": {"today", "last_30_days"},
    }
    assert all(isinstance(n, int) and n >= 0 for group in usage.values() for n in group.values())
    assert usage["visitors"]["last_24_hrs"] >= 1  # Ann

    async def live() -> None:
        await live_session(relay, "CLOUDUSE01")
        now = (await _until(relay, "/usage.json", lambda s, b: b["usage"]["session_counts"]["now"] >= 1))["usage"]
        assert now["visitors"]["online_now"] >= 1
        assert now["session_counts"]["today"] >= 1 and now["session_counts"]["last_30_days"] >= 1
        assert now["agents"]["today"] >= 1 and now["agents"]["last_30_days"] >= 1

    run(live())


# --- list.json -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("ann", True),
        ("ANN@CLOUD", True),
        ("5555", True),
        ("code:5555", True),
        ("tag:#customer", True),
        ("unique_id:user-42", True),
        ("url:/cart online:false", True),
        ("ann online:true", False),
        ("nobody-at-all", False),
        ("", True),
    ],
)
def test_list_searches_and_answers_visitors_with_every_attribute(relay: Any, ann: str, query: str, found: bool) -> None:
    status, body = cloud(relay, "GET", f"/list.json?search={quote(query)}")
    assert status == 200 and set(body) == {"status", "visitors"} and body["status"] == "ok"
    mine = [v for v in body["visitors"] if v["short_id"] == ann]
    assert bool(mine) is found
    for v in body["visitors"]:
        assert set(v) == VISITOR_KEYS and v["_type"] == "visitor"


def test_list_without_search_is_the_latest(relay: Any, ann: str) -> None:
    status, body = cloud(relay, "GET", "/list.json")
    assert status == 200 and ann in {v["short_id"] for v in body["visitors"]}


@pytest.mark.parametrize("query", ["bogus:1", "online:maybe", "code:", "x" * 513])
def test_list_refuses_a_bad_search_400_invalid_search(relay: Any, query: str) -> None:
    status, body = cloud(relay, "GET", f"/list.json?search={quote(query)}")
    assert (status, body["status"], body["error"], body["field"]) == (400, "error", "invalid_search", "search")


# --- visitors/:id.json -----------------------------------------------------------------------
def test_get_visitor_has_every_seed_attribute(relay: Any, ann: str) -> None:
    status, body = cloud(relay, "GET", f"/visitors/{ann}.json")
    assert status == 200 and set(body) == {"status", "visitor"} and body["status"] == "ok"
    v = body["visitor"]
    assert set(v) == VISITOR_KEYS | {"sessions"}
    assert v["short_id"] == ann and v["_type"] == "visitor"
    assert v["unique_id"] == "user-42" and v["identities"] == ["Ann Cloud", "ann@cloud.example"]
    assert v["tags"] == ["#customer"] and v["lookup_code"] == "5555"
    assert v["last_url"] == "https://shop.example/cart" and v["ip_address"] == "127.0.0.1"
    assert v["device_type"] in ("desktop", "console", "mobile", "tablet", "smarttv", "wearable", "embedded")
    assert v["first_seen_at"].endswith("Z") and v["last_seen_at"] >= v["first_seen_at"]
    assert v["is_online"] is False and v["is_in_session"] is False and v["js_configuration"] is False
    unknown = ("api_key", "device_name", "integration", "location_city", "location_country", "location_country_name")
    assert all(v[k] is None for k in unknown)
    assert v["sessions"] == [] and "history" not in v


def test_with_history_adds_the_pageviews(relay: Any, ann: str) -> None:
    status, body = cloud(relay, "GET", f"/visitors/{ann}.json?with_history=true")
    assert status == 200
    history = body["visitor"]["history"]
    assert isinstance(history, list)
    if hasattr(p, "Pageview"):
        assert history and history[0]["url"] == "https://shop.example/cart" and history[0]["title"] == "Cart"
        assert history[0]["_type"] == "pageview" and history[0]["at"].endswith("Z")
    assert "history" not in cloud(relay, "GET", f"/visitors/{ann}.json?with_history=false")[1]["visitor"]


def test_a_visitor_s_sessions_have_the_seed_fields(relay: Any) -> None:
    async def scenario() -> None:
        vis, view, _ = await live_session(relay, "CLOUDSES01")
        body = await _until(relay, "/visitors/CLOUDSES01.json", lambda s, b: b["visitor"]["is_in_session"])
        assert body["visitor"]["is_online"] is True
        assert cloud(relay, "DELETE", "/visitors/CLOUDSES01/session") == (200, "ok")
        await view.expect(p.SessionEnd)
        await vis.close()
        await _until(relay, "/visitors/CLOUDSES01.json", _offline)

    run(scenario())
    status, body = cloud(relay, "GET", "/visitors/CLOUDSES01.json")
    assert status == 200
    (session,) = body["visitor"]["sessions"]
    assert set(session) == SESSION_KEYS and session["_type"] == "session"
    assert session["visitor_id"] == "CLOUDSES01" and session["went_live"] is True
    assert session["call_length_seconds"] == 0 and session["formatted_call_length"] == "-"
    assert isinstance(session["length_seconds"], int) and isinstance(session["formatted_length"], str)
    assert session["started_at"].endswith("Z") and isinstance(session["features_used"], list)
    assert session["team"] == {"id": None, "domain": "127.0.0.1", "_type": "team"}
    assert session["agents"] == [{"id": None, "name": "Ann Agent", "agent_identifier": "a1", "_type": "external_agent"}]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/visitors/NOSUCHVISITOR.json", None),
        ("DELETE", "/visitors/NOSUCHVISITOR.json", None),
        ("POST", "/visitors/NOSUCHVISITOR/watch_url.json", {"agent": AGENT}),
        ("DELETE", "/visitors/NOSUCHVISITOR/session", None),
    ],
)
def test_an_unknown_visitor_is_404_not_found(relay: Any, method: str, path: str, body: Any) -> None:
    status, answer = cloud(relay, method, path, body)
    assert (status, answer["status"], answer["error"]) == (404, "error", "not_found")


# --- watch_url.json --------------------------------------------------------------------------
def _claims(relay: Any, url: str) -> dict[str, Any]:
    token = parse_qs(urlsplit(url).query)["token"][0]
    return Signer(relay.secret.encode()).verify("g", token)


def test_watch_url_takes_the_seed_options(relay: Any, ann: str) -> None:
    body = {
        "branding": {
            "naked": True,
            "retry_url": "https://your-website.com/admin/screenshare/XYZ",
            "no_bottom_bar": False,
            "on_end_url": "https://your-website.com/admin/screenshare/XYZ/ended",
            "metadata": {"from": "branding"},
        },
        "permissions": {"allow_click": False, "allow_console": True},
        "agent": {"id": "123", "name": "Joe Smith"},
        "metadata": {"key": "value", "n": 2, "b": True},
    }
    status, answer = cloud(relay, "POST", f"/visitors/{ann}/watch_url.json", body)
    assert status == 200 and set(answer) == {"watch_url"}, answer
    url = answer["watch_url"]
    assert url.startswith(f"{relay.base}/screen?id={ann}&token=")
    claims = _claims(relay, url)
    assert claims["v"] == ann and claims["a"] == "123" and claims["an"] == "Joe Smith"
    assert "click" not in claims["p"] and "console" in claims["p"]
    assert claims["b"]["naked"] is True and claims["b"]["no_bottom_bar"] is False
    assert claims["b"]["on_end_url"] == "https://your-website.com/admin/screenshare/XYZ/ended"
    assert claims["b"]["retry_url"] == "https://your-website.com/admin/screenshare/XYZ"
    assert claims["m"] == {"from": "branding", "key": "value", "n": 2, "b": True}


def test_watch_url_defaults_are_the_seed_s(relay: Any, ann: str) -> None:
    status, answer = cloud(relay, "POST", f"/visitors/{ann}/watch_url.json", {"agent": AGENT})
    assert status == 200
    claims = _claims(relay, answer["watch_url"])
    assert sorted(claims["p"]) == ["agent_redirect", "audio", "click", "draw", "scroll", "type"]  # not console
    assert claims["b"]["naked"] is False and claims["b"]["retry_url"] is None and claims["b"]["on_end_url"] is None


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ({}, "missing_field", "agent.id"),
        ({"agent": {"id": "1"}}, "missing_field", "agent.name"),
        ({"agent": {"name": "x"}}, "missing_field", "agent.id"),
        ({"agent": AGENT, "permissions": {"allow_clik": True}}, "unknown_field", "permissions.allow_clik"),
        ({"agent": AGENT, "branding": {"naked": "yes"}}, "invalid_field", "branding.naked"),
        ({"agent": AGENT, "metadata": {"a": {"nested": 1}}}, "invalid_field", "metadata.a"),
        ({"agent": AGENT, "observer": {"id": "o"}}, "unknown_field", "observer"),
    ],
)
def test_watch_url_refuses_bad_bodies_naming_the_field(relay: Any, ann: str, body: Any, error: str, field: str) -> None:
    status, answer = cloud(relay, "POST", f"/visitors/{ann}/watch_url.json", body)
    assert (status, answer["status"], answer["error"], answer["field"]) == (400, "error", error, field)


def test_watch_url_is_402_past_max_concurrent_sessions(relay_factory: Any) -> None:
    r = relay_factory(MAX_CONCURRENT_SESSIONS="1").start()

    async def scenario() -> None:
        await visitor(r, "CLOUDLIM02")
        status, answer = cloud(r, "POST", "/visitors/CLOUDLIM02/watch_url.json", {"agent": AGENT})
        assert status == 200, answer  # no session yet
        await live_session(r, "CLOUDLIM01")
        status, answer = cloud(r, "POST", "/visitors/CLOUDLIM02/watch_url.json", {"agent": AGENT})
        assert (status, answer["status"], answer["error"]) == (402, "error", "payment_required")
        assert "MAX_CONCURRENT_SESSIONS" in answer["message"]
        status, answer = cloud(r, "POST", "/visitors/CLOUDLIM01/watch_url.json", {"agent": AGENT})
        assert status == 200, answer  # a second agent joins the session there is
        assert cloud(r, "DELETE", "/visitors/CLOUDLIM01/session") == (200, "ok")
        status, answer = cloud(r, "POST", "/visitors/CLOUDLIM02/watch_url.json", {"agent": AGENT})
        assert status == 200, answer

    run(scenario())


# --- visitors/:id/session --------------------------------------------------------------------
def test_delete_session_ends_the_live_session_and_is_ok_without_one(relay: Any, ann: str) -> None:
    async def scenario() -> None:
        vis, view, _ = await live_session(relay, "CLOUDEND01")
        assert cloud(relay, "DELETE", "/visitors/CLOUDEND01/session") == (200, "ok")
        assert isinstance(await view.expect(p.SessionEnd), p.SessionEnd)
        assert isinstance(await vis.expect(p.SessionEnd), p.SessionEnd)
        await _until(relay, "/visitors/CLOUDEND01.json", lambda s, b: not b["visitor"]["is_in_session"])
        assert cloud(relay, "DELETE", "/visitors/CLOUDEND01/session") == (200, "ok")  # none active

    run(scenario())
    assert cloud(relay, "DELETE", f"/visitors/{ann}/session") == (200, "ok")  # offline, never in one


# --- deleting visitors -----------------------------------------------------------------------
def test_delete_visitor_removes_it_and_its_sessions(relay: Any) -> None:
    async def scenario() -> None:
        vis, view, _ = await live_session(relay, "CLOUDDEL01")
        await _until(relay, "/visitors/CLOUDDEL01.json", lambda s, b: b["visitor"]["is_in_session"])
        assert cloud(relay, "DELETE", "/visitors/CLOUDDEL01/session") == (200, "ok")
        await view.expect(p.SessionEnd)
        await vis.close()
        await _until(relay, "/visitors/CLOUDDEL01.json", _offline)

    run(scenario())
    assert cloud(relay, "DELETE", "/visitors/CLOUDDEL01.json") == (200, {"status": "ok"})
    assert cloud(relay, "GET", "/visitors/CLOUDDEL01.json")[0] == 404
    assert cloud(relay, "DELETE", "/visitors/CLOUDDEL01.json")[0] == 404
    status, body = cloud(relay, "GET", "/list.json?search=CLOUDDEL01")
    assert status == 200 and body["visitors"] == []


def test_delete_visitor_ends_its_live_session_first(relay: Any) -> None:
    async def scenario() -> None:
        _vis, view, _ = await live_session(relay, "CLOUDDEL02")
        assert cloud(relay, "DELETE", "/visitors/CLOUDDEL02.json") == (200, {"status": "ok"})
        assert isinstance(await view.expect(p.SessionEnd), p.SessionEnd)

    run(scenario())


def test_delete_all_removes_offline_visitors_only_in_the_background(relay_factory: Any) -> None:
    r = relay_factory().start()

    async def scenario() -> None:
        for short_id in ("CLOUDOFF01", "CLOUDOFF02"):
            peer, _ = await visitor(r, short_id)
            await _handled(peer, 1)
            await peer.close()
            await _until(r, f"/visitors/{short_id}.json", _offline)
        online, _ = await visitor(r, "CLOUDONL01")
        await _handled(online, 2)
        await _until(r, "/visitors/CLOUDONL01.json", lambda s, b: s == 200)
        assert cloud(r, "DELETE", "/visitors.json?all=true") == (200, {"status": "ok"})
        for short_id in ("CLOUDOFF01", "CLOUDOFF02"):
            await _until(r, f"/visitors/{short_id}.json", lambda s, b: s == 404)
        status, body = cloud(r, "GET", "/visitors/CLOUDONL01.json")
        assert status == 200 and body["visitor"]["is_online"] is True

    run(scenario())


@pytest.mark.parametrize("query", ["", "?all=false", "?all=1", "?all="])
def test_delete_all_needs_all_true(relay: Any, query: str) -> None:
    status, body = cloud(relay, "DELETE", f"/visitors.json{query}")
    assert (status, body["status"], body["error"], body["field"]) == (400, "error", "invalid_field", "all")


# --- cluster mode ---------------------------------------------------------------------------
@pytest.mark.cluster
def test_in_cluster_mode_402_counts_every_node_and_a_session_is_ended_from_any_node(tmp_path: Path) -> None:
    from ..cluster.harness import start_nodes, stop_nodes
    from ..cluster.test_cluster import _session
    from ..redisprocs import RedisServer

    server = RedisServer(tmp_path / "redis")
    nodes: list[Any] = []
    try:
        nodes = start_nodes(tmp_path, 2, server.url, MAX_CONCURRENT_SESSIONS="1")
        a, b = nodes

        async def scenario() -> None:
            await visitor(b, "CLUSTCLD02")  # on node2, in no session
            await _until(b, "/visitors/CLUSTCLD02.json", lambda s, _: s == 200)
            vpeer, wpeer, _ = await _session(a, nodes, "CLUSTCLD01", server)  # served by node1
            watch = ("POST", "/visitors/CLUSTCLD02/watch_url.json", {"agent": AGENT})
            deadline = time.monotonic() + 5  # node2 counts node1's session from its heartbeat (every second)
            while (answer := cloud(b, *watch))[0] != 402:
                assert answer[0] == 200 and time.monotonic() < deadline, answer
                await asyncio.sleep(0.1)
            assert answer[1]["error"] == "payment_required"
            status, answer = cloud(b, "POST", "/visitors/CLUSTCLD01/watch_url.json", {"agent": AGENT})
            assert status == 200, answer  # joining node1's session adds none
            assert cloud(b, "DELETE", "/visitors/CLUSTCLD01/session") == (200, "ok")  # forwarded to node1
            assert (await vpeer.expect(p.SessionEnd)).reason == "stopped"
            assert await wpeer.closed() == p.CloseCode.SESSION_ENDED
            deadline = time.monotonic() + 5
            while (answer := cloud(b, *watch))[0] != 200:
                assert answer[0] == 402 and time.monotonic() < deadline, answer
                await asyncio.sleep(0.1)

        run(scenario())
    finally:
        stop_nodes(nodes)
        server.stop()


# --- README ---------------------------------------------------------------------------------
def test_the_readme_walkthrough_runs_when_pasted_in_order(relay_factory: Any) -> None:
    blocks = _shell_blocks(_section("Upscope cloud API v1.1"))
    assert blocks and blocks[0].startswith("export K="), "the walkthrough sets the key first"
    key = re.search(r"\bK=(\S+)", blocks[0])
    assert key is not None
    r = relay_factory(REST_KEY=key.group(1)).start()
    script = ["set -euo pipefail"]
    for n, block in enumerate(blocks):
        script += [block.replace("http://127.0.0.1:5002", r.base), f"printf '\\n::block {n} done\\n'"]

    async def scenario() -> str:
        await visitor(r, "READMECLD1")
        await _until(r, "/visitors/READMECLD1.json", lambda s, b: s == 200)
        bash = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "\n".join(script),
            env=base_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(bash.communicate(), 60)
        assert bash.returncode == 0, (out.decode(), err.decode())
        return out.decode()

    out = run(scenario())
    outputs = re.split(r"\n::block \d+ done\n", out)
    assert len(outputs) == len(blocks) + 1 and '"status":"error"' not in out
    assert outputs[0].startswith('{"usage":{"visitors":{"online_now":1,')
    assert '"short_id":"READMECLD1"' in outputs[1] and '"history":[' in outputs[1]
    assert '{"watch_url":"' + r.base + "/screen?id=READMECLD1&token=" in outputs[2]
    assert '}ok{"status":"ok"}' in outputs[2]


# --- the document and schemathesis -----------------------------------------------------------
def test_the_document_declares_the_surface_with_its_key_and_errors(relay: Any) -> None:
    with urllib.request.urlopen(f"{relay.base}/api/openapi.json", timeout=10) as answer:
        document = json.loads(answer.read())
    assert document["components"]["securitySchemes"]["cloudApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
    }
    ops = {(m, path) for path, methods in document["paths"].items() for m in methods if path.startswith(V)}
    assert len(ops) == 7
    for method, path in ops:
        op = document["paths"][path][method]
        assert op["security"] == [{"cloudApiKey": []}]
        assert {"200", "401", "404", "429"} <= op["responses"].keys()
    assert "402" in document["paths"][f"{V}/visitors/{{visitor_id}}/watch_url.json"]["post"]["responses"]


def test_the_cloud_operations_pass_schemathesis_with_the_key(relay_factory: Any, tmp_path: Path) -> None:
    """This surface's operations alone, with the key, and the statuses they answered checked."""
    port = free_port()
    relay = relay_factory(PORT=str(port), BASE_ENDPOINT=f"http://127.0.0.1:{port}/relay", REST_RATE="1000000").start()
    with urllib.request.urlopen(f"{relay.base}/api/openapi.json", timeout=10) as r:
        (tmp_path / "openapi.json").write_bytes(r.read())
    known = "CLOUDSCHM1"
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\nvisitor_id = "{known}"\n')
    status, out, statuses = schemathesis(
        relay,
        tmp_path,
        tmp_path / "schemathesis.toml",
        known,
        30,
        "--include-path-regex",
        r"^/api/v1\.1/",
        "--header",
        f"X-Api-Key: {relay.rest_key}",
    )
    assert status == 0, out[-6000:]
    assert statuses["200"] and statuses["400"] and statuses["401"], statuses
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases is not None and cases.group(1) == cases.group(2), out[-3000:]
    print(f"schemathesis (cloud v1.1, with X-Api-Key): {cases.group(1)} cases, 0 failures; statuses {dict(statuses)}")
