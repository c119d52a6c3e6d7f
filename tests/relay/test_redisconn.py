"""``REDIS_URL``: the parser's forms, defaults and refusals (plain unit tests), then a real
connection to each kind: a redis-server (TCP, Unix socket, password and ACL user), a
Sentinel group and a three-master Redis Cluster, all started here (:mod:`tests.redisprocs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AuthenticationError

from relay.cluster.redisconn import RedisTarget, connect, parse_redis_url, pubsub_client

from ..redisprocs import RedisClusterProcs, RedisServer, SentinelGroup


# --- the parser ---------------------------------------------------------------------------
def test_a_plain_url_defaults_to_port_6379_and_database_0() -> None:
    t = parse_redis_url("redis://127.0.0.1")
    assert (t.kind, t.hosts, t.db, t.tls, t.username, t.password) == (
        "redis", (("127.0.0.1", 6379),), 0, False, None, None,
    )  # fmt: skip
    assert t.url == "redis://127.0.0.1" and t.unix_path is None and t.service_name is None
    assert parse_redis_url("REDIS://h:6380/").hosts == (("h", 6380),)


def test_rediss_is_tls_and_credentials_are_percent_decoded() -> None:
    t = parse_redis_url("rediss://app:p%40ss%2Fw%3Ard@redis.example:6380/3")
    assert (t.kind, t.tls, t.hosts, t.db) == ("redis", True, (("redis.example", 6380),), 3)
    assert (t.username, t.password) == ("app", "p@ss/w:rd")
    assert parse_redis_url("redis://:only-pass@h").username is None
    assert parse_redis_url("redis://:only-pass@h").password == "only-pass"
    assert (parse_redis_url("redis://only-user@h").username, parse_redis_url("redis://only-user@h").password) == (
        "only-user", None,
    )  # fmt: skip


def test_the_password_stays_out_of_repr_and_the_redacted_url() -> None:
    t = parse_redis_url("redis://app:s3cret@h:6379/0")
    assert "s3cret" not in repr(t) and "s3cret" not in t.redacted
    assert t.redacted == "redis://app:***@h:6379/0"
    assert parse_redis_url("redis://h/0").redacted == "redis://h/0"
    assert parse_redis_url("unix://:s3cret@/run/redis.sock").redacted == "unix://:***@/run/redis.sock"


def test_an_ipv6_host_is_written_in_brackets() -> None:
    assert parse_redis_url("redis://[::1]:6380/2").hosts == (("::1", 6380),)
    assert parse_redis_url("redis+cluster://[::1],[::1]:7001").hosts == (("::1", 6379), ("::1", 7001))


def test_a_unix_url_names_the_socket_and_its_database_in_the_query() -> None:
    t = parse_redis_url("unix:///run/redis/redis.sock?db=2")
    assert (t.kind, t.hosts, t.unix_path, t.db) == ("redis", (), "/run/redis/redis.sock", 2)
    assert parse_redis_url("unix:///run/redis.sock").db == 0
    assert parse_redis_url("unix://:pw@/run/redis.sock").password == "pw"


def test_a_sentinel_url_names_its_sentinels_the_service_and_a_database() -> None:
    t = parse_redis_url("redis+sentinel://s1:26380,s2,s3:26381/mymaster/1")
    assert (t.kind, t.hosts) == ("sentinel", (("s1", 26380), ("s2", 26379), ("s3", 26381)))
    assert (t.service_name, t.db, t.tls) == ("mymaster", 1, False)
    t = parse_redis_url("rediss+sentinel://:pw@s1/mymaster")
    assert (t.tls, t.password, t.db, t.hosts) == (True, "pw", 0, (("s1", 26379),))


def test_a_cluster_url_names_its_startup_nodes() -> None:
    t = parse_redis_url("redis+cluster://u:p@n1:7000,n2:7001,n3")
    assert (t.kind, t.hosts, t.db) == ("cluster", (("n1", 7000), ("n2", 7001), ("n3", 6379)), 0)
    assert (t.username, t.password) == ("u", "p")
    assert parse_redis_url("rediss+cluster://n1:7000/0").tls is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "expected a URL such as"),
        ("127.0.0.1:6379", "expected a URL such as"),
        ("http://h", "unknown scheme 'http://'"),
        ("redis+tls://h", "unknown scheme"),
        ("redis://", "a host is missing"),
        ("redis://:6379", "a host is missing"),
        ("redis://h:0", "bad port '0'"),
        ("redis://h:65536", "bad port"),
        ("redis://h:abc", "bad port 'abc'"),
        ("redis://h/x", "bad database 'x'"),
        ("redis://h/-1", "bad database '-1'"),
        ("redis://h/0/1", "bad database"),
        ("redis://a,b", "names one server"),
        ("redis://h/0?db=1", "only read from unix://"),
        ("redis://h/0#x", "no #fragment"),
        ("redis://[::1", "not a valid URL"),
        ("redis://[::1]x", "bad host"),
        ("redis+sentinel://h:26379", "names the master's service"),
        ("redis+sentinel://h:26379/", "names the master's service"),
        ("redis+sentinel://h:26379/m/x", "bad database 'x'"),
        ("redis+cluster://h:7000/1", "only database 0"),
        ("redis+cluster://h1:7000,,h2:7001", "a host is missing"),
        ("unix://host/run/redis.sock", "has no host"),
        ("unix://", "names the socket"),
        ("unix:///run/redis.sock?timeout=1", "unknown option 'timeout'"),
        ("unix:///run/redis.sock?db=x", "bad database 'x'"),
    ],
)
def test_a_malformed_url_is_refused_with_a_short_message(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("(", r"\(")) as e:
        parse_redis_url(url)
    assert "REDIS_URL" not in str(e.value)  # the caller names the variable


def test_a_refusal_never_repeats_the_password() -> None:
    for url in ("redis://:s3cret@h:abc/0", "redis+sentinel://u:s3cret@h", "redis://u:s3cret@h/x"):
        with pytest.raises(ValueError) as e:
            parse_redis_url(url)
        assert "s3cret" not in str(e.value), url


# --- connecting for real ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server on TCP and on a Unix socket, with a password and an ACL user."""
    directory = tmp_path_factory.mktemp("redisconn")
    sock = directory / "redis.sock"
    acl = ["--requirepass", "pass/word", "--user", "app", "on", ">app@pw", "~*", "&*", "+@all"]
    with RedisServer(directory, "--unixsocket", str(sock), "--unixsocketperm", "700", *acl) as s:
        yield s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    with RedisClusterProcs(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path_factory.mktemp("sentinel")) as g:
        yield g


