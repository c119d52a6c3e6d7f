"""The shipped deployment files, run for real: deploy/haproxy.cfg in front of three relays,
deploy/nginx.conf, deploy/cobrowse-relay.service.

None of this needs cluster mode: the nodes are single-node relays named node1..node3
(NODE_NAME), which is all the balancer routes by. Which node answered is read from
what each node says about itself: the ``node`` of a visitor's WELCOME for websockets,
the ``node`` label of ``/metrics`` for plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

import protocol as p

from ..conftest import base_env, free_port
from ..relay import client
from .harness import (
    HAPROXY_CFG,
    NGINX_CONF,
    SERVERS,
    SYSTEMD_UNIT,
    Haproxy,
    Node,
    binary,
    start_nodes,
    stop_nodes,
)

pytestmark = pytest.mark.cluster

NODE_LABEL = re.compile(r'\bnode="([^"]+)"')


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Node], Haproxy]]:
    """Three nodes behind the shipped haproxy.cfg, shared by the tests that change nothing."""
    binary("haproxy")
    directory = tmp_path_factory.mktemp("cluster")
    nodes = start_nodes(directory, 3, None)
    try:
        with Haproxy(directory / "haproxy", nodes) as balancer:
            yield nodes, balancer
    finally:
        stop_nodes(nodes)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[list[Node], Haproxy]]:
    """Three nodes behind the shipped haproxy.cfg, for a test that stops or breaks one."""
    binary("haproxy")
    nodes = start_nodes(tmp_path, 3, None)
    try:
        with Haproxy(tmp_path / "haproxy", nodes) as balancer:
            yield nodes, balancer
    finally:
        stop_nodes(nodes)


async def _welcome(target: Any, query: str = "") -> tuple[client.Peer, p.Welcome]:
    """A visitor socket to ``target``'s ``/ws/visitor{query}``: the peer and its WELCOME."""
    peer = client.Peer(await client.open_socket(target, f"/ws/visitor{query}"))
    await peer.send(p.Hello(role="visitor", version=p.PROTOCOL_VERSION))
    welcome = await peer.recv()
    assert isinstance(welcome, p.Welcome), welcome
    return peer, welcome


def _ws_node(target: Any, query: str = "") -> str:
    """The NODE_NAME of the node a fresh visitor socket to ``/ws/visitor{query}`` reached."""

    async def scenario() -> str:
        _, welcome = await _welcome(target, query)
        return welcome.node

    return str(client.run(scenario()))


