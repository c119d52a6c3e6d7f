"""What an operator meets: the command line, start-up, stopping, the API's errors,
its rate limit, origins on loopback, a missing browser bundle, file modes."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from websockets.exceptions import InvalidStatus

from relay.api.pages import WEB_DIR
from relay.settings import VARIABLES

from ..conftest import BANNER, ROOT, base_env, in_ci, run_relay
from .client import open_socket, rest, run, visitor

SCRIPT = Path(sys.executable).parent / "cobrowse-relay"


def _words(text: str) -> str:
    return " ".join(text.split())


def get(url: str, method: str = "GET", **headers: str) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# --- the command line ------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[sys.executable, "-m", "relay"], [str(SCRIPT)]], ids=["python -m relay", "script"])
def test_help_prints_usage_and_every_variable_and_starts_nothing(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "never-created"
    env = base_env(DATA_DIR=str(data), REDIS_URL="redis://would-refuse-start-up")
    done = subprocess.run([*command, "--help"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: cobrowse-relay") and done.stderr == ""
    table = _words(done.stdout.split("configuration (variable, default, meaning):", 1)[1])
    for name, (default, meaning) in VARIABLES.items():
        assert _words(f"{name} {default} {meaning}") in table, name
    assert not BANNER.search(done.stdout) and not data.exists()


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    from importlib.metadata import version

    for command in ([sys.executable, "-m", "relay"], [str(SCRIPT)]):
        done = subprocess.run([*command, "--version"], env=base_env(), capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout) == (0, f"cobrowse-relay {version('cobrowse-relay')}\n")


def test_an_unknown_argument_is_refused_in_one_line_with_status_2() -> None:
    done = run_relay(["--port=80"], {})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["cobrowse-relay: unknown argument '--port=80'; see cobrowse-relay --help"]


# --- starting and stopping ----------------------------------------------------------------------
def test_port_in_use_is_said_in_one_line_before_the_banner(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_relay([], {"PORT": str(port), "DATA_DIR": str(tmp_path), "SECRET_KEY": "x" * 20})
    assert done.returncode == 1
    assert not BANNER.search(done.stdout) and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"PORT {port}" in line and "already in use" in line


def test_port_0_binds_a_free_port_that_the_banner_and_watch_urls_name(relay_factory: Any) -> None:
    r = relay_factory().start()
    assert r.env["PORT"] == "0" and r.port and r.port > 0
    first = r.output().split("cobrowse-relay on", 1)[1].splitlines()[0]
    assert first == f" http://127.0.0.1:{r.port}"
    assert f"console: http://127.0.0.1:{r.port}/console" in r.output()

    async def scenario() -> None:
        await visitor(r, "PORTZERO01")  # the default ALLOWED_ORIGINS follows the bound port too
        await _listed(r, "PORTZERO01")
        status, answer = rest(r, "POST", "/api/visitors/PORTZERO01/watch_url", {"agent": {"id": "1", "name": "A"}})
        assert status == 200, answer
        assert answer["watch_url"].startswith(f"http://127.0.0.1:{r.port}/screen?id=PORTZERO01&token=")

    run(scenario())


async def _listed(relay: Any, short_id: str, timeout: float = 5.0) -> None:
    """Wait until the REST API lists ``short_id`` (its presence is stored)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = rest(relay, "GET", f"/api/visitors/{short_id}")
        if body and body.get("status") == "ok":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{short_id} never listed")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_once_serving_exits_quietly_with_status_0(relay_factory: Any, sig: int) -> None:
    r = relay_factory(LOG_LEVEL="info").start()
    assert r.stop(sig) == 0
    out = r.output()
    assert "Finished server process" in out  # a graceful shutdown, not a kill
    for noise in ("Traceback", "KeyboardInterrupt", "Aborted", "ERROR"):
        assert noise not in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_during_start_up_exits_quietly_with_status_0(tmp_path: Path, sig: int) -> None:
    env = base_env(PORT="0", DATA_DIR=str(tmp_path), SECRET_KEY="x" * 20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()  # the banner: bound, not yet serving
    assert BANNER.match(first.rstrip("\n")), first
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"Aborted" not in err + out


# --- the API's errors -----------------------------------------------------------------------------
def _is_error(body: Any, code: str) -> None:
    assert isinstance(body, dict), body
    assert body["status"] == "error" and body["error"] == code, body
    assert isinstance(body["message"], str) and len(body["message"]) > 8, body


def test_every_api_error_has_the_json_shape_and_a_message(relay: Any) -> None:
    status, body = rest(relay, "GET", "/api")
    assert status == 404
    _is_error(body, "not_found")
    assert "/api/visitors/list/latest" in body["message"]
    status, body = rest(relay, "GET", "/api/no/such/thing")
    assert status == 404
    _is_error(body, "not_found")
    for key in (None, "wrong"):
        status, body = rest(relay, "GET", "/api/visitors/list/latest", key=key)
        assert status == 401
        _is_error(body, "invalid_api_key")
    status, headers, raw = get(f"{relay.base}/api/visitors/X/watch_url", Authorization=relay.rest_key)
    assert status == 405 and headers["Allow"] == "POST" and headers["Content-Type"] == "application/json"
    _is_error(json.loads(raw), "method_not_allowed")
    status, body = rest(relay, "POST", "/api/visitors/X/watch_url", b"{" + b" " * 70_000 + b"}")
    assert status == 413
    _is_error(body, "request_too_large")


def test_with_the_api_off_every_api_path_says_how_to_turn_it_on(relay_factory: Any) -> None:
    r = relay_factory(REST_KEY="").start()
    for path in ("/api", "/api/nothing", "/api/visitors/list/latest"):
        status, body = rest(r, "GET", path, key="anything")
        assert status == 404
        _is_error(body, "api_not_enabled")
        assert "REST_KEY" in body["message"]


@pytest.mark.parametrize("term", ["colour:red", "online:maybe", "tag:", "Shoe_Size:44"])
def test_a_search_term_the_syntax_does_not_know_is_400_naming_it(relay: Any, term: str) -> None:
    status, body = rest(relay, "GET", f"/api/visitors/list/search?search={quote('ann ' + term)}")
    assert status == 400
    _is_error(body, "invalid_search")
    assert term in body["message"] and body["field"] == "search"


@pytest.mark.parametrize("query", ["ann", "ann bob", "https://shop.example/cart", "10:30", "tag:#vip online:true"])
def test_plain_words_urls_and_known_fields_still_search(relay: Any, query: str) -> None:
    status, body = rest(relay, "GET", f"/api/visitors/list/search?search={quote(query)}")
    assert status == 200 and body["status"] == "ok"


def test_rest_calls_past_rest_rate_get_429_with_retry_after(relay_factory: Any) -> None:
    r = relay_factory(REST_RATE="30").start()  # a burst of 30, then one call every 2 s
    began = time.monotonic()
    answers = [rest(r, "GET", "/api/visitors/list/latest") for _ in range(60)]
    elapsed = time.monotonic() - began
    allowed = next(i for i, (status, _) in enumerate(answers) if status != 200)
    assert 30 <= allowed <= 30 + int(elapsed / 2) + 1
    status, body = answers[allowed]
    assert status == 429
    _is_error(body, "rate_limited")
    assert "REST_RATE" in body["message"]
    status, headers, _ = get(f"{r.base}/api/visitors/list/latest", Authorization=r.rest_key)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 2
    assert rest(r, "GET", "/api/visitors/list/latest", key="wrong")[0] == 401  # no key, no bucket to spend
    deadline = time.monotonic() + 5
    while rest(r, "GET", "/api/visitors/list/latest")[0] == 429:  # the bucket refills
        assert time.monotonic() < deadline, "no call allowed again after Retry-After"
        time.sleep(0.25)


# --- origins on loopback -------------------------------------------------------------------------
def test_loopback_host_admits_pages_on_localhost_and_127_0_0_1(relay_factory: Any) -> None:
    r = relay_factory().start()

    async def scenario() -> None:
        for origin in (f"http://localhost:{r.port}", f"http://127.0.0.1:{r.port}", f"http://LOCALHOST:{r.port}"):
            await open_socket(r, "/ws/visitor", origin=origin)
        for origin in (f"http://localhost:{r.port + 1}", "http://localhost", f"https://evil.example:{r.port}"):
            with pytest.raises(InvalidStatus) as refused:
                await open_socket(r, "/ws/visitor", origin=origin)
            assert refused.value.response.status_code == 403

    run(scenario())


# --- the browser bundle ------------------------------------------------------------------------------
def test_without_the_bundle_start_up_warns_once_and_its_pages_answer_503_with_the_fix(
    relay_factory: Any, tmp_path: Path
) -> None:
    web = tmp_path / "web"  # the pages, and no dist/: a checkout where `make web` never ran
    shutil.copytree(WEB_DIR / "pages", web / "pages")
    boot = "import pathlib, sys; import relay.api.pages as p; p.WEB_DIR = pathlib.Path(sys.argv[1]); "
    boot += "from relay.__main__ import main; sys.exit(main([]))"
    r = relay_factory(command=[sys.executable, "-c", boot, str(web)]).start()
    warnings = [line for line in r.output().splitlines() if "bundle" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "make web" in warnings[0]
    for path in ("/sdk.js", "/viewer.js", "/console.js", "/screen?id=X&token=Y", "/console", "/demo"):
        status, _, body = get(f"{r.base}{path}")
        assert status == 503 and b"make web" in body, path
    assert get(f"{r.base}/health")[0] == 200


def test_with_the_bundle_built_no_warning_is_logged(relay: Any) -> None:
    if not (WEB_DIR / "dist" / "sdk.js").exists():
        pytest.fail("relay/web/dist/sdk.js is missing: `make test` builds it first")
    assert "bundle" not in relay.output()
    assert get(f"{relay.base}/demo")[0] == 200


# --- files -------------------------------------------------------------------------------------------
def test_data_dir_and_its_files_are_private_from_creation(relay_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    # umask 0: the modes come from how the files are created, not from a careful umask.
    r = relay_factory(data_dir=tmp_path / "harness", SECRET_KEY="", DATA_DIR=str(data), umask=0).start()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = sorted(p.name for p in data.iterdir())
    assert "secret_key" in files and "relay.sqlite3" in files and "relay.sqlite3-wal" in files, files
    for name in files:
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert r.stop() == 0


# --- the harness itself -------------------------------------------------------------------------------
def test_a_relay_in_the_tests_ignores_the_developers_environment(
    relay_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"REDIS_URL": "redis://127.0.0.1:1", "REST_RATE": "1", "BASE_ENDPOINT": "http://x:1"}.items():
        monkeypatch.setenv(name, value)  # each would change or stop the relay if it got through
    r = relay_factory().start()
    assert {"REDIS_URL", "REST_RATE", "BASE_ENDPOINT"}.isdisjoint(r.env)
    assert [rest(r, "GET", "/api/visitors/list/latest")[0] for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("YES", True), ("", False), ("0", False)])
def test_ci_is_read_one_way(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_a_restart_on_the_same_port_keeps_it(relay_factory: Any, tmp_path: Path) -> None:
    first = relay_factory(data_dir=tmp_path / "same").start()
    port = first.port
    assert first.stop() == 0
    again = relay_factory(data_dir=tmp_path / "same", port=port).start()
    assert again.port == port and get(f"{again.base}/health")[0] == 200
