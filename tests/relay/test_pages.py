"""The browser bundles and pages as a client fetches them."""

from __future__ import annotations

import gzip
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
    assert get(relay, "/demo/../../etc/passwd")[0] == 404
    assert get(relay, "/nothing.js")[0] == 404
