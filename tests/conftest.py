"""Shared fixtures: a real relay process on 127.0.0.1, started per test module or test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Relay:
    """A relay subprocess. ``base`` is its BASE_ENDPOINT; ``env`` what it was started with."""

    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.rest_key = env.pop("REST_KEY", "test-rest-key")
        self.secret = env.pop("SECRET_KEY", "test-secret-key-0123456789abcdef")
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(data_dir),
            "REST_KEY": self.rest_key,
            "SECRET_KEY": self.secret,
            "LOG_LEVEL": "warning",
            **env,
        }
        if not self.rest_key:
            del self.env["REST_KEY"]
        self.base = self.env.get("BASE_ENDPOINT", f"http://127.0.0.1:{self.port}")
        self.ws_base = self.base.replace("http://", "ws://", 1)
        self.origin = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "relay.log"

    def start(self, timeout: float = 15.0) -> Relay:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay"], env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"relay did not become healthy: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("relay")).start()
    yield r
    r.stop()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[type[Relay] | object]:
    started: list[Relay] = []

    def make(data_dir: Path | None = None, port: int | None = None, **env: str) -> Relay:
        r = Relay(data_dir or tmp_path / f"relay{len(started)}", port=port, **env)
        started.append(r)
        return r

    yield make
    for r in started:
        if r.proc is not None:
            r.stop(signal.SIGKILL)


def require_binary(name: str) -> str:
    """Path of a binary the test needs; fails under CI=true, skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required under CI=true")
        pytest.skip(f"{name} not installed (CI would fail here)")
    return path
