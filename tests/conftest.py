"""Shared fixtures: a real relay process on 127.0.0.1, started per test module or test.

A relay binds ``PORT=0`` unless a test names a port, and the harness reads the
port it got from the first line it prints (``cobrowse-relay on http://HOST:PORT``):
no port is picked, closed and bound again. Its environment is built from an
allow-list plus what the test passes, never from the developer's shell. It is
stopped with SIGTERM, so a relay measured by coverage writes its data.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a relay subprocess inherits from the test run: enough to find Python, its
# packages and a temp dir, and to be measured by coverage. Nothing else: a REST_KEY,
# REDIS_URL or LOG_LEVEL in the developer's shell must not change a test.
INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "VIRTUAL_ENV",
    "COVERAGE_PROCESS_START",
    "COVERAGE_FILE",
    "COVERAGE_RCFILE",
)
BANNER = re.compile(r"^cobrowse-relay on http://(?:\[[^\]]+\]|[^:/\s]+):(\d+)$", re.M)


def in_ci() -> bool:
    """Under CI (``CI`` set to true/1/yes): what would skip locally must fail instead."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def free_port() -> int:
    """A port free now (for tests that must name one; a relay itself binds PORT=0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**env: str) -> dict[str, str]:
    """The allow-listed part of this process's environment, plus ``env``; when this run
    is measured by coverage (``coverage run -m pytest``), the relays it starts are too."""
    inherited = {k: os.environ[k] for k in INHERITED if k in os.environ}
    return {**inherited, **_coverage_env(), **env}


def _coverage_env() -> dict[str, str]:
    """COVERAGE_PROCESS_START for a child when this process is measured: coverage's .pth
    then measures the child with the same configuration (parallel data files)."""
    try:
        import coverage
    except ImportError:
        return {}
    current = coverage.Coverage.current()
    if current is None or not current.config.config_file:
        return {}
    return {"COVERAGE_PROCESS_START": str(current.config.config_file)}


class Relay:
    """A relay subprocess. ``base`` is its BASE_ENDPOINT; ``env`` what it was started with.

    ``port`` is known once :meth:`start` has read the banner (or when given, for a
    restart on the same port). ``command`` replaces ``python -m relay``; ``stderr_path``
    keeps stderr (the log lines) apart from stdout (the banner); ``umask`` is the
    child's umask.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        command: list[str] | None = None,
        stderr_path: Path | None = None,
        umask: int = -1,
        **env: str,
    ) -> None:
        self.port: int | None = port
        self.data_dir = data_dir
        self.rest_key = env.pop("REST_KEY", "test-rest-key")
        self.secret = env.pop("SECRET_KEY", "test-secret-key-0123456789abcdef")
        defaults = {
            "PORT": str(port or 0),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(data_dir),
            "REST_KEY": self.rest_key,
            "SECRET_KEY": self.secret,
            "LOG_LEVEL": "warning",
        }
        self.env = base_env(**{**defaults, **env})
        for name in ("REST_KEY", "SECRET_KEY"):
            if not self.env[name]:
                del self.env[name]
        self.command = command or [sys.executable, "-m", "relay"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "relay.log"
        self.stderr_path = stderr_path
        self.umask = umask

    @property
    def base(self) -> str:
        return self.env.get("BASE_ENDPOINT") or f"http://127.0.0.1:{self._port()}"

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://", 1)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._port()}"

    def _port(self) -> int:
        assert self.port is not None, "the port is known once the relay has started"
        return self.port

    def start(self, timeout: float = 15.0) -> Relay:
        """Start the process, read the port from its banner, wait until /health is 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._offset = self._log.tell()
        err = open(self.stderr_path, "ab") if self.stderr_path else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=ROOT,
                stdout=self._log,
                stderr=err or subprocess.STDOUT,
                umask=self.umask,
            )
        finally:
            if err is not None:
                err.close()
        deadline = time.monotonic() + timeout
        self.port = self._await_banner(deadline)
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"relay did not become healthy: {self.log()}")

    def _await_banner(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            found = BANNER.search(self.output())
            if found:
                return int(found.group(1))
            self._check_running()
            time.sleep(0.02)
        raise RuntimeError(f"relay printed no banner: {self.log()}")

    def _check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"relay exited with {self.proc.returncode}: {self.log()}")

    def output(self) -> str:
        """What this start of the relay has printed to stdout (and stderr, unless kept apart)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

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


def run_relay(args: list[str], env: Mapping[str, str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m relay ARGS`` to completion with ``env`` on top of the allow-list."""
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=base_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("relay")).start()
    yield r
    r.stop()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[type[Relay] | object]:
    started: list[Relay] = []

    def make(data_dir: Path | None = None, port: int | None = None, **env: Any) -> Relay:
        r = Relay(data_dir or tmp_path / f"relay{len(started)}", port=port, **env)
        started.append(r)
        return r

    yield make
    for r in started:
        if r.proc is not None:
            r.stop(signal.SIGTERM, timeout=10)


def require_binary(name: str) -> str:
    """Path of a binary the test needs; fails under CI=true, skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is required under CI=true")
        pytest.skip(f"{name} not installed (CI would fail here)")
    return path
