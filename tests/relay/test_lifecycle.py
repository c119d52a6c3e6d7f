"""Start-up, configuration, durability across SIGKILL, draining on SIGTERM, mounting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import protocol as p
from relay.settings import Settings, SettingsError

from ..conftest import ROOT, free_port
from .client import live_session, rest, run, visitor


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "not-a-port"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"BASE_ENDPOINT": "ftp://x"}, "BASE_ENDPOINT"),
        ({"ALLOWED_ORIGINS": "shop.example"}, "ALLOWED_ORIGINS"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"GRANT_TTL": "-5"}, "GRANT_TTL"),
        ({"RESUME_WINDOW": "soon"}, "RESUME_WINDOW"),
        ({"MAX_FRAME": "12"}, "MAX_FRAME"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"REDIS_URL": "http://nope"}, "REDIS_URL"),
    ],
)
def test_bad_setting_stops_startup_with_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    full = {**os.environ, "DATA_DIR": str(tmp_path), "SECRET_KEY": "0123456789abcdef0123", **env}
    done = subprocess.run([sys.executable, "-m", "relay"], env=full, cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cobrowse-relay: invalid configuration: {variable}:")
    with pytest.raises(SettingsError, match=f"^{variable}:"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "SECRET_KEY": "0123456789abcdef0123", **env})


def test_defaults_follow_the_architecture(tmp_path: Path) -> None:
    s = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert (s.port, s.host, s.base_url, s.base_path) == (5002, "127.0.0.1", "http://127.0.0.1:5002", "")
    assert s.allowed_origins == frozenset({"http://127.0.0.1:5002"})
    assert (s.max_frame, s.max_keyframe, s.queue_max_bytes) == (65536, 8 * 1024 * 1024, 1024 * 1024)
    assert (s.ping_interval, s.ping_timeout, s.slow_timeout, s.grant_ttl) == (20, 20, 10, 600)
    assert s.rest_key is None
    kept = (tmp_path / "secret_key").read_text().strip().encode()
    assert s.secret_key == kept and len(kept) >= 32
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).secret_key == kept  # kept across restarts


def test_base_endpoint_with_a_path_mounts_everything_under_it(relay_factory: Any) -> None:
    port = free_port()
    r = relay_factory(port=port, BASE_ENDPOINT=f"http://127.0.0.1:{port}/cobrowsing").start()
    assert urllib.request.urlopen(f"{r.base}/health").status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health")

    async def scenario() -> None:
        await visitor(r, "MOUNTED001")
        await asyncio.sleep(0.1)
        status, answer = rest(r, "POST", "/api/visitors/MOUNTED001/watch_url", {"agent": {"id": "1", "name": "A"}})
        assert status == 200
        assert answer["watch_url"].startswith(f"http://127.0.0.1:{port}/cobrowsing/screen?id=MOUNTED001&token=")

    run(scenario())


def _wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sigkill_and_restart_keeps_visitors_and_history(relay_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "durable"
    first = relay_factory(data_dir=data).start()

    async def scenario() -> None:
        vis, view, _ = await live_session(first, "DURABLE001")
        await vis.send(p.Presence(url="https://shop.example/pay", identities=("Dora",)))
        await view.send(p.RemoteScroll(node=0, dx=0, dy=5))
        await vis.expect(p.RemoteScroll)
        await view.send(p.SessionEnd())
        await view.closed()

    run(scenario())

    def ended() -> Any:
        _, body = rest(first, "GET", "/api/visitors/DURABLE001")
        sessions = body["visitor"]["sessions"]
        return sessions and sessions[0]["ended_at"] and body["visitor"]["identities"] == ["Dora"]

    _wait_for(ended)
    first.stop(signal.SIGKILL)

    again = relay_factory(data_dir=data).start()
    status, body = rest(again, "GET", "/api/visitors/DURABLE001")
    assert status == 200
    v = body["visitor"]
    assert v["identities"] == ["Dora"] and v["last_url"] == "https://shop.example/pay"
    assert v["is_online"] is False and v["is_in_session"] is False
    (session,) = v["sessions"]
    assert session["went_live"] is True and session["features_used"] == ["scroll"]
    assert session["agents"][0]["name"] == "Ann Agent" and session["ended_at"]


def test_sigterm_closes_sockets_with_going_away_and_exits_cleanly(relay_factory: Any) -> None:
    r = relay_factory().start()

    async def scenario() -> None:
        vis, view, _ = await live_session(r, "DRAINED001")
        r.proc.send_signal(signal.SIGTERM)
        assert await vis.closed() == p.CloseCode.GOING_AWAY
        assert await view.closed() == p.CloseCode.GOING_AWAY
        assert p.should_reconnect(p.CloseCode.GOING_AWAY)

    run(scenario())
    assert r.proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert "Traceback" not in r.log()
