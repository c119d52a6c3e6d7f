"""The OpenAPI document: every REST route is in it, it is served, and bodies are read with a cap."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from starlette.routing import BaseRoute, Mount, Route

from relay.api._http import ApiError
from relay.api.declare import decode, openapi
from relay.api.onprem import WatchUrlBody
from relay.app import SURFACES, create_app
from relay.settings import Settings

REST_PREFIXES = ("/api", "/rest/")
SEED_ERROR_BODIES = {("post", "/api/v1/meetings", "400")}  # CoClick's own: the meeting, its fields null, and errors


def _routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """(METHOD, full path) of every HTTP route, through Mounts; HEAD beside GET is not an operation."""
    out = []
    for route in routes:
        if isinstance(route, Mount):
            out += _routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            out += [(m, prefix + route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def _missing(routes: list[BaseRoute], document: dict[str, Any], base: str) -> list[str]:
    """The REST routes (under /api or /rest/) the document does not have."""
    missing = []
    for method, path in _routes(routes):
        path = path.removeprefix(base)
        if path.startswith(REST_PREFIXES) and method.lower() not in document["paths"].get(path, {}):
            missing.append(f"{method} {path}")
    return missing


@pytest.mark.parametrize("base", ["", "/relay"])
def test_every_rest_route_of_the_app_is_in_the_document(base: str, tmp_path: Any) -> None:
    endpoint = f"http://127.0.0.1:5002{base}"
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "REST_KEY": "some-key", "BASE_ENDPOINT": endpoint})
    app = create_app(settings)
    document = json.loads(app.state.openapi)
    assert document["servers"] == [{"url": base or "/"}]
    routes = _routes(list(app.routes))
    assert sum(path.removeprefix(base).startswith(REST_PREFIXES) for _, path in routes) >= 13
    assert _missing(list(app.routes), document, base) == []


def test_a_route_left_out_of_the_declarations_is_reported_missing() -> None:
    document = openapi(SURFACES, "", "t", "1")

    async def hidden(request: Any) -> Any:
        raise AssertionError

    extra = [Route("/api/visitors/{visitor_id}/secret", hidden, methods=["DELETE"])]
    assert _missing(extra, document, "") == ["DELETE /api/visitors/{visitor_id}/secret"]
    assert _missing([Mount("/rest/live", routes=[Route("/x", hidden)])], document, "") == ["GET /rest/live/x"]


def test_each_surface_has_its_auth_scheme_and_its_error_bodies() -> None:
    document = openapi(SURFACES, "", "t", "1")
    assert document["openapi"] == "3.1.0"
    schemes = document["components"]["securitySchemes"]
    assert schemes["restKey"] == {"type": "apiKey", "in": "header", "name": "Authorization"}
    assert schemes == {s.security.name: dict(s.security.scheme) for s in SURFACES if s.security is not None}
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for surface in SURFACES:
        for declared in surface.operations:
            method, path = declared.method.lower(), surface.mount + declared.path
            op = document["paths"][path][method]
            if surface.security is not None and not declared.public:
                assert op["security"] == [{surface.security.name: []}], (method, path)
                assert "401" in op["responses"], (method, path)
                if surface.security.scheme.get("type") == "apiKey":  # REST_KEY: off (404) without it, REST_RATE
                    assert {"404", "429"} <= op["responses"].keys(), (method, path)
            else:
                assert op["security"] == [], (method, path)
            if path.startswith("/rest/live"):
                assert "403" in op["responses"], (method, path)
            for status, answer in op["responses"].items():
                if status.startswith("4") and (method, path, status) not in SEED_ERROR_BODIES:
                    assert answer["content"]["application/json"]["schema"] == error, (method, path, status)
    assert document["paths"]["/api/visitors/list/latest"]["get"]["security"] == [{"restKey": []}]
    body = document["paths"]["/api/visitors/{visitor_id}/watch_url"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/WatchUrlBody"}
    watch = document["components"]["schemas"]["WatchUrlBody"]
    assert watch["required"] == ["agent"] and "licenseToken" in watch["properties"]
    assert document["components"]["schemas"]["PermissionsIn"]["additionalProperties"] is False


def test_the_document_is_served_without_a_key_and_describes_this_relay(relay: Any) -> None:
    with urllib.request.urlopen(f"{relay.base}/api/openapi.json", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        served = json.loads(r.read())
    assert served["paths"].keys() == openapi(SURFACES, "", "t", "1")["paths"].keys()
    assert served["info"]["title"] == "cobrowse-relay"


def test_the_document_is_served_with_the_api_off(relay_factory: Any) -> None:
    r = relay_factory(REST_KEY="").start()
    with urllib.request.urlopen(f"{r.base}/api/openapi.json", timeout=10) as answer:
        assert answer.status == 200 and json.loads(answer.read())["openapi"] == "3.1.0"


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b'{"agent": null}', "missing_field", "agent.id"),
        (b'{"agent": {"id": "", "name": "x"}}', "missing_field", "agent.id"),
        (b'{"agent": {"id": "1", "name": null}}', "missing_field", "agent.name"),
        (
            b'{"agent": {"id": "1", "name": "x"}, "branding": {"metadata": {"k": {}}}}',
            "invalid_field",
            "branding.metadata.k",
        ),
        (b'{"agent": {"id": "1", "name": "x"}, "branding": {"color": "red"}}', "unknown_field", "branding.color"),
        (b'{"agent": {"id": "1", "name": "x"}, "observer": {"id": true}}', "invalid_field", "observer.id"),
        (b'{"agent": {"id": "1", "name": "x"}, "metadata": {"' + b"k" * 129 + b'": 1}}', "invalid_field", "metadata"),
    ],
)
def test_a_bad_body_is_an_error_naming_its_field(raw: bytes, code: str, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode(raw, WatchUrlBody)
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, code, field)
    assert field in caught.value.message


def test_an_empty_body_is_an_empty_object() -> None:
    with pytest.raises(ApiError) as caught:
        decode(b"  ", WatchUrlBody)
    assert (caught.value.code, caught.value.field) == ("missing_field", "agent.id")


def test_a_chunked_body_over_the_cap_is_refused_413_while_it_streams(relay: Any) -> None:
    """No Content-Length to refuse from: the app stops at 64 KiB, not at the end of the body."""
    head = (
        f"POST /api/visitors/X/watch_url HTTP/1.1\r\nHost: x\r\nAuthorization: {relay.rest_key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(head + b'5\r\n{"a":\r\n' + chunk * 5)  # 80 KiB sent, the body not finished
        answer = b""
        while b"\r\n\r\n" not in answer or b"}" not in answer.split(b"\r\n\r\n", 1)[1]:
            data = s.recv(65536)
            assert data, answer
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"error":"request_too_large"' in answer and b"65536" in answer


def test_the_surface_guard_runs_before_the_body_is_read(relay: Any) -> None:
    """No key (on-premise) or a foreign origin (live-session): refused as such, whatever the body."""
    bad = b'{"agent": "x"}'
    request = urllib.request.Request(f"{relay.base}/api/visitors/X/watch_url", data=bad, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401 and json.loads(caught.value.read())["error"] == "invalid_api_key"
    headers = {"Origin": "https://evil.example", "Content-Type": "application/json"}
    request = urllib.request.Request(f"{relay.base}/rest/live/sessions", data=b"[1]", method="POST", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403 and json.loads(caught.value.read())["error"] == "origin_not_allowed"
