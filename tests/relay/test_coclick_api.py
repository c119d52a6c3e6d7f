"""The CoClick meetings API (seed 003) against a real relay: authenticate, meetings, filters, pages."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from relay.core.errors import TokenInvalid
from relay.core.grants import ApiTokenClaim, Grant, Signer
from relay.settings import Settings
from relay.storage import open_storage
from relay.storage.base import Meeting

from ..conftest import run_relay

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
SEED_FIELDS = [
    "token",
    "status",
    "starts_at",
    "duration",
    "cobrowsing_url",
    "cobrowsing_cookies_data",
    "user",
    "custom_data",
    "presenter_waiting_room_iframe_url",
    "prospect_waiting_room_iframe_url",
    "prospect_room_url",
    "presenter_room_url",
]


def call(
    relay: Any,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of a call under /api/v1."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"{relay.base}/api/v1{path}", data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def make_key(relay: Any, company: str = "MyCompany", kind: str = "coclick") -> tuple[str, str]:
    """(secret_id, secret_key) of a key made with ``python -m relay keys create`` on the relay's store."""
    done = run_relay(["keys", "create", "--kind", kind, "--name", "t", "--company", company], relay.env)
    assert done.returncode == 0, done.stderr
    found = dict(re.findall(r"^(secret_id|secret_key):\s+(\S+)$", done.stdout, re.M))
    return found["secret_id"], found["secret_key"]


def token_of(relay: Any, company: str = "MyCompany") -> str:
    secret_id, secret_key = make_key(relay, company)
    status, body, _ = call(relay, "POST", "/authenticate", {"secret_id": secret_id, "secret_key": secret_key})
    assert status == 200, body
    token: str = body["token"]
    return token


def store_meetings(relay: Any, *meetings: Meeting) -> None:
    """Write meetings straight to the relay's store (statuses the API cannot set yet)."""

    async def save() -> None:
        store = open_storage(Settings.from_env({"DATA_DIR": str(relay.data_dir)}))
        await store.open()
        try:
            for m in meetings:
                await store.save_meeting(m)
        finally:
            await store.close()

    asyncio.run(save())


def meeting_body(**fields: Any) -> dict[str, Any]:
    return {
        "user": "phil@example.com",
        "starts_at": "2021-10-30T14:29:33.000+02:00",
        "cobrowsing_url": "http://www.coclick.io",
        **fields,
    }


# --- authenticate ------------------------------------------------------------------------------
def test_authenticate_answers_a_token_its_expiry_and_the_company(relay: Any) -> None:
    secret_id, secret_key = make_key(relay, "MyCompany")
    before = time.time()
    status, body, _ = call(relay, "POST", "/authenticate", {"secret_id": secret_id, "secret_key": secret_key})
    assert status == 200 and list(body) == ["token", "expires_at", "company"]
    assert body["company"] == "MyCompany" and body["token"].startswith("api.")
    assert ISO.match(body["expires_at"]), body["expires_at"]
    expires = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert before + 3600 - 1 <= expires <= time.time() + 3600 + 1  # API_TOKEN_TTL's default
    status, listed, _ = call(relay, "GET", "/meetings", token=body["token"])
    assert status == 200 and isinstance(listed, list)


@pytest.mark.parametrize("wrong", ["secret", "id", "kind"])
def test_authenticate_refuses_a_wrong_secret_an_unknown_id_or_another_kind_of_key(relay: Any, wrong: str) -> None:
    secret_id, secret_key = make_key(relay, kind="registration" if wrong == "kind" else "coclick")
    credentials = {
        "secret_id": "0" * 32 if wrong == "id" else secret_id,
        "secret_key": secret_key + "x" if wrong == "secret" else secret_key,
    }
    status, body, headers = call(relay, "POST", "/authenticate", credentials)
    assert status == 401 and body["error"] == "invalid_credentials" and body["status"] == "error"
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_authenticate_needs_both_fields(relay: Any) -> None:
    status, body, _ = call(relay, "POST", "/authenticate", {"secret_id": "x"})
    assert (status, body["error"], body["field"]) == (400, "missing_field", "secret_key")
    status, body, _ = call(relay, "POST", "/authenticate", b"{nope")
    assert (status, body["error"]) == (400, "invalid_json")
    status, body, _ = call(relay, "POST", "/authenticate", b"{" + b" " * 5000 + b"}")
    assert (status, body["error"]) == (413, "request_too_large")


