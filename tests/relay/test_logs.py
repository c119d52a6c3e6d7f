"""Logs: one format for the relay's lines and uvicorn's, and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

import protocol as p
from relay import logs

from .client import open_socket, rest, run

# --- relay.logs in this process ----------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[Any]:
    """``install(fmt)`` puts a handler built from relay.logs.config on ``relay.events``; yields the text."""
    events = logging.getLogger("relay.events")
    saved = (events.level, events.propagate, list(events.handlers))
    stream = io.StringIO()

    def install(fmt: str) -> io.StringIO:
        cfg = logs.config(fmt, "info", ["literal-secret-value"], stream)
        formatter = cfg["formatters"][fmt]["()"]()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(logs.Redact(cfg["filters"]["redact"]["literals"]))
        events.handlers[:] = [handler]
        events.setLevel(logging.INFO)
        events.propagate = False
        return stream

    yield install
    events.setLevel(saved[0])
    events.propagate = saved[1]
    events.handlers[:] = saved[2]


def test_event_is_one_info_line_name_then_ids_in_text(captured: Any) -> None:
    out = captured("text")
    logs.event("session_started", session="S1", visitor="7KQ2M9XHPA", viewers=2)
    (line,) = out.getvalue().splitlines()
    assert " INFO relay.events: " in line
    assert line.endswith("relay.events: session_started session=S1 visitor=7KQ2M9XHPA viewers=2")


def test_event_is_one_json_object_with_its_ids_as_fields(captured: Any) -> None:
    out = captured("json")
    logs.event("session_ended", session="S1", reason="visitor gone", name="clash")
    (line,) = out.getvalue().splitlines()
    body = json.loads(line)
    assert body["level"] == "info" and body["logger"] == "relay.events" and body["msg"] == "session_ended"
    assert body["session"] == "S1" and body["reason"] == "visitor gone" and body["name_"] == "clash"
    assert body["ts"].endswith("Z")


def test_event_values_are_redacted_like_any_line(captured: Any) -> None:
    out = captured("text")
    logs.event("watch_opened", url="/screen?id=V1&token=abc.def", key="literal-secret-value")
    text = out.getvalue()
    assert "abc.def" not in text and "literal-secret-value" not in text and "[redacted]" in text


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ('127.0.0.1:5 - "GET /screen?id=X&token=T0KEN HTTP/1.1" 200', "T0KEN"),
        ('127.0.0.1:5 - "GET /base/screen?token=T0KEN&id=X HTTP/1.1" 200', "T0KEN"),
        ('127.0.0.1:5 - "WebSocket /ws/viewer?resume=R3SUME&x=1" [accepted]', "R3SUME"),
        ("opening https://shop.example/?api_key=K3Y&q=1", "K3Y"),
        ("form: password=PW0RD&user=ann", "PW0RD"),
        ("Authorization: Bearer AUTHVALUE", "AUTHVALUE"),
        ("headers [(b'authorization', b'AUTHVALUE'), (b'host', b'x')]", "AUTHVALUE"),
        ('{"Authorization": "AUTHVALUE"}', "AUTHVALUE"),
        ("hello {'role': 'viewer', 'token': 'T0KEN'}", "T0KEN"),
        ('{"resume_token":"T0KEN"}', "T0KEN"),
        ("< TEXT 'token T0KEN' [11 bytes]", "T0KEN"),
        ("< BINARY 54 30 4b 45 4e [5 bytes]", "54 30 4b"),
    ],
)
def test_redact_removes_tokens_keys_and_authorization_values(line: str, secret: str) -> None:
    out = logs.redact(line)
    assert secret not in out and "[redacted]" in out


def test_redact_keeps_what_is_not_secret() -> None:
    line = '127.0.0.1:5 - "GET /api/visitors/list/latest HTTP/1.1" 200'
    assert logs.redact(line) == line


# --- a real relay ------------------------------------------------------------------------------------------
SCREEN_TOKEN = "SCREENTOKEN0123456789"
VIEWER_TOKEN = "VIEWERTOKEN0123456789"
RESUME = "RESUMESECRET0123456789"
WRONG_KEY = "WRONGKEY0123456789"


async def _secrets_sent(relay: Any) -> None:
    """A watch page, a viewer socket with a token (in its query and its HELLO), REST calls with keys."""
    status, _ = _get(f"{relay.base}/screen?id=V1&token={SCREEN_TOKEN}")
    assert status in (200, 503)
    ws = await open_socket(relay, f"/ws/viewer?token={VIEWER_TOKEN}&resume={RESUME}", origin=None)
    await ws.send(p.encode(p.Hello(role="viewer", version=p.PROTOCOL_VERSION, token=VIEWER_TOKEN)))
    try:
        while True:
            await ws.recv()  # an ERROR, then the close: the token is refused
    except ConnectionClosed:
        pass
    with pytest.raises(InvalidStatus):
        await open_socket(relay, f"/ws/visitor?token={VIEWER_TOKEN}", origin="https://not-allowed.example")
    assert rest(relay, "GET", "/api/visitors/list/latest")[0] == 200
    assert rest(relay, "GET", f"/api/visitors/list/latest?key={WRONG_KEY}", key=WRONG_KEY)[0] == 401


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _await_line(path: Path, needle: str, timeout: float = 5.0) -> str:
    """The log once it holds ``needle`` (the access log line of the last call is written after its answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if needle in text:
            return text
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} never logged:\n{path.read_text(errors='replace')[-3000:]}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_token_key_or_secret_reaches_the_log_at_debug(relay_factory: Any, tmp_path: Path, fmt: str) -> None:
    err = tmp_path / "stderr.log"
    r = relay_factory(LOG_LEVEL="debug", LOG_FORMAT=fmt, stderr_path=err).start()
    run(_secrets_sent(r))
    _await_line(err, "/api/visitors/list/latest?")  # positive control: the access log is on, with queries
    assert r.stop() == 0
    text = err.read_text(errors="replace") + r.output()
    assert "/screen?" in text and "/ws/viewer" in text  # the calls were logged, their secrets were not
    for secret in (SCREEN_TOKEN, VIEWER_TOKEN, RESUME, WRONG_KEY, r.rest_key, r.secret):
        assert secret not in text, secret
    lines = err.read_text().splitlines()
    assert len(lines) > 5
    if fmt == "json":
        for line in lines:
            body = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= body.keys(), line
        loggers = {json.loads(line)["logger"] for line in lines}
        assert {"uvicorn.error", "uvicorn.access"} <= loggers
    else:
        assert all(" uvicorn." in line or " relay" in line for line in lines), lines
