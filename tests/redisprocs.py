"""Real Redis processes for tests: one server, a Redis Cluster, a Sentinel group (never a fake).

Every process listens on 127.0.0.1 on a port from :func:`free_port`, keeps no
data on disk (``--save "" --appendonly no``) and logs to a file in the
directory it is given. A process that exits before it answers (its port was
taken between the choice and the bind) is started again on other ports,
three times at most. Every wait is bounded in time and raises with the
tail of the log. Plain classes, each usable as a context manager (leaving it
stops everything); test modules make fixtures of them.

Without ``redis-server`` / ``redis-sentinel`` a test skips, and fails under
CI (:func:`require_binary`).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .conftest import free_port, require_binary

__all__ = ["RedisClusterProcs", "RedisServer", "SentinelGroup", "wait_until"]

SLOTS = 16384


def wait_until(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` every 20 ms until it is true; RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s\n{log()}")
        time.sleep(0.02)


def _answers(check: Callable[[], bool]) -> Callable[[], bool]:
    """``check``, False where a server refuses or drops the connection."""

    def go() -> bool:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return check()
        return False

    return go


class _Process:
    """One process of the Redis family on a free port: started, restarted, stopped, killed."""

    binary = "redis-server"

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.log_path = directory / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._args: list[str] = []

    def _arguments(self) -> list[str]:
        """The command line after the binary, for the current :attr:`port` (new ports chosen here)."""
        raise NotImplementedError

    def _start(self) -> None:
        for _ in range(3):
            self.port = free_port()
            self._args = self._arguments()
            if self._spawn():
                return
        raise RuntimeError(f"{self.binary} exited three times before answering:\n{self.log()}")

    def _spawn(self) -> bool:
        """Start with :attr:`_args`: True once it answers PING, False if it exited first."""
        with self.log_path.open("ab") as out:  # startup errors land in the log too
            self.proc = subprocess.Popen(
                [require_binary(self.binary), *self._args], stdout=out, stderr=subprocess.STDOUT
            )
        proc = self.proc
        deadline = time.monotonic() + 10.0
        while not _answers(self._pings)():
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.binary} on port {self.port} did not answer:\n{self.log()}")
            time.sleep(0.02)
        return True

    def _pings(self) -> bool:
        with self.client() as r:
            try:
                return bool(r.ping())
            except (redis.AuthenticationError, redis.ResponseError):  # NOAUTH: it answers
                return True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> redis.Redis:
        """A synchronous client of this process (close it: ``with server.client() as r``).

        It does not retry (redis-py's default spends 3 to 4 s on a refused
        connection): a wait loop polls it, and a test sees a failure at once.
        """
        defaults: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0)}
        return redis.Redis(host="127.0.0.1", port=self.port, **{**defaults, **options})

    def log(self) -> str:
        """The last 2,000 characters of its log."""
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed, no goodbye to clients or peers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same arguments.

        The port may be held for a moment (a client's reconnect, another
        test's choice): five tries, 200 ms apart, then RuntimeError.
        """
        self.stop()
        for _ in range(5):
            if self._spawn():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.binary} did not come back on port {self.port}:\n{self.log()}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(_Process):
    """One ``redis-server``: ``extra`` arguments are appended (``"--replicaof", "127.0.0.1", "6379"``).

    With ``cluster`` it is a Redis Cluster node without slots, its bus on a
    port of its own (:attr:`bus_port`; the default, port + 10000, may not
    exist), announcing 127.0.0.1. Its log is ``NAME.log`` in ``directory``.
    """

    def __init__(self, directory: Path, *extra: str, cluster: bool = False, name: str = "redis") -> None:
        super().__init__(directory, name)
        self._extra = list(extra)
        self._cluster = cluster
        self.bus_port = 0
        self._start()

    def _arguments(self) -> list[str]:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--logfile", str(self.log_path)]
        if self._cluster:
            self.bus_port = free_port()
            while self.bus_port == self.port:
                self.bus_port = free_port()
            nodes = self.directory / f"nodes-{self.port}.conf"
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(nodes)]
            args += ["--cluster-port", str(self.bus_port), "--cluster-announce-ip", "127.0.0.1"]
        return args + self._extra

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as r:
            return dict(r.info(section))


