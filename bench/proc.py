"""Process and machine helpers: CPU time and RSS from /proc, pinning, file limits, ports."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CLK_TCK",
    "CpuTimes",
    "cpu_times",
    "rss_bytes",
    "raise_nofile",
    "free_port",
    "wait_port",
    "cores",
    "pin_prefix",
    "child_setup",
    "nofile_hard",
    "machine_info",
    "versions",
    "Server",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    user: float  # seconds
    sys: float

    @property
    def total(self) -> float:
        return self.user + self.sys

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.sys - other.sys)


def cpu_times(pid: int) -> CpuTimes:
    """User and system CPU seconds of a whole process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # The command name may contain spaces: fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return CpuTimes(int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def raise_nofile(want: int | None = None) -> int:
    """Raise this process's open-file soft limit (to the hard limit at most); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None or hard == resource.RLIM_INFINITY else min(want, hard)
    if want is not None and hard == resource.RLIM_INFINITY:
        target = want
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def nofile_hard() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 30 if hard == resource.RLIM_INFINITY else hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def cores() -> tuple[int | None, int | None]:
    """(server core, load generator core), or (None, None) when pinning is impossible."""
    avail = sorted(os.sched_getaffinity(0))
    if len(avail) < 2 or shutil.which("taskset") is None:
        return None, None
    return avail[0], avail[1]


def child_setup() -> None:
    """preexec_fn of every bench child: soft file limit to the hard one, and a higher
    priority (``BENCH_NICE``, default -10; ``BENCH_RT=1``: SCHED_FIFO 1) so other
    tenants of a shared machine perturb the figures less. Each is skipped
    silently when not permitted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nice = int(os.environ.get("BENCH_NICE", "-10") or 0)
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    if os.environ.get("BENCH_RT") == "1":  # opt-in: SCHED_FIFO, see bench/README.md
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))


def pin_prefix(core: int | None) -> list[str]:
    return [] if core is None else ["taskset", "-c", str(core)]


def machine_info() -> dict[str, Any]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "os": platform.system(),
        "memory_bytes": mem,
        "nofile_hard": nofile_hard(),
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("uvicorn", "starlette", "websockets", "picows", "uvloop", "msgpack", "cobrowse-relay"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


class Server:
    """A server process pinned to a core, its output in a log file, stopped on exit."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        env: dict[str, str] | None = None,
        core: int | None = None,
        log_dir: Path,
        cwd: str | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*pin_prefix(core), *argv],
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            preexec_fn=preexec,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
