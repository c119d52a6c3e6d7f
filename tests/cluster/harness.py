"""Helpers for cluster tests: several relay nodes, and the shipped HAProxy config in front of them.

:func:`start_nodes` starts ``n`` relays named ``node1..nodeN`` sharing one
``SECRET_KEY``, ``REST_KEY`` and ``ALLOWED_ORIGINS`` (:data:`ORIGIN`), with
``TRUSTED_PROXIES=127.0.0.1`` (the balancer); with a ``redis_url`` they run in
cluster mode with a short ``OWNERSHIP_TTL``. :class:`Haproxy` runs
``deploy/haproxy.cfg`` itself (not a copy) with the environment pointing at the
nodes, on a free loopback port, and reads server states from its admin socket.

Both speak to :mod:`tests.relay.client` like a relay does: a :class:`Haproxy`
has ``base``, ``ws_base``, ``origin`` and ``rest_key``, so
``client.visitor(balancer)`` opens a visitor socket through the balancer and
``client.rest(balancer, ...)`` calls the API through it.

Every wait is bounded in time; every process started here is stopped by the
object that started it (``stop()``, or leaving its ``with`` block).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from ..conftest import ROOT, Relay, base_env, free_port, require_binary

__all__ = [
    "BACKEND",
    "HAPROXY_CFG",
    "NGINX_CONF",
    "ORIGIN",
    "REST_KEY",
    "SECRET_KEY",
    "SERVERS",
    "SYSTEMD_UNIT",
    "Haproxy",
    "Node",
    "binary",
    "node_env",
    "nodes_running",
    "start_nodes",
    "stop_nodes",
]

DEPLOY = ROOT / "deploy"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
NGINX_CONF = DEPLOY / "nginx.conf"
SYSTEMD_UNIT = DEPLOY / "cobrowse-relay.service"

SERVERS = ("node1", "node2", "node3")  # the server names in deploy/haproxy.cfg: the nodes' NODE_NAME
BACKEND = "relay_nodes"  # its backend
ORIGIN = "http://shop.test"  # the page origin every node allows (ALLOWED_ORIGINS)
SECRET_KEY = "cluster-test-secret-0123456789abcdef"
REST_KEY = "cluster-test-rest-key"


class Node(Relay):
    """A relay named ``name`` (its NODE_NAME).

    ``base`` is always the node's own address (plus the path of its
    BASE_ENDPOINT), even when BASE_ENDPOINT names the balancer: tests and
    :meth:`Relay.start` reach this node directly. ``public`` is BASE_ENDPOINT.
    """

    def __init__(self, data_dir: Path, name: str, port: int | None = None, **env: str) -> None:
        super().__init__(data_dir, port, **cast("dict[str, Any]", {**env, "NODE_NAME": name}))
        self.name = name

    @property
    def base(self) -> str:
        path = urlsplit(self.env.get("BASE_ENDPOINT", "")).path.rstrip("/")
        return f"http://127.0.0.1:{self._port()}{path}"

    @property
    def public(self) -> str:
        return self.env.get("BASE_ENDPOINT") or self.base

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what the balancer is told (``NODEn_ADDR``)."""
        return f"127.0.0.1:{self._port()}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def node_env(name: str, redis_url: str | None = None, **env: str) -> dict[str, str]:
    """The environment :func:`start_nodes` gives node ``name``; ``env`` wins over it."""
    out = {
        "NODE_NAME": name,
        "SECRET_KEY": SECRET_KEY,
        "REST_KEY": REST_KEY,
        "ALLOWED_ORIGINS": ORIGIN,
        "TRUSTED_PROXIES": "127.0.0.1",
    }
    if redis_url is not None:
        out["REDIS_URL"] = redis_url
        out["OWNERSHIP_TTL"] = "2"  # a dead node's sessions are taken over within seconds
    return {**out, **env}


def start_nodes(
    tmp_path: Path,
    n: int,
    redis_url: str | None,
    *,
    timeout: float = 30.0,
    per_node: Sequence[Mapping[str, str]] = (),
    **env: str,
) -> list[Node]:
    """Start ``n`` nodes ``node1..nodeN`` at once, each with DATA_DIR ``tmp_path/nodeK``; wait
    until every one answers /health 200 (each within ``timeout``). ``redis_url`` None: single-node
    relays (no REDIS_URL). ``env`` goes to every node, ``per_node[k]`` to node k+1 on top. If one
    fails to start, those started are stopped and the error is raised. Stop them with
    :func:`stop_nodes`.
    """
    nodes = []
    for i in range(n):
        name = f"node{i + 1}"
        extra = per_node[i] if i < len(per_node) else {}
        node = node_env(name, redis_url, **{**env, **extra})
        nodes.append(Node(tmp_path / name, node.pop("NODE_NAME"), **cast("dict[str, Any]", node)))
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        futures = [pool.submit(node.start, timeout) for node in nodes]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        stop_nodes(nodes)
        raise failed[0]
    return nodes


