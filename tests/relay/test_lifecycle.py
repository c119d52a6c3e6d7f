"""Start-up, configuration, durability across SIGKILL, draining on SIGTERM, mounting."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import protocol as p
from relay.settings import Settings, SettingsError

from ..conftest import ROOT, free_port
from .client import live_session, rest, run, upgrade_request, visitor, wait_for


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
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL"),  # no service name
        ({"REDIS_URL": "redis://127.0.0.1:1", "NODE_NAME": "two words"}, "NODE_NAME"),
        ({"NODE_URL": "ftp://node1.example"}, "NODE_URL"),
        ({"OWNERSHIP_TTL": "0"}, "OWNERSHIP_TTL"),
        ({"DRAIN_DELAY": "-1"}, "DRAIN_DELAY"),
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


def test_cluster_mode_refuses_to_start_without_an_explicit_secret_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    full = {**env, "DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "relay"], env=full, cwd=ROOT, capture_output=True, timeout=30)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("cobrowse-relay: invalid configuration: SECRET_KEY:")
    assert not (tmp_path / "secret_key").exists()  # nothing generated: every node must share one


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
        await visitor(r, "MOUNTED001")  # known to the relay once its WELCOME has come
        status, answer = rest(r, "POST", "/api/visitors/MOUNTED001/watch_url", {"agent": {"id": "1", "name": "A"}})
        assert status == 200
        assert answer["watch_url"].startswith(f"http://127.0.0.1:{port}/cobrowsing/screen?id=MOUNTED001&token=")

    run(scenario())


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

    wait_for(ended, 5.0)
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


# --- /health -------------------------------------------------------------------------------
def _health(port: int, timeout: float = 20.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def _ask(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/health")
    response = conn.getresponse()
    response.read()
    return response.status


class _RawSocket:
    """A websocket read by hand: a close frame shows the moment it is sent."""

    def __init__(self, sock: socket.socket, buf: bytes) -> None:
        self.sock, self.buf = sock, buf

    def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload)."""
        for _ in range(10_000):  # bounded: each pass parses a frame or reads a chunk
            buf = self.buf
            if len(buf) >= 2:
                opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
                if n >= 126:
                    at = 4 if n == 126 else 10
                    n = int.from_bytes(buf[2:at], "big") if len(buf) >= at else len(buf)
                if len(buf) >= at + n:
                    self.buf = buf[at + n :]
                    return opcode, buf[at : at + n]
            chunk = self.sock.recv(65536)
            assert chunk, "the connection ended without a close frame"
            self.buf += chunk
        raise AssertionError("no frame")

    def close_code(self) -> int:
        for _ in range(10_000):
            opcode, payload = self.frame()
            if opcode == 0x8:
                return int(struct.unpack(">H", payload[:2])[0])
        raise AssertionError("no close frame")

    def close(self) -> None:
        self.sock.close()


def _raw_visitor(relay: Any) -> _RawSocket:
    """A visitor socket, admitted (its WELCOME read), then read by hand."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    sock.sendall(upgrade_request(origin=relay.origin))
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    hello = p.encode(p.Hello(role="visitor", version=p.PROTOCOL_VERSION, client_id="HEALTH0001"))
    mask = os.urandom(4)
    sock.sendall(bytes([0x82, 0x80 | len(hello)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(hello)))
    raw = _RawSocket(sock, rest)
    for _ in range(100):
        opcode, payload = raw.frame()
        if opcode == 0x2:
            assert isinstance(p.decode(payload), p.Welcome)
            return raw
    raise AssertionError("no WELCOME")


def test_health_is_503_from_the_moment_sigterm_drains_the_relay_until_it_stops_listening(relay_factory: Any) -> None:
    # uvicorn stops listening at its next 100 ms tick after the signal; the drain (503,
    # then 1001 to every socket) runs in the signal handler before it. A run whose
    # window closed before the first poll proves nothing either way and is retried.
    for _ in range(3):  # bounded retries of an inconclusive run
        r = relay_factory().start()
        held = _raw_visitor(r)
        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
        assert _ask(conn) == 200  # a kept-alive connection, ready before the signal
        assert r.proc is not None
        r.proc.send_signal(signal.SIGTERM)
        assert held.close_code() == p.CloseCode.GOING_AWAY  # the drain has run
        statuses: list[int] = []
        for _ in range(500):  # bounded: at most one poll per iteration
            try:
                statuses.append(_ask(conn))
            except (OSError, http.client.HTTPException):
                conn.close()  # closed by the relay's shutdown: a new one, while the port listens
                conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
                try:
                    statuses.append(_ask(conn))
                except (OSError, http.client.HTTPException):
                    break  # the port is closed
        held.close()
        conn.close()
        assert r.proc.wait(15) in (0, -signal.SIGTERM)
        assert 200 not in statuses, statuses
        if statuses:
            assert set(statuses) == {503}
            return
    pytest.fail("three relays stopped listening before /health could be asked once after the drain")


def _relay_db(relay: Any) -> Path:
    return Path(relay.data_dir) / "relay.sqlite3"


def test_health_is_503_while_the_store_cannot_write_and_200_again_once_it_can(relay_factory: Any) -> None:
    r = relay_factory().start()
    assert _health(r.port) == 200
    other = sqlite3.connect(_relay_db(r), isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN EXCLUSIVE")  # e.g. a second relay or a backup tool on the same DATA_DIR
        assert _health(r.port) == 503
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _health(r.port) == 200


def test_health_asks_the_store_and_is_503_when_its_ping_fails(tmp_path: Path) -> None:
    from starlette.requests import Request

    from relay.app import create_app, health

    class DownStore:
        async def ping(self) -> bool:
            return False

    class UpStore(DownStore):
        async def ping(self) -> bool:
            return True

    app = create_app(Settings.from_env({"DATA_DIR": str(tmp_path)}))

    class Service:
        draining = False
        cluster = None
        store: DownStore = DownStore()

    app.state.service = Service()
    app.state.ready = True

    async def status() -> int:
        request = Request({"type": "http", "app": app, "method": "GET", "path": "/health", "headers": []})
        return (await health(request)).status_code

    assert asyncio.run(status()) == 503
    Service.store = UpStore()
    assert asyncio.run(status()) == 200
    Service.draining = True
    assert asyncio.run(status()) == 503