def test_a_revoked_keys_tokens_stop_working_at_once(relay: Any) -> None:
    secret_id, secret_key = make_key(relay)
    _, body, _ = call(relay, "POST", "/authenticate", {"secret_id": secret_id, "secret_key": secret_key})
    assert call(relay, "GET", "/meetings", token=body["token"])[0] == 200
    done = run_relay(["keys", "revoke", secret_id], relay.env)
    assert done.returncode == 0, done.stderr
    status, refused, _ = call(relay, "GET", "/meetings", token=body["token"])
    assert (status, refused["error"]) == (401, "invalid_token") and "revoked" in refused["message"]
    status, again, _ = call(relay, "POST", "/authenticate", {"secret_id": secret_id, "secret_key": secret_key})
    assert (status, again["error"]) == (401, "invalid_credentials")


def _signer(relay: Any) -> Signer:
    return Signer(relay.secret.encode())


def test_every_call_but_authenticate_needs_a_genuine_unexpired_bearer_token(relay: Any) -> None:
    good = token_of(relay)
    key_id = _signer(relay).read_api_token(good).key
    grant = Grant(visitor="V", agent_id="a", agent_name="A", permissions=(), expires=time.time() + 60)
    forged = Signer(b"another-secret-key-0123456789").api_token(ApiTokenClaim(key_id, time.time() + 60))
    cases = {
        "": ("invalid_token", None),
        "no scheme": ("invalid_token", {"Authorization": good}),
        "basic": ("invalid_token", {"Authorization": f"Basic {good}"}),
        "garbage": ("invalid_token", {"Authorization": "Bearer nope"}),
        "forged": ("invalid_token", {"Authorization": f"Bearer {forged}"}),
        "grant": ("invalid_token", {"Authorization": f"Bearer {_signer(relay).grant(grant)}"}),
        "unprefixed": ("invalid_token", {"Authorization": f"Bearer {good.removeprefix('api.')}"}),
        "expired": (
            "token_expired",
            {"Authorization": f"Bearer {_signer(relay).api_token(ApiTokenClaim(key_id, time.time() - 1))}"},
        ),
    }
    for what, (code, headers) in cases.items():
        for method, path, body in [("GET", "/meetings", None), ("GET", "/meetings/x", None), ("POST", "/meetings", {})]:
            status, answer, sent = call(relay, method, path, body, headers=headers)
            assert (status, answer["error"]) == (401, code), (what, method, path, answer)
            assert sent["WWW-Authenticate"] == 'Bearer realm="coclick"'
    assert _signer(relay).api_token(ApiTokenClaim(key_id, time.time() + 60)) != good  # a fresh one works too
    assert call(relay, "GET", "/meetings", token=_signer(relay).api_token(ApiTokenClaim(key_id, time.time() + 60)))[0]


def test_an_api_token_is_never_a_watch_grant_nor_a_resume_token(relay: Any) -> None:
    signer = _signer(relay)
    token = signer.api_token(ApiTokenClaim("k", time.time() + 60))
    with pytest.raises(TokenInvalid):
        signer.read_grant(token)
    with pytest.raises(TokenInvalid):
        signer.read_grant(token.removeprefix("api."))
    with pytest.raises(TokenInvalid):
        signer.read_resume(token.removeprefix("api."))
    grant = signer.grant(Grant(visitor="V", agent_id="a", agent_name="A", permissions=(), expires=time.time() + 60))
    with pytest.raises(TokenInvalid):
        signer.read_api_token("api." + grant)