def stop_nodes(
    nodes: Sequence[Relay], sig: int = signal.SIGTERM, timeout: float = 15.0, *, drain: bool = True
) -> list[int | None]:
    """Stop every node that was started, at once; their exit statuses. Each drains on its own
    (DRAIN_DELAY: 3 s in cluster mode); ``drain=False`` sends a second SIGTERM right after the
    first, which skips the delay (the sockets are still closed with 1001): a quick teardown."""

    def stop(node: Relay) -> int | None:
        if node.proc is None:
            return None
        if not drain and sig == signal.SIGTERM and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)  # the relay takes the first as the start of its drain
        return node.stop(sig, timeout)

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        return list(pool.map(stop, nodes))


@contextlib.contextmanager
def nodes_running(tmp_path: Path, n: int, redis_url: str | None, **env: str) -> Iterator[list[Node]]:
    """:func:`start_nodes` for a ``with`` block; the nodes are stopped when it ends."""
    nodes = start_nodes(tmp_path, n, redis_url, **cast("dict[str, Any]", env))
    try:
        yield nodes
    finally:
        stop_nodes(nodes)


def binary(name: str) -> str:
    """Path of a server binary, looked up in PATH and then in the sbin directories (where
    Debian puts haproxy and nginx, outside a normal user's PATH); :func:`require_binary`'s
    verdict when it is in neither (a failure under CI=true, a skip elsewhere)."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin") or require_binary(name)


def _unused_address() -> str:
    """A loopback address nothing listens on (connections are refused): a server slot with no node."""
    return f"127.0.0.1:{free_port()}"


class Haproxy:
    """``haproxy -db -f deploy/haproxy.cfg`` in front of ``nodes``, on ``127.0.0.1:port``.

    ``nodes`` fill the config's servers in order (``NODE1_ADDR``...): a :class:`Relay` by
    its port, a string as ``HOST:PORT``, ``None`` (or a missing one) as an address nobody
    listens on, so that server is DOWN. ``env`` adds to or overrides the config's
    variables (``RELAY_BASE_PATH``...). The admin socket lives in a short temporary
    directory (a unix socket path has a length limit); the log is ``directory/haproxy.log``.
    """

    def __init__(
        self,
        directory: Path,
        nodes: Sequence[Relay | str | None],
        *,
        port: int | None = None,
        config: Path = HAPROXY_CFG,
        rest_key: str = REST_KEY,
        **env: str,
    ) -> None:
        if len(nodes) > len(SERVERS):
            raise ValueError(f"{config.name} has {len(SERVERS)} servers, got {len(nodes)} nodes")
        self.directory = directory
        self.config = config
        self.port = port
        self.rest_key = rest_key
        self.origin = ORIGIN
        self.nodes = list(nodes)
        self._extra = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "haproxy.log"
        self._socket_dir: str | None = None

    # --- addresses ---------------------------------------------------------------------
    @property
    def base(self) -> str:
        assert self.port is not None, "the port is known once haproxy has started"
        return f"http://127.0.0.1:{self.port}{self._extra.get('RELAY_BASE_PATH', '')}"

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://", 1)

    @property
    def stats_socket(self) -> str:
        assert self._socket_dir is not None, "the socket exists once haproxy has started"
        return os.path.join(self._socket_dir, "admin.sock")

    def env(self) -> dict[str, str]:
        """The environment haproxy runs with: the allow-list, the config's variables, ``env``."""
        addresses: dict[str, str] = {}
        for i, _ in enumerate(SERVERS):
            node = self.nodes[i] if i < len(self.nodes) else None
            if isinstance(node, Relay):
                assert node.port is not None, "start the nodes before the balancer"
                addresses[f"NODE{i + 1}_ADDR"] = f"127.0.0.1:{node.port}"
            elif isinstance(node, str):
                addresses[f"NODE{i + 1}_ADDR"] = node
            else:
                addresses[f"NODE{i + 1}_ADDR"] = _unused_address()
        config = {
            "RELAY_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_SOCKET": self.stats_socket,
            **addresses,
        }
        if os.geteuid() != 0:
            config["HAPROXY_USER"] = ""  # cannot switch user: run as the invoking one
        return base_env(**{**config, **self._extra})

    # --- life cycle --------------------------------------------------------------------
    def check(self) -> subprocess.CompletedProcess[str]:
        """``haproxy -c -f CONFIG`` with this balancer's environment (nothing is started)."""
        self._socket_dir = self._socket_dir or tempfile.mkdtemp(prefix="hap")
        if self.port is None:
            self.port = free_port()
        return subprocess.run(
            [binary("haproxy"), "-c", "-f", str(self.config)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self, timeout: float = 15.0, wait_up: bool = True) -> Haproxy:
        """Start haproxy; return once it accepts connections and its admin socket answers, and
        (``wait_up``) every server given a running node has passed a health check. A port taken
        meanwhile by someone else: started again on another, three times at most."""
        haproxy = binary("haproxy")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._socket_dir = self._socket_dir or tempfile.mkdtemp(prefix="hap")
        deadline = time.monotonic() + timeout
        chosen = self.port
        for _ in range(3):
            self.port = chosen or free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [haproxy, "-db", "-f", str(self.config)],
                    env=self.env(),
                    cwd=self.directory,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._await_listening(deadline):
                break
            if chosen is not None:
                break
        else:
            raise RuntimeError(f"haproxy exited three times before listening:\n{self.log()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
        if wait_up:
            for name, node in zip(SERVERS, self.nodes, strict=False):
                if isinstance(node, Relay) and node.proc is not None and node.proc.poll() is None:
                    self.wait_state(name, "UP", max(0.1, deadline - time.monotonic()))
        return self

    def _await_listening(self, deadline: float) -> bool:
        """True once the port accepts and the admin socket answers; False if haproxy exited first."""
        assert self.proc is not None and self.port is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                self.command("show info")
                return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not listen on {self.port} in time:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop haproxy (SIGTERM: at once, connections cut); its exit status."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        return code

    def __enter__(self) -> Haproxy:
        return self if self.proc is not None else self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else "(no log)"

    # --- runtime API -------------------------------------------------------------------
    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on the admin socket (``show stat``, ``set server relay_nodes/node2 state
        drain``...); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.stats_socket)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stat(self) -> list[dict[str, str]]:
        """``show stat`` of the nodes' backend: one row per server (``svname``, ``status``,
        ``check_status``, ``scur`` (current sessions), ``stot`` (total)...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return [r for r in rows if r.get("pxname") == BACKEND and r.get("svname") not in ("FRONTEND", "BACKEND")]

    def server_states(self) -> dict[str, str]:
        """Each server's status as HAProxy says it: ``UP``, ``DOWN``, ``MAINT``, ``DRAIN``, or a
        transition (``UP 1/2``: one check failed, still in rotation; ``DOWN 1/2``: rising)."""
        return {r["svname"]: r["status"] for r in self.stat()}

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> None:
        """Wait until server ``name``'s status is exactly ``state`` (``UP`` only once a health
        check has passed: a server starts UP before its first check); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            rows = {r["svname"]: r for r in self.stat()}
            if name not in rows:
                raise KeyError(f"no server {name!r} in {BACKEND}: {sorted(rows)}")
            seen = rows[name]
            checked = seen.get("check_status", "").startswith("L7OK")
            if seen["status"] == state and (state != "UP" or checked):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"haproxy server {name} is {seen['status']!r} (check {seen.get('check_status')!r}),"
                    f" not {state!r}, after {timeout} s"
                )
            time.sleep(0.05)

    def set_address(self, name: str, address: str) -> None:
        """Point server ``name`` at ``HOST:PORT`` (a node restarted on another port)."""
        host, port = address.rsplit(":", 1)
        answer = self.command(f"set server {BACKEND}/{name} addr {host} port {port}")
        if "changed" not in answer and "no need to change" not in answer:
            raise RuntimeError(f"haproxy refused the new address of {name}: {answer.strip()}")

    def health(self, timeout: float = 5.0) -> int:
        """Status of ``GET /health`` through the balancer."""
        try:
            with urllib.request.urlopen(f"{self.base}/health", timeout=timeout) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