def _http_node(base: str, cookie: str | None = None) -> str:
    """The NODE_NAME of the node that answered ``GET /metrics`` (its samples' ``node`` label)."""
    headers = {"Cookie": cookie} if cookie else {}
    req = urllib.request.Request(f"{base}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read().decode()
    names = set(NODE_LABEL.findall(body))
    assert len(names) == 1, names
    return str(names.pop())


# --- the files are valid as shipped ---------------------------------------------------------


def test_the_shipped_haproxy_cfg_is_valid_with_its_defaults_and_with_every_option(tmp_path: Path) -> None:
    haproxy = binary("haproxy")
    bare = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)],
        env={"PATH": base_env()["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bare.returncode == 0, bare.stderr
    everything = Haproxy(
        tmp_path,
        ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        HAPROXY_STATS_BIND=f"127.0.0.1:{free_port()}",
        HAPROXY_STATS_AUTH="ops:secret",
        HAPROXY_MAXCONN="1000",
        RELAY_BASE_PATH="/cobrowse",
    ).check()
    assert everything.returncode == 0, everything.stderr
    for checked in (bare, everything):
        assert "WARNING" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def test_the_shipped_nginx_conf_is_valid(tmp_path: Path) -> None:
    nginx = binary("nginx")
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(_nginx_config(tmp_path, free_port(), []))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    assert "[warn]" not in checked.stderr, checked.stderr


def test_the_shipped_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # not a server, not required under CI
        pytest.skip("systemd-analyze not installed")
    text = SYSTEMD_UNIT.read_text()
    venv_python = "/opt/cobrowse-relay/venv/bin/python"
    assert f"ExecStart={venv_python} -m relay" in text
    for line in ("KillSignal=SIGTERM", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert line in text.splitlines(), line
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert stop > 3 + 10, "TimeoutStopSec: above DRAIN_DELAY plus the closes"
    # The venv of the unit does not exist here: verify the unit with this interpreter instead.
    unit = tmp_path / SYSTEMD_UNIT.name
    unit.write_text(text.replace(venv_python, sys.executable))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout + verified.stderr == "", verified.stdout + verified.stderr  # unknown keys only warn


# --- haproxy in front of three nodes ------------------------------------------------------


def test_health_through_haproxy_and_every_node_up(cluster: tuple[list[Node], Haproxy]) -> None:
    _, balancer = cluster
    assert balancer.health() == 200
    assert balancer.server_states() == dict.fromkeys(SERVERS, "UP")


def test_a_websocket_with_node_in_its_query_reaches_that_node(cluster: tuple[list[Node], Haproxy]) -> None:
    nodes, balancer = cluster
    for _ in range(2):
        for node in nodes:
            assert _ws_node(balancer, f"?node={node.name}") == node.name
    # Other parameters around it change nothing; an unknown name is load-balanced.
    assert _ws_node(balancer, "?v=2&node=node3&x=1") == "node3"
    assert _ws_node(balancer, "?node=node9") in SERVERS


def test_the_session_cookie_pins_http_requests_to_its_node(cluster: tuple[list[Node], Haproxy]) -> None:
    nodes, balancer = cluster
    for _ in range(2):
        for node in nodes:
            assert _http_node(balancer.base, f"gcbSessionServer={node.name}") == node.name
    assert _http_node(balancer.base, "a=1; gcbSessionServer=node2; b=2") == "node2"
    # The websocket rule and the cookie rule keep to their own kinds of request.
    assert _http_node(balancer.base, "gcbSessionServer=node9") in SERVERS


def test_without_node_or_cookie_requests_spread_over_the_nodes(cluster: tuple[list[Node], Haproxy]) -> None:
    _, balancer = cluster
    seen = {_http_node(balancer.base) for _ in range(12)}
    assert seen == set(SERVERS)


def test_a_node_whose_health_is_503_leaves_rotation_keeps_its_sockets_and_returns(
    own_cluster: tuple[list[Node], Haproxy],
) -> None:
    nodes, balancer = own_cluster
    node2 = nodes[1]

    async def scenario() -> None:
        peer, welcome = await _welcome(balancer, "?node=node2")
        assert welcome.node == "node2"
        # Its visitor row is written: no write of node2's waits on the lock below (its
        # health probes would queue behind it and time out instead of answering 503).
        visitor = f"/api/visitors/{welcome.client_id}"
        await asyncio.to_thread(client.wait_for, lambda: client.rest(node2, "GET", visitor)[0] == 200, 5, "the row")
        # node2's store cannot write (another process holds the SQLite write lock): /health 503.
        lock = sqlite3.connect(node2.data_dir / "relay.sqlite3", isolation_level=None, timeout=5)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            await asyncio.to_thread(balancer.wait_state, "node2", "DOWN", 5.0)
            # Marked down, not cut: the socket through the balancer still reaches node2.
            await peer.send(p.Ping(t=7))
            assert await peer.expect(p.Pong) == p.Pong(t=7)
            # New traffic pinned to node2 goes to the others.
            for _ in range(3):
                _, moved = await _welcome(balancer, "?node=node2")
                assert moved.node in ("node1", "node3")
                cookie = await asyncio.to_thread(_http_node, balancer.base, "gcbSessionServer=node2")
                assert cookie in ("node1", "node3")
            assert await asyncio.to_thread(balancer.health) == 200
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await asyncio.to_thread(balancer.wait_state, "node2", "UP", 5.0)
        _, back = await _welcome(balancer, "?node=node2")
        assert back.node == "node2"
        await peer.send(p.Ping(t=8))
        assert await peer.expect(p.Pong) == p.Pong(t=8)

    client.run(scenario())


def test_a_stopped_node_closes_its_sockets_with_1001_and_traffic_goes_to_the_others(
    own_cluster: tuple[list[Node], Haproxy],
) -> None:
    nodes, balancer = own_cluster
    node2 = nodes[1]

    async def scenario() -> None:
        peer, welcome = await _welcome(balancer, "?node=node2")
        assert welcome.node == "node2"
        assert await asyncio.to_thread(node2.stop) == 0
        # The relay's own close passes through the balancer: 1001, not a cut connection.
        assert await peer.closed() == 1001
        # Whether or not a check has marked node2 DOWN yet, a socket pinned to it lands
        # on another node: while node2 is still in rotation, its refused connection is
        # redispatched (counted in node2's wredis).
        _, moved = await _welcome(balancer, "?node=node2")
        assert moved.node in ("node1", "node3")
        row = next(r for r in await asyncio.to_thread(balancer.stat) if r["svname"] == "node2")
        if not row["status"].startswith("DOWN"):  # in rotation all along: the request went to node2 first
            assert int(row["wredis"]) >= 1, row

    client.run(scenario())
    balancer.wait_state("node2", "DOWN", 5.0)
    for _ in range(3):
        assert _ws_node(balancer, "?node=node2") in ("node1", "node3")
        assert _http_node(balancer.base, "gcbSessionServer=node2") in ("node1", "node3")
    assert balancer.health() == 200


def test_the_nodes_count_per_address_limits_against_the_client_haproxy_names(tmp_path: Path) -> None:
    """TRUSTED_PROXIES=127.0.0.1 (the balancer) and option forwardfor: a node counts the
    sockets of 127.0.0.2 and 127.0.0.3 apart (MAX_SOCKETS_PER_IP=2), not as the balancer's
    one address; an X-Forwarded-For sent by the client itself changes nothing."""
    binary("haproxy")
    nodes = start_nodes(tmp_path, 3, None, MAX_SOCKETS_PER_IP="2")
    try:
        with Haproxy(tmp_path / "haproxy", nodes) as balancer:

            async def admitted(source: str, **headers: str) -> bool:
                ws = await client.open_socket(
                    balancer, "/ws/visitor?node=node1", local_addr=(source, 0), additional_headers=headers
                )
                peer = client.Peer(ws)
                with contextlib.suppress(ConnectionClosed):
                    await peer.send(p.Hello(role="visitor", version=p.PROTOCOL_VERSION))
                try:
                    first = await peer.recv()
                except ConnectionClosed:
                    return False
                if isinstance(first, p.Error):
                    assert first.close_code == 4004, first
                    return False
                assert isinstance(first, p.Welcome) and first.node == "node1", first
                return True

            async def scenario() -> None:
                assert [await admitted("127.0.0.2") for _ in range(2)] == [True, True]
                assert [await admitted("127.0.0.3") for _ in range(2)] == [True, True]  # not the same address
                assert not await admitted("127.0.0.2")  # its own limit
                assert not await admitted("127.0.0.3", **{"X-Forwarded-For": "127.0.0.9"})  # a forged header

            client.run(scenario())
    finally:
        stop_nodes(nodes)


# --- nginx in front of three nodes --------------------------------------------------------


def _nginx_config(directory: Path, port: int, nodes: list[Node]) -> Path:
    """deploy/nginx.conf with its addresses replaced (nodes', or closed ports when none given)
    and listening on 127.0.0.1:port, included in a main config whose files are all in
    ``directory``: what ``nginx -c`` reads."""
    text = NGINX_CONF.read_text()
    shipped = [f"127.0.0.1:{5001 + i}" for i in range(len(SERVERS))]
    for address in [*shipped, "listen 8080;"]:
        assert address in text, f"{NGINX_CONF.name} no longer holds {address!r}: update this test"
    addresses = [n.address for n in nodes] or [f"127.0.0.1:{free_port()}" for _ in SERVERS]
    for old, new in zip(shipped, addresses, strict=True):
        text = text.replace(old, f"@{new}@")  # marked, so one replacement never feeds the next
    text = re.sub(r"@([^@]+)@", r"\1", text).replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (directory / "relay.conf").write_text(text)
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        f"pid {directory / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {directory / 'relay.conf'};\n}}\n"
    )
    return main


def test_nginx_routes_by_node_and_cookie_and_moves_off_a_draining_then_dead_node(tmp_path: Path) -> None:
    nginx = binary("nginx")
    nodes = start_nodes(tmp_path, 3, None, per_node=[{}, {"DRAIN_DELAY": "3"}])
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    config = _nginx_config(directory, port, nodes)
    with open(directory / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [nginx, "-p", str(directory), "-e", "stderr", "-c", str(config), "-g", "daemon off;"], stderr=err
        )
    try:
        front = _Front(f"http://127.0.0.1:{port}")
        client.wait_for(lambda: _answers(front.base) or proc.poll() is not None, 10, "nginx to listen")
        assert proc.poll() is None, (directory / "stderr").read_text()
        for node in nodes:
            assert _ws_node(front, f"?node={node.name}") == node.name
            assert _http_node(front.base, f"gcbSessionServer={node.name}") == node.name
        node2 = nodes[1]
        assert node2.proc is not None
        node2.proc.send_signal(signal.SIGTERM)
        client.wait_for(lambda: _status(f"{node2.base}/health") == 503, 5, "node2 to drain")
        for _ in range(3):  # draining: its 503 to an upgrade sends the socket to the next server
            assert _ws_node(front, "?node=node2") in ("node1", "node3")
        assert node2.running, "node2 stopped before the drain was seen through nginx"
        assert node2.stop() == 0
        for _ in range(3):  # gone: a refused connection moves on to the next server
            assert _ws_node(front, "?node=node2") in ("node1", "node3")
            assert _http_node(front.base, "gcbSessionServer=node2") in ("node1", "node3")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_nodes(nodes)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


class _Front:
    """A balancer that is not :class:`Haproxy`, as :mod:`tests.relay.client` sees relays."""

    def __init__(self, base: str) -> None:
        from .harness import ORIGIN, REST_KEY

        self.base = base
        self.ws_base = base.replace("http://", "ws://", 1)
        self.origin = ORIGIN
        self.rest_key = REST_KEY


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def test_a_draining_node_leaves_rotation_before_it_closes_its_sockets(tmp_path: Path) -> None:
    """SIGTERM with DRAIN_DELAY 3: /health 503 at once, HAProxy marks the node DOWN, and only
    then does the node close its sockets with 1001; reconnects meanwhile go to the others."""
    binary("haproxy")
    nodes = start_nodes(tmp_path, 3, None, per_node=[{}, {"DRAIN_DELAY": "3"}])
    try:
        with Haproxy(tmp_path / "haproxy", nodes) as balancer:
            node2 = nodes[1]

            async def scenario() -> None:
                peer, welcome = await _welcome(balancer, "?node=node2")
                assert welcome.node == "node2"
                assert node2.proc is not None
                node2.proc.send_signal(signal.SIGTERM)
                began = time.monotonic()
                await asyncio.to_thread(balancer.wait_state, "node2", "DOWN", 5.0)
                down = time.monotonic() - began
                assert peer.ws.close_code is None, f"closed {peer.ws.close_code} before DOWN ({down:.1f} s)"
                _, moved = await _welcome(balancer, "?node=node2")
                assert moved.node in ("node1", "node3")
                assert await peer.closed(10) == 1001
                closed = time.monotonic() - began
                assert down < closed, (down, closed)
                assert closed >= 3 * 0.9, f"closed {closed:.1f} s after SIGTERM: before DRAIN_DELAY"

            client.run(scenario())
            assert node2.stop() == 0
    finally:
        stop_nodes(nodes)


# --- README: "Running several nodes" ------------------------------------------------------


def test_the_readme_walkthrough_runs_three_nodes_behind_haproxy(tmp_path: Path) -> None:
    """The section's shell blocks, pasted in order into one shell (ports, paths and the
    interpreter swapped for this machine's): redis with AOF, three nodes, haproxy; then
    the balancer is healthy with every node UP and routes by name."""
    redis_server = binary("redis-server")
    binary("haproxy")
    blocks = re.findall(r"```sh\n(.*?)```", _readme_section("Running several nodes"), re.S)
    assert len(blocks) == 3, "redis, the nodes, haproxy"
    socket_dir = Path(tempfile.mkdtemp(prefix="hap"))
    ports = {"6379": free_port(), "8080": free_port(), **{f"500{i}": free_port() for i in (1, 2, 3)}}
    swaps = {
        "/tmp/relay-redis": str(tmp_path / "redis"),
        "/tmp/haproxy.sock": str(socket_dir / "admin.sock"),
        "DATA_DIR=data/": f"DATA_DIR={tmp_path}/data/",
        ".venv/bin/python": sys.executable,
        "redis-server ": f"{redis_server} ",
        "haproxy -db -f deploy/": f"{binary('haproxy')} -db -f {HAPROXY_CFG.parent}/",
        **{f"127.0.0.1:{old}": f"127.0.0.1:{new}" for old, new in ports.items()},
        **{f"PORT={old}": f"PORT={ports[old]}" for old in ("5001", "5002", "5003")},
        "--port 6379": f"--port {ports['6379']}",
    }
    script = "\n".join(blocks).rstrip() + " &\nwait\n"  # haproxy too in the background; the shell waits
    for old in swaps:
        assert old in script, f"the walkthrough no longer holds {old!r}: update this test"
    # In one pass, longest first: no replacement is seen by the next.
    pattern = "|".join(re.escape(old) for old in sorted(swaps, key=len, reverse=True))
    script = re.sub(pattern, lambda m: swaps[m.group(0)], script)
    log = open(tmp_path / "walkthrough.log", "wb")  # noqa: SIM115 - closed below
    shell = subprocess.Popen(
        ["bash", "-c", "set -eu\n" + script],
        cwd=tmp_path,
        env=base_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped together below
    )
    base = f"http://127.0.0.1:{ports['8080']}"
    balancer = Haproxy(tmp_path, [], port=ports["8080"])
    balancer._socket_dir = str(socket_dir)
    try:
        client.wait_for(
            lambda: shell.poll() is not None or (_answers(base) and _all_up(balancer)),
            30,
            "the walkthrough's balancer to answer with three nodes UP",
        )
        assert shell.poll() is None, (tmp_path / "walkthrough.log").read_text()
        front = _Front(base)
        front.origin = base  # ALLOWED_ORIGINS defaults to BASE_ENDPOINT's origin: the balancer's
        for name in SERVERS:
            assert _ws_node(front, f"?node={name}") == name
            assert _http_node(base, f"gcbSessionServer={name}") == name
    finally:
        _stop_group(shell)
        log.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


def _stop_group(leader: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM to ``leader``'s process group (the shell, redis, the nodes, haproxy); wait until
    every member has exited (the nodes drain first), SIGKILL to what is left after ``timeout``."""
    group = leader.pid
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader.poll()  # reap the shell, or the group never empties
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    leader.wait()


def _readme_section(title: str) -> str:
    text = (HAPROXY_CFG.parent.parent / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _all_up(balancer: Haproxy) -> bool:
    try:
        states = balancer.server_states()
    except OSError:
        return False
    return states == dict.fromkeys(SERVERS, "UP")
