"""The servers under test: the relay and the two baselines, each pinned to the server core."""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import Server, child_setup, free_port, wait_port

__all__ = ["TARGETS", "BASELINES", "ORIGIN", "LIFTED", "Target", "start_target", "REPO", "SECRET"]

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
            env = {
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "REST_KEY": "bench",
                "SECRET_KEY": SECRET,
                "DATA_DIR": t.tmp.name,
                "ALLOWED_ORIGINS": ORIGIN if limits else "*",
                "LOG_LEVEL": "warning",
            }
            if not limits:
                env.update(LIFTED)
            t.server = Server(
                f"{name}-limits" if limits else name,
                [py, "-m", "relay"],
                port,
                env=env,
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