# --- one meeting -------------------------------------------------------------------------------
def test_a_meeting_is_created_with_every_documented_field_and_read_back(relay: Any) -> None:
    token = token_of(relay)
    cookies = [{"domain": ".example.com", "name": "sid", "value": "abc"}, {"domain": "x.io", "name": "n", "value": ""}]
    custom = {"user_id": 17, "username": "Phil", "nested": {"a": [1, 2.5, None, True]}}
    sent = meeting_body(
        cobrowsing_cookies_data=cookies,
        custom_data=custom,
        presenter_waiting_room_iframe_url="https://www.youtube.com/embed/dQw4w9WgXcQ",
        prospect_waiting_room_iframe_url="https://www.youtube.com/embed/x",
        prospect_room_url="http://ignored.example/room",
        presenter_room_url="http://ignored.example/presenter",
        status="closed",  # not a field one sets: ignored
    )
    status, made, _ = call(relay, "POST", "/meetings", sent, token=token)
    assert status == 201, made
    assert list(made) == [*SEED_FIELDS, "id"]
    meeting_id = made["token"]
    assert re.fullmatch(r"[0-9a-f]{64}", meeting_id) and made["id"] == meeting_id
    assert made["status"] == "scheduled" and made["duration"] is None
    assert made["starts_at"] == "2021-10-30T12:29:33.000+00:00"  # the same instant, in UTC
    assert made["user"] == "phil@example.com" and made["cobrowsing_url"] == "http://www.coclick.io"
    assert made["cobrowsing_cookies_data"] == cookies and made["custom_data"] == custom
    assert made["presenter_waiting_room_iframe_url"] == "https://www.youtube.com/embed/dQw4w9WgXcQ"
    assert made["prospect_waiting_room_iframe_url"] == "https://www.youtube.com/embed/x"
    assert made["prospect_room_url"] == f"{relay.base}/meetings/{meeting_id}"
    assert made["presenter_room_url"] == f"{relay.base}/meetings/{meeting_id}/presenter"
    status, read, _ = call(relay, "GET", f"/meetings/{meeting_id}", token=token)
    assert status == 200 and read == made


def test_optional_fields_default_as_the_seed_shows(relay: Any) -> None:
    status, made, _ = call(relay, "POST", "/meetings", meeting_body(custom_data=None), token=token_of(relay))
    assert status == 201
    assert made["cobrowsing_cookies_data"] == [] and made["custom_data"] is None
    assert made["presenter_waiting_room_iframe_url"] is None and made["prospect_waiting_room_iframe_url"] is None


def test_an_unknown_meeting_is_404(relay: Any) -> None:
    status, body, _ = call(relay, "GET", "/meetings/" + "0" * 64, token=token_of(relay))
    assert (status, body["error"]) == (404, "not_found")


def test_an_empty_meeting_is_refused_in_the_seeds_exact_shape(relay: Any) -> None:
    status, body, _ = call(relay, "POST", "/meetings", {}, token=token_of(relay))
    assert status == 400
    assert body == {
        "token": None,
        "status": "scheduled",
        "starts_at": None,
        "duration": None,
        "cobrowsing_url": None,
        "cobrowsing_cookies_data": [],
        "user": None,
        "custom_data": None,
        "presenter_waiting_room_iframe_url": None,
        "prospect_waiting_room_iframe_url": None,
        "prospect_room_url": None,
        "presenter_room_url": None,
        "errors": {
            "user": ["User must exist"],
            "starts_at": ["please specify a start date"],
            "cobrowsing_url": ["Please specify a cobrowsing URL", "Cobrowsing URL is not valid"],
        },
    }


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"user": ""}, {"user": ["User must exist"]}),
        ({"user": "not an email"}, {"user": ["User is not a valid email address"]}),
        ({"user": "a@b.io\n"}, {"user": ["User is not a valid email address"]}),
        ({"user": 17}, {"user": ["User is not a valid email address"]}),
        ({"starts_at": None}, {"starts_at": ["please specify a start date"]}),
        ({"starts_at": "2021-10-30T14:29:33"}, {"starts_at": [""]}),
        ({"starts_at": "tomorrow"}, {"starts_at": [""]}),
        (
            {"cobrowsing_url": ""},
            {"cobrowsing_url": ["Please specify a cobrowsing URL", "Cobrowsing URL is not valid"]},
        ),
        ({"cobrowsing_url": "javascript:alert(1)"}, {"cobrowsing_url": ["Cobrowsing URL is not valid"]}),
        ({"cobrowsing_url": "http://x.io/a b"}, {"cobrowsing_url": ["Cobrowsing URL is not valid"]}),
        ({"presenter_waiting_room_iframe_url": "ftp://x"}, {"presenter_waiting_room_iframe_url": [""]}),
        ({"prospect_waiting_room_iframe_url": ""}, {"prospect_waiting_room_iframe_url": [""]}),
        ({"custom_data": [1]}, {"custom_data": ["Custom data must be an object"]}),
        ({"cobrowsing_cookies_data": {}}, {"cobrowsing_cookies_data": [""]}),
        ({"cobrowsing_cookies_data": [{"domain": "d", "name": "n"}]}, {"cobrowsing_cookies_data": [""]}),
        (
            {"cobrowsing_cookies_data": [{"domain": "d", "name": "n", "value": "v", "path": "/"}]},
            {"cobrowsing_cookies_data": [""]},
        ),
        ({"cobrowsing_cookies_data": [{"domain": "d", "name": "n", "value": 1}]}, {"cobrowsing_cookies_data": [""]}),
    ],
)
def test_each_invalid_field_is_named_with_its_messages(relay: Any, fields: dict[str, Any], errors: Any) -> None:
    status, body, _ = call(relay, "POST", "/meetings", meeting_body(**fields), token=token_of(relay))
    assert status == 400 and body["token"] is None and body["status"] == "scheduled"
    assert body["errors"].keys() == errors.keys(), body["errors"]
    for name, messages in errors.items():  # "" stands for any message
        got = body["errors"][name]
        assert len(got) == len(messages) and all(m == "" or g == m for g, m in zip(got, messages, strict=True))
        assert all(g for g in got)
    status, _, _ = call(relay, "POST", "/meetings", meeting_body(), token=token_of(relay))
    assert status == 201