class RedisClusterProcs:
    """A Redis Cluster of ``masters`` nodes (no replicas), the slots split evenly among them.

    Each node is given its slot range (``CLUSTER ADDSLOTSRANGE``) and its own
    config epoch, the first meets the others (``CLUSTER MEET``), and the
    cluster is ready once every node says ``cluster_state:ok``, knows every
    node and sees every slot served (20 s at most).
    """

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for i in range(masters):
                self.nodes.append(RedisServer(directory / f"node{i}", cluster=True))
            self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> None:
        n = len(self.nodes)
        for i, node in enumerate(self.nodes):
            with node.client() as r:
                r.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", i * SLOTS // n, (i + 1) * SLOTS // n - 1)
        with self.nodes[0].client() as r:
            for node in self.nodes[1:]:
                r.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        wait_until("the cluster to be ok on every node", _answers(self._ok), 20, self._logs)

    def _ok(self) -> bool:
        for node in self.nodes:
            info = self._cluster_info(node)
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
            if int(info.get("cluster_slots_ok", 0)) != SLOTS:
                return False
        return True

    @staticmethod
    def _cluster_info(node: RedisServer) -> dict[str, Any]:
        with node.client() as r:
            return dict(r.cluster("info"))

    def _logs(self) -> str:
        return "\n".join(f"--- node {n.port}\n{n.log()}" for n in self.nodes)

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def flushall(self) -> None:
        """Empty every master."""
        for node in self.nodes:
            with node.client() as r:
                r.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Sentinel(_Process):
    """One ``redis-sentinel`` with its own config file (which it rewrites as it learns)."""

    binary = "redis-sentinel"

    def __init__(self, directory: Path, name: str, monitor: str) -> None:
        super().__init__(directory, name)
        self._config = directory / f"{name}.conf"
        self._monitor = monitor
        self._start()

    def _arguments(self) -> list[str]:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.log_path}",
            "sentinel resolve-hostnames no",
            self._monitor,
        ]
        self._config.write_text("\n".join(lines) + "\n")
        return [str(self._config)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class SentinelGroup:
    """A master, one replica of it and three ``redis-sentinel`` watching them (quorum 2).

    Ready once the replica is in sync and every sentinel knows the master,
    the replica and the two other sentinels (20 s at most): from then on a
    failover can be agreed. ``master`` and ``replica`` are the servers as
    started; after a failover the roles are swapped on the servers but not
    on these names: :meth:`current_master_port` asks the sentinels.
    The master's full sync is not delayed (``repl-diskless-sync-delay 0``).
    """

    def __init__(
        self,
        directory: Path,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        service: str = "mymaster",
    ) -> None:
        self.service = service
        self.sentinels: list[_Sentinel] = []
        self._servers: list[RedisServer] = []
        self._killed: int | None = None
        try:
            sync = ("--repl-diskless-sync-delay", "0")
            self.master = RedisServer(directory / "master", *sync)
            self._servers.append(self.master)
            self.replica = RedisServer(directory / "replica", *sync, "--replicaof", "127.0.0.1", str(self.master.port))
            self._servers.append(self.replica)
            wait_until("the replica to sync", _answers(self._replica_synced), 20, self.replica.log)
            monitor = "\n".join(
                [
                    f"sentinel monitor {service} 127.0.0.1 {self.master.port} 2",
                    f"sentinel down-after-milliseconds {service} {down_after_ms}",
                    f"sentinel failover-timeout {service} {failover_timeout_ms}",
                ]
            )
            for i in range(3):
                self.sentinels.append(_Sentinel(directory / "sentinels", f"sentinel{i}", monitor))
            wait_until("every sentinel to know the group", _answers(self._known), 20, self._logs)
        except BaseException:
            self.stop()
            raise

    def _replica_synced(self) -> bool:
        return bool(self.replica.info("replication").get("master_link_status") == "up")

    def _known(self) -> bool:
        for s in self.sentinels:
            with s.client() as r:
                state = r.sentinel_master(self.service)
            if state["num-slaves"] != 1 or state["num-other-sentinels"] != len(self.sentinels) - 1:
                return False
        return True

    def _logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} ({p.port})\n{p.log()}" for p in (*self._servers, *self.sentinels))

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming the three sentinels and the service."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def _masters(self) -> list[int]:
        """The master port each sentinel that answers names."""
        ports = []
        for s in self.sentinels:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError), s.client() as r:
                addr = r.sentinel_get_master_addr_by_name(self.service)
                if addr:
                    ports.append(int(addr[1]))
        return ports

    def current_master_port(self) -> int:
        """The master's port, as the first sentinel that answers names it."""
        ports = self._masters()
        if not ports:
            raise RuntimeError(f"no sentinel names a master for {self.service}")
        return ports[0]

    def server(self, port: int) -> RedisServer:
        """The server of the group on ``port``."""
        return next(s for s in self._servers if s.port == port)

    def kill_master(self) -> RedisServer:
        """SIGKILL the server the sentinels name as master; return it."""
        port = self.current_master_port()
        self._killed = port
        victim = self.server(port)
        victim.kill()
        return victim

    def wait_failover(self, timeout: float = 15.0) -> int:
        """Wait until every sentinel names a new master and it says so itself; its port.

        "New" is another port than the master :meth:`kill_master` killed.
        """
        old = self._killed

        def promoted() -> bool:
            ports = set(self._masters())
            if len(ports) != 1 or old in ports:
                return False
            return bool(self.server(ports.pop()).info("replication").get("role") == "master")

        wait_until("a failover", _answers(promoted), timeout, self._logs)
        return self.current_master_port()

    def flushall(self) -> None:
        """Empty the current master (its replica follows)."""
        with self.server(self.current_master_port()).client() as r:
            r.flushall()

    def stop(self) -> None:
        """Stop the sentinels first (no failover while the servers go), then the servers."""
        for p in (*self.sentinels, *self._servers):
            p.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
