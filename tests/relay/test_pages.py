"""The browser bundles and pages as a client fetches them."""

from __future__ import annotations

import gzip
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from relay.api.pages import WEB_DIR

SDK = WEB_DIR / "dist" / "sdk.js"


def get(relay: Any, path: str, **headers: str) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(f"{relay.base}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture
def built() -> bytes:
    if not SDK.exists():
        pytest.fail("relay/web/dist/sdk.js is missing: `make test` builds it first")
    return SDK.read_bytes()


def test_sdk_is_served_gzipped_to_clients_that_accept_it(relay: Any, built: bytes) -> None:
    status, headers, body = get(relay, "/sdk.js", **{"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == built and len(body) < len(built) / 2
    assert headers["Access-Control-Allow-Origin"] == "*" and "Accept-Encoding" in headers["Vary"]
    status, headers, body = get(relay, "/sdk.js")
    assert status == 200 and "Content-Encoding" not in headers and body == built


def test_sdk_revalidates_with_its_etag(relay: Any, built: bytes) -> None:
    _, headers, _ = get(relay, "/sdk.js")
    status, _, body = get(relay, "/sdk.js", **{"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    status, _, _ = get(relay, "/sdk.js", **{"If-None-Match": '"stale"'})
    assert status == 200


def test_pages_carry_the_base_path_and_unknown_names_are_404(relay: Any) -> None:
    status, headers, body = get(relay, "/demo")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"{{BASE}}" not in body and b"/sdk.js" in body
    assert get(relay, "/nothing.js")[0] == 404


def raw_get(relay: Any, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written: no client normalises a ``..`` away before the relay sees it."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        for _ in range(10_000):  # bounded: until the relay closes the connection
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


TRAVERSALS = [
    "/demo/..",
    "/demo/%2e%2e",
    "/demo/../../../../etc/passwd",
    "/demo/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/demo/%2e%2e%2f%2e%2e%2fpages%2fscreen",
    "/../../../../etc/passwd",
    "/..%2f..%2f..%2fpyproject.toml",
    "/sdk.js/../../../pyproject.toml",
    "/%2e%2e/pyproject.toml",
    "/demo/checkout/../../screen",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_a_path_with_dot_dot_reaches_the_relay_and_gets_404_with_no_file(relay: Any, target: str) -> None:
    assert raw_get(relay, "/demo/checkout")[0] == 200  # the raw client itself works
    status, body = raw_get(relay, target)
    assert status == 404, (target, status, body[:200])
    assert b"root:" not in body and b"[project]" not in body and b"<html" not in body.lower()
