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

__all__ = ["TARGETS", "BASELINES", "Target", "start_target", "REPO", "SECRET"]

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-0123456789abcdefghijklmnop"  # >= 32 chars; signs grants offline
TARGETS = ("relay", "websockets", "picows")
BASELINES = ("websockets", "picows")


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


def start_target(name: str, core: int | None, log_dir: Path) -> Target:
    """Start one server; on failure return a Target whose ``error`` says why."""
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
                "ALLOWED_ORIGINS": "*",
                "LOG_LEVEL": "warning",
            }
            t.server = Server(
                name,
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