def test_an_empty_body_is_an_empty_meeting(relay: Any) -> None:
    status, body, _ = call(relay, "POST", "/meetings", b"  \n", token=token_of(relay))
    assert status == 400 and set(body["errors"]) == {"user", "starts_at", "cobrowsing_url"}


def test_errors_of_several_fields_come_together(relay: Any) -> None:
    body = {"user": "x", "starts_at": "x", "cobrowsing_url": "x", "custom_data": 1}
    status, answer, _ = call(relay, "POST", "/meetings", body, token=token_of(relay))
    assert status == 400 and set(answer["errors"]) == {"user", "starts_at", "cobrowsing_url", "custom_data"}


@pytest.mark.parametrize(("raw", "message"), [(b"{nope", "not valid JSON"), (b"[1]", "a JSON object")])
def test_a_body_that_is_no_object_is_a_base_error(relay: Any, raw: bytes, message: str) -> None:
    status, body, _ = call(relay, "POST", "/meetings", raw, token=token_of(relay))
    assert status == 400 and body["user"] is None and message in body["errors"]["base"][0]


def test_a_body_over_512_kib_is_413(relay: Any) -> None:
    """Refused from its declared length, before any of it is read."""
    host, port = relay.origin.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/api/v1/meetings")
        conn.putheader("Authorization", f"Bearer {token_of(relay)}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(512 * 1024 + 1))
        conn.endheaders()
        answer = conn.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["error"] == "request_too_large"
    finally:
        conn.close()


# --- the list: pages and filters ---------------------------------------------------------------
@pytest.fixture(scope="module")
def listed(relay_module: Any) -> tuple[Any, str, list[Meeting]]:
    """A relay of its own with 25 meetings: statuses and start times spread, made in a known order."""
    relay = relay_module
    base = 1_700_000_000.0
    meetings = [
        Meeting(
            id=f"{i:064x}",
            user=f"{'Hugh' if i % 5 == 0 else 'ann'}.{i}@Example.com",
            starts_at=base + i * 3600,
            cobrowsing_url="https://example.com",
            status=("scheduled", "in_progress", "closed", "cancelled")[i % 4],
            created_at=base + i,
            updated_at=base + i,
        )
        for i in range(25)
    ]
    store_meetings(relay, *meetings)
    return relay, token_of(relay), meetings


@pytest.fixture(scope="module")
def relay_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ..conftest import Relay

    r = Relay(tmp_path_factory.mktemp("coclick")).start()
    yield r
    r.stop()


def _list(listed: Any, query: dict[str, str] | None = None, **headers: str) -> tuple[int, Any, Any]:
    relay, token, _ = listed
    path = "/meetings" + ("?" + urllib.parse.urlencode(query) if query else "")
    return call(relay, "GET", path, token=token, headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_the_list_is_the_seeds_items_newest_first_20_a_page(listed: Any) -> None:
    _, _, meetings = listed
    status, items, headers = _list(listed)
    assert status == 200 and len(items) == 20
    assert all(list(item) == ["id", "user", "status", "starts_at"] for item in items)
    assert [i["id"] for i in items] == [m.id for m in reversed(meetings)][:20]
    newest = meetings[-1]
    assert (items[0]["id"], items[0]["user"], items[0]["status"]) == (newest.id, newest.user, newest.status)
    assert datetime.fromisoformat(items[0]["starts_at"]).timestamp() == newest.starts_at
    assert ISO.match(items[0]["starts_at"])
    assert (headers["X-Page"], headers["X-Per"], headers["X-Total"], headers["X-Total-Pages"]) == ("1", "20", "25", "2")


def test_pages_follow_x_page_and_x_per(listed: Any) -> None:
    _, _, meetings = listed
    newest_first = [m.id for m in reversed(meetings)]
    status, items, headers = _list(listed, X_Page="2")
    assert status == 200 and [i["id"] for i in items] == newest_first[20:]
    assert (headers["X-Page"], headers["X-Per"], headers["X-Total"]) == ("2", "20", "25")
    status, items, headers = _list(listed, X_Page="3", X_Per="10")
    assert [i["id"] for i in items] == newest_first[20:] and headers["X-Total-Pages"] == "3"
    status, items, headers = _list(listed, X_Page="9")
    assert status == 200 and items == [] and headers["X-Total"] == "25"
    status, items, headers = _list(listed, X_Per="500")
    assert len(items) == 25 and headers["X-Per"] == "100" and headers["X-Total-Pages"] == "1"


@pytest.mark.parametrize(("name", "value"), [("X-Page", "0"), ("X-Page", "abc"), ("X-Per", "-1"), ("X-Per", "1.5")])
def test_a_bad_page_header_is_400_naming_it(listed: Any, name: str, value: str) -> None:
    status, body, _ = _list(listed, **{name.replace("-", "_"): value})
    assert (status, body["error"], body["field"]) == (400, "invalid_header", name)


def _ids(listed: Any, query: dict[str, str]) -> set[str]:
    status, items, headers = _list(listed, query, X_Per="100")
    assert status == 200, items
    assert headers["X-Total"] == str(len(items))
    return {i["id"] for i in items}


def test_user_email_cont_matches_a_part_of_the_email_in_any_case(listed: Any) -> None:
    _, _, meetings = listed
    assert _ids(listed, {"q[user_email_cont]": "hugh"}) == {m.id for m in meetings if "hugh" in m.user.lower()}
    assert _ids(listed, {"q[user_email_cont]": "EXAMPLE.COM"}) == {m.id for m in meetings}
    assert _ids(listed, {"q[user_email_cont]": "nobody"}) == set()


@pytest.mark.parametrize("op", ["eq", "gt", "lt"])
def test_status_predicates_compare_in_the_documented_order(listed: Any, op: str) -> None:
    _, _, meetings = listed
    order = ["scheduled", "in_progress", "closed", "cancelled"]
    compare = {"eq": lambda a, b: a == b, "gt": lambda a, b: a > b, "lt": lambda a, b: a < b}[op]
    for status in order:
        want = {m.id for m in meetings if compare(order.index(m.status), order.index(status))}
        assert _ids(listed, {f"q[status_{op}]": status}) == want, (op, status)


@pytest.mark.parametrize("op", ["eq", "gt", "lt"])
def test_starts_at_predicates_take_the_seeds_date_format(listed: Any, op: str) -> None:
    _, _, meetings = listed
    pivot = meetings[10].starts_at
    compare = {"eq": lambda a: a == pivot, "gt": lambda a: a > pivot, "lt": lambda a: a < pivot}[op]
    want = {m.id for m in meetings if compare(m.starts_at)}
    paris = timezone(timedelta(hours=2))
    for at in (datetime.fromtimestamp(pivot, UTC), datetime.fromtimestamp(pivot, paris)):
        assert _ids(listed, {f"q[starts_at_{op}]": at.isoformat(timespec="milliseconds")}) == want
    zulu = datetime.fromtimestamp(pivot, UTC).isoformat().replace("+00:00", "Z")
    assert _ids(listed, {f"q[starts_at_{op}]": zulu}) == want
    # "+02:00" sent unencoded in a query reads " 02:00": taken as the offset it was
    relay, token, _ = listed
    raw = datetime.fromtimestamp(pivot, paris).isoformat(timespec="milliseconds")
    path = f"/meetings?q%5Bstarts_at_{op}%5D={raw}"
    status, items, _ = call(relay, "GET", path, token=token, headers={"X-Per": "100"})
    assert status == 200 and {i["id"] for i in items} == want


def test_predicates_are_and_ed(listed: Any) -> None:
    _, _, meetings = listed
    query = {"q[user_email_cont]": "ann", "q[status_eq]": "closed", "q[starts_at_gt]": "2023-11-15T00:00:00Z"}
    want = {m.id for m in meetings if "ann" in m.user and m.status == "closed" and m.starts_at > 1_700_006_400}
    assert _ids(listed, query) == want and want


def test_unknown_predicates_are_400_naming_them(listed: Any) -> None:
    status, body, _ = _list(listed, {"q[user_email_eq]": "x", "q[foo]": "1", "q[status_eq]": "closed"})
    assert (status, body["error"]) == (400, "unknown_filter")
    assert "q[user_email_eq]" in body["message"] and "q[foo]" in body["message"]
    assert "q[status_eq]" in body["message"].split("known:")[1]  # the known ones are listed after
    status, body, _ = _list(listed, {"q": "x"})
    assert (status, body["error"], body["field"]) == (400, "unknown_filter", "q")


@pytest.mark.parametrize(
    ("name", "value"),
    [("q[status_eq]", "done"), ("q[starts_at_gt]", "yesterday"), ("q[starts_at_lt]", "2021-10-30T14:29:33")],
)
def test_a_predicate_with_a_value_of_the_wrong_kind_is_400(listed: Any, name: str, value: str) -> None:
    status, body, _ = _list(listed, {name: value})
    assert (status, body["error"], body["field"]) == (400, "invalid_filter", name)


# --- the document ------------------------------------------------------------------------------
def test_the_document_has_the_bearer_scheme_and_every_answer(relay: Any) -> None:
    with urllib.request.urlopen(f"{relay.base}/api/openapi.json", timeout=10) as r:
        document = json.loads(r.read())
    assert document["components"]["securitySchemes"]["coclickBearer"] == {"type": "http", "scheme": "bearer"}
    ops = {
        (m, p): op for p, methods in document["paths"].items() if p.startswith("/api/v1/") for m, op in methods.items()
    }
    assert set(ops) == {
        ("post", "/api/v1/authenticate"),
        ("get", "/api/v1/meetings"),
        ("post", "/api/v1/meetings"),
        ("get", "/api/v1/meetings/{meeting_id}"),
    }
    assert ops["post", "/api/v1/authenticate"]["security"] == []
    for key, op in ops.items():
        if key[1] != "/api/v1/authenticate":
            assert op["security"] == [{"coclickBearer": []}] and "401" in op["responses"], key
    created = ops["post", "/api/v1/meetings"]["responses"]
    assert created["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CoClickMeetingErrors"
    }
    assert set(created) == {"201", "400", "401", "413", "503"}
    names = {p["name"] for p in ops["get", "/api/v1/meetings"]["parameters"]}
    assert {"q[user_email_cont]", "q[status_gt]", "q[starts_at_lt]", "X-Page", "X-Per"} <= names


# --- the README --------------------------------------------------------------------------------
def test_the_readme_walkthrough_runs_when_pasted_in_order(relay: Any) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## CoClick meetings API\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip("\n") for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    assert len(blocks) == 3 and "keys create --kind coclick" in blocks[0]
    script = "set -euo pipefail\n" + "\n".join(blocks)
    script = script.replace("http://127.0.0.1:5002", relay.base).replace(
        "cobrowse-relay ", f"{sys.executable} -m relay "
    )
    done = subprocess.run(["bash", "-c", script], env=relay.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    assert '"company":"MyCompany"' in out and '"errors":{"user":["User must exist"]' in out
    assert re.search(r"^x-total: 1\r?$", out, re.M | re.I) and '"user":"hugh@example.com"' in out
    assert out.count('"custom_data":{"user_id":17,"username":"Phil"}') == 2  # made, then read back