def _write_read(target: RedisTarget, key: str = "k", **options: Any) -> bytes | None:
    async def go() -> bytes | None:
        r = connect(target, socket_timeout=5, **options)
        try:
            await r.set(key, b"v")
            got: bytes | None = await r.get(key)
            return got
        finally:
            await r.aclose()

    return asyncio.run(go())


@pytest.mark.cluster
def test_a_redis_url_writes_and_reads_with_its_credentials_and_database(server: RedisServer) -> None:
    url = f"redis://:pass%2Fword@127.0.0.1:{server.port}/3"
    assert _write_read(parse_redis_url(url), "plain") == b"v"
    acl = f"redis://app:app%40pw@127.0.0.1:{server.port}/3"
    assert _write_read(parse_redis_url(acl), "acl") == b"v"
    with server.client(password="pass/word", db=3) as r:
        assert sorted(r.keys()) == [b"acl", b"plain"]
    with pytest.raises(AuthenticationError):  # a ConnectionError to redis-py: retried 3-4 s by default
        _write_read(parse_redis_url(f"redis://:wrong@127.0.0.1:{server.port}/0"), retry=Retry(NoBackoff(), 0))


@pytest.mark.cluster
def test_a_unix_url_reaches_the_socket_and_its_database(server: RedisServer) -> None:
    sock = server.directory / "redis.sock"
    assert _write_read(parse_redis_url(f"unix://:pass%2Fword@{sock}?db=5"), "unix") == b"v"
    with server.client(password="pass/word", db=5) as r:
        assert r.get("unix") == b"v"


