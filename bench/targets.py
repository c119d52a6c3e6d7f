"""The servers under test: the relay and the two baselines, each pinned to the server core;
for the cluster scenario, relay nodes sharing a redis-server the bench starts."""

from __future__ import annotations

import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import Server, child_setup, free_port, wait_port

__all__ = [
    "TARGETS",
    "BASELINES",
    "ORIGIN",
    "LIFTED",
    "Target",
    "start_target",
    "start_node",
    "start_redis",
    "Redis",
    "REPO",
    "SECRET",
]

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-0123456789abcdefghijklmnop"  # >= 32 chars; signs grants offline
TARGETS = ("relay", "websockets", "picows")
BASELINES = ("websockets", "picows")
ORIGIN = "http://127.0.0.1"  # the Origin header every load generator socket sends

# Scenarios 1-7 measure forwarding, so the relay they share runs with the
# per-address and per-socket limits (relay/settings.py) lifted: one source
# address opens up to 20,000 sockets there and one visitor sends up to ~200,000
# frames/s, which the defaults would refuse (the limits' bookkeeping still runs).
# Scenarios 8 (storm) and 9 (flood) start a relay of their own with every limit
# at its default (``limits=True``).
LIFTED = {
    "MAX_SOCKETS_PER_IP": "10000000",
    "NEW_VISITORS_PER_IP": "10000000",
    "RATE_CONTROL": "1000000000",
    "RATE_CONTENT": "1000000000",
    "RATE_BYTES": "1000000000000",
}


@dataclass
class Target:
    name: str
    mode: str  # "relay" or "raw"
    server: Server | None = None
    error: str = ""
    tmp: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.server is not None and self.server.alive()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}"

    def spec(self) -> dict[str, Any]:
        """Fields every load generator job for this target needs."""
        assert self.server is not None
        return {"mode": self.mode, "url": self.url, "server_pid": self.server.pid, "secret": SECRET}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def _wait_health(port: int, server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"exited with {server.proc.returncode}: {server.log_tail(8)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise TimeoutError(f"/health not 200 after {timeout}s ({last})")


def relay_env(port: int, data_dir: str, *, limits: bool = False) -> dict[str, str]:
    """The relay's environment in the bench: :data:`LIFTED` limits and any Origin, or
    (``limits``) every limit at its default and ALLOWED_ORIGINS naming :data:`ORIGIN`."""
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "REST_KEY": "bench",
        "SECRET_KEY": SECRET,
        "DATA_DIR": data_dir,
        "ALLOWED_ORIGINS": ORIGIN if limits else "*",
        "LOG_LEVEL": "warning",
    }
    if not limits:
        env.update(LIFTED)
    return env


def start_target(name: str, core: int | None, log_dir: Path, *, limits: bool = False) -> Target:
    """Start one server; on failure return a Target whose ``error`` says why.

    ``limits`` (the relay only): every limit at its default and ALLOWED_ORIGINS
    naming the load generator's Origin, instead of :data:`LIFTED` and ``*``.
    """
    port = free_port()
    py = sys.executable
    t = Target(name, "relay" if name == "relay" else "raw")
    try:
        if name == "relay":
            t.tmp = tempfile.TemporaryDirectory(prefix="bench-relay-")
            t.server = Server(
                f"{name}-limits" if limits else name,
                [py, "-m", "relay"],
                port,
                env=relay_env(port, t.tmp.name, limits=limits),
                core=core,
                log_dir=log_dir,
                cwd=str(REPO),
                preexec=child_setup,
            )
            _wait_health(port, t.server)
        else:
            module = {"websockets": "bench.baseline_websockets", "picows": "bench.baseline_picows"}[name]
            t.server = Server(
                name,
                [py, "-m", module, "--port", str(port)],
                port,
                core=core,
                log_dir=log_dir,
                cwd=str(REPO),
                preexec=child_setup,
            )
            wait_port(port, 15, t.server.proc)
    except Exception as e:
        t.error = f"{type(e).__name__}: {e}"
        if t.server is not None:
            t.error += f" | log: {t.server.log_tail(5)}"
            t.server.stop()
        t.server = None
    return t


# --- cluster mode: relay nodes sharing one redis-server ----------------------------------------
class Redis:
    """A ``redis-server`` on a free loopback port, pinned to ``core``: no persistence (no RDB
    snapshot, no AOF), no other clients than the nodes and the bench, logs in ``log_dir``."""

    def __init__(self, core: int | None, log_dir: Path) -> None:
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-redis-")
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.tmp.name, "--protected-mode", "no"]
        self.server = Server("redis", argv, self.port, core=core, log_dir=log_dir, preexec=child_setup)
        try:
            self._wait(10.0)
        except Exception:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.server.pid

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """One command, its raw reply (enough for PING and INFO)."""
        req = b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(f"*{len(args)}\r\n".encode() + req)
            data = b""
            while not data.endswith(b"\r\n") or (data.startswith(b"$") and len(data) < _bulk_len(data)):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise RuntimeError(f"redis-server exited: {self.server.log_tail(5)}")
            try:
                if self.command("PING", timeout=0.5).startswith(b"+PONG"):
                    return
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer PING in {timeout}s ({last})")

    def stop(self) -> None:
        self.server.stop()
        self.tmp.cleanup()


def _bulk_len(data: bytes) -> int:
    """Length of a whole RESP bulk reply whose head is in ``data``."""
    head, _, _ = data.partition(b"\r\n")
    return len(head) + 2 + int(head[1:]) + 2


def start_redis(core: int | None, log_dir: Path) -> Redis:
    return Redis(core, log_dir)


def start_node(
    name: str, redis_url: str | None, core: int | None, log_dir: Path, *, ownership_ttl: float = 5.0
) -> Target:
    """A relay named ``name`` (NODE_NAME; its log ``name.log``) with the limits lifted as for
    scenarios 1-7. With ``redis_url`` a cluster node: REDIS_URL, NODE_URL its own address,
    OWNERSHIP_TTL, no drain delay (the bench stops it at once)."""
    port = free_port()
    t = Target(name, "relay")
    t.tmp = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
    env = relay_env(port, t.tmp.name)
    env["NODE_NAME"] = name
    if redis_url is not None:
        env.update(
            REDIS_URL=redis_url,
            NODE_URL=f"http://127.0.0.1:{port}",
            OWNERSHIP_TTL=f"{ownership_ttl:g}",
            DRAIN_DELAY="0",
        )
    try:
        t.server = Server(
            name,
            [sys.executable, "-m", "relay"],
            port,
            env=env,
            core=core,
            log_dir=log_dir,
            cwd=str(REPO),
            preexec=child_setup,
        )
        _wait_health(port, t.server)
    except Exception as e:
        t.error = f"{type(e).__name__}: {e}"
        if t.server is not None:
            t.error += f" | log: {t.server.log_tail(5)}"
            t.server.stop()
        t.server = None
    return t