@pytest.mark.cluster
def test_a_sentinel_url_reaches_the_master_the_sentinels_name(sentinels: SentinelGroup) -> None:
    target = parse_redis_url(sentinels.url + "/2")
    assert _write_read(target, "via-sentinel") == b"v"
    with sentinels.server(sentinels.current_master_port()).client(db=2) as r:
        assert r.get("via-sentinel") == b"v"

    async def closed_with_its_sentinels() -> None:
        r = connect(target)
        assert await r.ping()
        manager = r.connection_pool.sentinel_manager
        await r.aclose()
        for s in manager.sentinels:
            assert not any(c.is_connected for c in s.connection_pool._available_connections)

    asyncio.run(closed_with_its_sentinels())


@pytest.mark.cluster
def test_a_cluster_url_spreads_keys_over_every_master(cluster: RedisClusterProcs) -> None:
    cluster.flushall()
    target = parse_redis_url(cluster.url)
    keys = [f"key{i}" for i in range(30)]

    async def go() -> list[bytes | None]:
        r = connect(target, socket_timeout=5)
        assert isinstance(r, aioredis.RedisCluster)
        try:
            for k in keys:
                await r.set(k, k.encode())
            return [await r.get(k) for k in keys]
        finally:
            await r.aclose()

    assert asyncio.run(go()) == [k.encode() for k in keys]
    held = []
    for node in cluster.nodes:
        with node.client() as c:
            held.append(c.dbsize())
    assert sum(held) == len(keys) and all(held), held  # three masters, each with its share
    assert len({key_slot(k.encode()) for k in keys}) > 3


@pytest.mark.cluster
def test_classic_pubsub_on_a_cluster_hears_what_any_node_publishes(cluster: RedisClusterProcs) -> None:
    target = parse_redis_url(cluster.url)

    async def go() -> list[bytes]:
        sub_client = pubsub_client(target, socket_timeout=5)
        assert type(sub_client) is aioredis.Redis
        assert sub_client.connection_pool.connection_kwargs["port"] == cluster.nodes[0].port
        heard: list[bytes] = []
        try:
            async with sub_client.pubsub() as ps:
                await ps.subscribe("relay:events")
                await ps.get_message(timeout=1)  # the subscribe confirmation
                for node in cluster.nodes:  # published on every node, the first one included
                    async with aioredis.Redis(port=node.port) as pub:
                        await pub.publish("relay:events", f"from {node.port}".encode())
                for _ in range(50):  # 50 x 0.1 s at most
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if msg is not None:
                        heard.append(msg["data"])
                    if len(heard) == len(cluster.nodes):
                        break
        finally:
            await sub_client.aclose()
        return heard

    assert sorted(asyncio.run(go())) == sorted(f"from {n.port}".encode() for n in cluster.nodes)


@pytest.mark.cluster
def test_pubsub_on_a_sentinel_url_is_the_masters_client(sentinels: SentinelGroup) -> None:
    target = parse_redis_url(sentinels.url)

    async def go() -> bytes | None:
        sub_client = pubsub_client(target, socket_timeout=5)
        try:
            async with sub_client.pubsub() as ps:
                await ps.subscribe("relay:events")
                await ps.get_message(timeout=1)
                async with aioredis.Redis(port=sentinels.current_master_port()) as pub:
                    await pub.publish("relay:events", b"hello")
                for _ in range(20):
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if msg is not None:
                        return bytes(msg["data"])
                return None
        finally:
            await sub_client.aclose()

    assert asyncio.run(go()) == b"hello"


@pytest.mark.cluster
def test_a_restarted_server_answers_again_on_the_same_port(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "r") as s:
        port = s.port
        s.kill()
        assert not s.running
        s.restart()
        assert s.port == port and s.running
        with s.client() as r:
            assert r.ping()
