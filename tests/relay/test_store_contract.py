"""The storage port's contract, run against every adapter: SQLite, and Redis in each form it is deployed in.

The Redis adapter is tested against real processes this module starts on
free ports (never a fake; :mod:`tests.redisprocs`), each for the whole
module and emptied before each test: one ``redis-server``, a Redis Cluster
of three masters (so whatever crosses slots is refused, as in production),
and a Sentinel group (a master, a replica, three sentinels) reached through
its ``redis+sentinel://`` URL. A read-only replica serves the ``ping`` test,
and a Sentinel group of its own the failover test. Without the binaries
these tests skip, and fail under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import RedisError

from relay.settings import Settings
from relay.storage import open_storage
from relay.storage.base import SessionRecord, Store, Visitor, parse_search
from relay.storage.redis import RedisStore
from relay.storage.sqlite import SqliteStore

from ..redisprocs import RedisClusterProcs, RedisServer, SentinelGroup

ADAPTERS = (
    pytest.param("redis", marks=pytest.mark.cluster),
    pytest.param("redis-cluster", marks=pytest.mark.cluster),
    pytest.param("redis-sentinel", marks=pytest.mark.cluster),
    "sqlite",
)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    with RedisClusterProcs(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path_factory.mktemp("redis-sentinel")) as group:
        yield group


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The module's redis-server, emptied for this test."""
    with redis_server.client() as r:
        r.flushall()
    return redis_server.url


def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return lambda: RedisStore(url)
    if request.param == "redis-cluster":
        cluster: RedisClusterProcs = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return lambda: RedisStore(cluster.url)
    if request.param == "redis-sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        group.flushall()
        return lambda: RedisStore(group.url)
    return lambda: SqliteStore(tmp_path / "store.sqlite3")


def _run(factory: Callable[[], Store], body: Callable[[Any], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = factory()
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(params=ADAPTERS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Callable[[Store], Awaitable[Any]]], Any]:
    """Runs an async body with an opened store of each adapter, closed afterwards."""
    factory = _factory(request, tmp_path)
    return lambda body: _run(factory, body)


def test_saved_visitor_reads_back_and_updates_in_place(open_store: Any) -> None:
    async def body(store: Store) -> None:
        v = Visitor(
            "ABC123", unique_id="u1", identities=["Ann"], tags=["#a"], first_seen=1.0, last_seen=2.0, online=True
        )
        await store.save_visitor(v)
        assert await store.get_visitor("ABC123") == v
        v.identities, v.last_seen, v.first_seen = ["Ann B"], 3.0, 99.0
        await store.save_visitor(v)
        got = await store.get_visitor("ABC123")
        assert got is not None and got.identities == ["Ann B"] and got.last_seen == 3.0
        assert got.first_seen == 1.0  # first seen never moves
        assert await store.get_visitor("nobody") is None

    open_store(body)


def test_latest_puts_online_visitors_first_then_most_recent(open_store: Any) -> None:
    async def body(store: Store) -> None:
        await store.save_visitor(Visitor("OLD", first_seen=1, last_seen=1))
        await store.save_visitor(Visitor("NEW", first_seen=1, last_seen=5))
        await store.save_visitor(Visitor("ON", first_seen=1, last_seen=2, online=True))
        assert [v.short_id for v in await store.latest_visitors(10)] == ["ON", "NEW", "OLD"]
        assert len(await store.latest_visitors(2)) == 2
        await store.mark_all_offline()
        assert not any(v.online for v in await store.latest_visitors(10))

    open_store(body)


def test_search_terms_are_and_ed_and_wildcards_are_literal(open_store: Any) -> None:
    async def body(store: Store) -> None:
        await store.save_visitor(Visitor("A1", identities=["Ann"], lookup_code="1234", last_url="https://x/cart"))
        await store.save_visitor(Visitor("B1", identities=["Bob_100%"], tags=["#vip"], last_url="https://x/help"))

        async def ids(q: str) -> set[str]:
            return {v.short_id for v in await store.search_visitors(parse_search(q), 10)}

        assert await ids("ann") == {"A1"}
        assert await ids("x/") == {"A1", "B1"}
        assert await ids("ann cart") == {"A1"}
        assert await ids("ann help") == set()
        assert await ids("tag:#vip") == {"B1"}
        assert await ids("100%") == {"B1"}
        assert await ids("_") == {"B1"}
        assert await ids("code:1234") == {"A1"}

    open_store(body)


def test_a_nonce_is_usable_once(open_store: Any) -> None:
    async def body(store: Store) -> None:
        exp = time.time() + 60
        assert await store.use_nonce("n1", exp) is True
        assert await store.use_nonce("n1", exp) is False
        assert await store.use_nonce("n2", exp) is True

    open_store(body)


def test_sessions_are_kept_newest_first_per_visitor(open_store: Any) -> None:
    async def body(store: Store) -> None:
        s1 = SessionRecord("s1", "V", agents=[{"id": "1", "name": "A"}], started=10.0, ended=70.0, went_live=True)
        s2 = SessionRecord("s2", "V", started=100.0, features_used=["click"], metadata={"k": 1})
        await store.save_session(s1)
        await store.save_session(s2)
        await store.save_session(SessionRecord("s3", "OTHER", started=1.0))
        assert [s.id for s in await store.sessions_for("V", 10)] == ["s2", "s1"]
        assert await store.get_session("s1") == s1 and s1.length == 60.0
        s2.ended = 130.0
        await store.save_session(s2)
        got = await store.get_session("s2")
        assert got is not None and got.ended == 130.0 and got.metadata == {"k": 1}

    open_store(body)


def test_ping_answers_true_while_open(open_store: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.ping() is True

    open_store(body)


def test_concurrent_uses_of_one_nonce_admit_exactly_one(open_store: Any) -> None:
    async def body(store: Store) -> None:
        exp = time.time() + 60
        results = await asyncio.gather(*(store.use_nonce("shared", exp) for _ in range(20)))
        assert sorted(results) == [False] * 19 + [True]
        later = await asyncio.gather(store.use_nonce("shared", exp), store.use_nonce("fresh", exp))
        assert later == [False, True]

    open_store(body)


def test_concurrent_writes_all_land_and_reads_see_them(open_store: Any) -> None:
    async def body(store: Store) -> None:
        writes = [store.save_visitor(Visitor(f"C{i:03d}", first_seen=1, last_seen=i)) for i in range(50)]
        writes += [store.save_session(SessionRecord(f"s{i}", f"C{i:03d}", started=i)) for i in range(50)]
        pending = asyncio.gather(*writes)
        await asyncio.sleep(0)
        got = await store.get_visitor("C007")  # pending or committed, never missing
        assert got is not None and got.last_seen == 7
        await pending
        assert len(await store.latest_visitors(100)) == 50
        assert [s.id for s in await store.sessions_for("C049", 5)] == ["s49"]

    open_store(body)


def test_a_write_whose_caller_is_cancelled_still_lands_in_order(open_store: Any) -> None:
    async def body(store: Store) -> None:
        first = asyncio.ensure_future(store.save_visitor(Visitor("K", identities=["old"], first_seen=1, last_seen=1)))
        second = asyncio.ensure_future(store.save_visitor(Visitor("K", identities=["new"], first_seen=1, last_seen=2)))
        await asyncio.sleep(0)  # both are pending in the store
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        got = await store.get_visitor("K")
        assert got is not None and (got.identities, got.last_seen) == (["new"], 2.0)

    open_store(body)


# --- what a restart needs ----------------------------------------------------------------
def _open(sid: str, visitor: str, started: float, state: str = "live") -> SessionRecord:
    return SessionRecord(
        sid,
        visitor,
        agents=[{"id": "a1", "name": "Ann"}],
        started=started,
        went_live=state == "live",
        state=state,
        viewers=[{"id": "v1", "agent_id": "a1", "agent_name": "Ann", "permissions": ["click", "scroll"]}],
        allow=["click"],
        epoch=7,
        left_viewers=["v0"],
    )


def test_a_live_sessions_restart_state_reads_back(open_store: Any) -> None:
    async def body(store: Store) -> None:
        s = _open("s1", "V", 10.0)
        s.observer, s.metadata, s.features_used = {"id": "o", "name": "Obs"}, {"ticket": "T-1"}, ["click"]
        await store.save_session(s)
        assert await store.get_session("s1") == s
        assert await store.sessions_for("V", 5) == [s]
        assert await store.open_sessions() == [s]

    open_store(body)


def test_open_sessions_are_those_not_ended_oldest_first(open_store: Any) -> None:
    async def body(store: Store) -> None:
        await store.save_session(_open("late", "A", 30.0))
        await store.save_session(_open("early", "B", 10.0, state="requested"))
        await store.save_session(SessionRecord("done", "C", started=20.0, ended=25.0, end_reason="agent_left"))
        assert [s.id for s in await store.open_sessions()] == ["early", "late"]
        pending = asyncio.gather(
            store.save_session(SessionRecord("done2", "A", started=5.0, ended=6.0)),
            store.save_session(_open("fresh", "D", 40.0)),
        )
        await asyncio.sleep(0)  # both saves are pending in the store
        assert [s.id for s in await store.open_sessions()] == ["early", "late", "fresh"]  # and the read sees them
        await pending

    open_store(body)


def test_closing_sessions_ends_only_the_open_ones_named_with_the_reason(open_store: Any) -> None:
    async def body(store: Store) -> None:
        await store.save_session(_open("s1", "A", 10.0))
        await store.save_session(_open("s2", "B", 11.0))
        await store.save_session(_open("s3", "C", 12.0))
        await store.save_session(SessionRecord("old", "A", started=1.0, ended=2.0, end_reason="visitor_ended"))
        assert await store.close_sessions(["s1", "s2", "old", "unknown", "s1"], 50.0, "relay_restart") == 2
        assert await store.close_sessions([], 60.0, "relay_restart") == 0
        s1 = await store.get_session("s1")
        assert s1 is not None and (s1.ended, s1.end_reason, s1.state) == (50.0, "relay_restart", "")
        assert s1.agents == [{"id": "a1", "name": "Ann"}] and s1.went_live  # the history stays
        old = await store.get_session("old")
        assert old is not None and (old.ended, old.end_reason) == (2.0, "visitor_ended")
        assert [s.id for s in await store.open_sessions()] == ["s3"]

    open_store(body)


def test_a_close_is_not_undone_by_a_save_made_before_it(open_store: Any) -> None:
    async def body(store: Store) -> None:
        save = asyncio.ensure_future(store.save_session(_open("s1", "A", 10.0)))
        await asyncio.sleep(0)  # the save is pending in the store
        assert await store.close_sessions(["s1"], 50.0, "relay_restart") == 1
        await save
        got = await store.get_session("s1")
        assert got is not None and got.ended == 50.0 and await store.open_sessions() == []

    open_store(body)


def test_expiring_visitors_deletes_only_old_offline_ones_that_never_had_a_session(open_store: Any) -> None:
    async def body(store: Store) -> None:
        await store.save_visitor(Visitor("GONE", first_seen=1, last_seen=10))
        await store.save_visitor(Visitor("GONE2", first_seen=1, last_seen=99))
        await store.save_visitor(Visitor("RECENT", first_seen=1, last_seen=100))
        await store.save_visitor(Visitor("ONLINE", first_seen=1, last_seen=10, online=True))
        await store.save_visitor(Visitor("HELPED", first_seen=1, last_seen=10))
        await store.save_session(SessionRecord("s1", "HELPED", started=5.0, ended=8.0))
        assert await store.expire_visitors(100.0) == 2
        assert await store.get_visitor("GONE") is None and await store.get_visitor("GONE2") is None
        for kept in ("RECENT", "ONLINE", "HELPED"):
            assert await store.get_visitor(kept) is not None, kept
        assert await store.expire_visitors(100.0) == 0

    open_store(body)


# --- live-session codes -------------------------------------------------------------------
def test_a_code_names_its_visitor_until_it_is_dropped(open_store: Any) -> None:
    async def body(store: Store) -> None:
        exp = time.time() + 60
        assert await store.save_code("123456789", "V1", exp) is True
        assert await store.visitor_of_code("123456789") == "V1"
        assert await store.code_of("V1") == "123456789"
        assert await store.visitor_of_code("987654321") is None
        assert await store.code_of("NOBODY") is None
        await store.drop_code("123456789")
        assert await store.visitor_of_code("123456789") is None
        assert await store.code_of("V1") is None
        await store.drop_code("123456789")  # dropping what no one holds is nothing

    open_store(body)


def test_a_held_code_is_refused_to_another_visitor_and_a_new_code_releases_the_old(open_store: Any) -> None:
    async def body(store: Store) -> None:
        exp = time.time() + 60
        assert await store.save_code("111111111", "V1", exp) is True
        assert await store.save_code("111111111", "V2", exp) is False
        assert await store.visitor_of_code("111111111") == "V1" and await store.code_of("V2") is None
        assert await store.save_code("111111111", "V1", exp + 60) is True  # its own code again
        assert await store.save_code("222222222", "V1", exp) is True  # one code per visitor
        assert await store.visitor_of_code("111111111") is None
        assert (await store.code_of("V1"), await store.visitor_of_code("222222222")) == ("222222222", "V1")
        assert await store.save_code("111111111", "V2", exp) is True  # released, free for another
        assert await store.visitor_of_code("111111111") == "V2"

    open_store(body)


def test_an_expired_code_is_gone_and_free_to_claim(open_store: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.save_code("333333333", "V1", time.time() + 0.3) is True
        assert await store.visitor_of_code("333333333") == "V1"
        await asyncio.sleep(0.4)
        assert await store.visitor_of_code("333333333") is None
        assert await store.code_of("V1") is None
        assert await store.save_code("333333333", "V2", time.time() + 60) is True
        assert await store.visitor_of_code("333333333") == "V2"

    open_store(body)


def test_concurrent_claims_of_one_code_admit_exactly_one_visitor(open_store: Any) -> None:
    async def body(store: Store) -> None:
        exp = time.time() + 60
        results = await asyncio.gather(*(store.save_code("444444444", f"V{i}", exp) for i in range(10)))
        assert sorted(results) == [False] * 9 + [True]
        winner = f"V{results.index(True)}"
        assert await store.visitor_of_code("444444444") == winner
        assert [await store.code_of(f"V{i}") for i in range(10)].count("444444444") == 1

    open_store(body)


# --- SQLite only: databases made by an older version ------------------------------------
_FIRST_SCHEMA = """
CREATE TABLE visitors (
    short_id TEXT PRIMARY KEY, unique_id TEXT NOT NULL DEFAULT '', identities TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]', lookup_code TEXT NOT NULL DEFAULT '', device_type TEXT NOT NULL DEFAULT '',
    browser TEXT NOT NULL DEFAULT '', ip TEXT NOT NULL DEFAULT '', last_url TEXT NOT NULL DEFAULT '',
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, online INTEGER NOT NULL DEFAULT 0,
    in_session INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY, visitor TEXT NOT NULL, agents TEXT NOT NULL DEFAULT '[]',
    observer TEXT NOT NULL DEFAULT '{}', started REAL NOT NULL, ended REAL,
    went_live INTEGER NOT NULL DEFAULT 0, features_used TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO sessions VALUES ('open1', 'V', '[{"id":"1","name":"A"}]', '{}', 10.0, NULL, 1, '["click"]', '{}');
INSERT INTO sessions VALUES ('done1', 'V', '[]', '{}', 1.0, 5.0, 0, '[]', '{"k":1}');
"""


def test_sqlite_adds_the_new_columns_to_an_older_database_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(_FIRST_SCHEMA)

    async def go() -> None:
        for again in (False, True):  # opening the migrated database again changes nothing
            store = SqliteStore(path)
            await store.open()
            try:
                open1, *new = await store.open_sessions()
                assert [s.id for s in new] == (["new1"] if again else [])
                assert (open1.id, open1.agents, open1.went_live, open1.features_used) == (
                    "open1", [{"id": "1", "name": "A"}], True, ["click"],
                )  # fmt: skip
                assert (open1.state, open1.viewers, open1.allow, open1.epoch) == ("", [], [], 0)
                assert (open1.left_viewers, open1.end_reason) == ([], "")
                done = await store.get_session("done1")
                assert done is not None and done.ended == 5.0 and done.metadata == {"k": 1}
                s = _open("new1", "V", 20.0)
                await store.save_session(s)
                assert await store.get_session("new1") == s
                assert await store.save_code(f"55555555{again:d}", "V", time.time() + 60)  # the new table
            finally:
                await store.close()

    asyncio.run(go())


# --- Redis only: key layout, bounds, and what a cluster needs ------------------------------
def _redis(url: str, body: Callable[[RedisStore], Awaitable[Any]], **kwargs: Any) -> Any:
    return _run(lambda: RedisStore(url, **kwargs), body)


@pytest.mark.cluster
def test_redis_keeps_one_visitors_keys_in_one_hash_slot(redis_url: str, redis_server: RedisServer) -> None:
    async def body(store: RedisStore) -> None:
        await store.save_visitor(Visitor("AB12CD", first_seen=1, last_seen=2))
        await store.save_session(_open("s1", "AB12CD", 10.0))
        await store.save_session(SessionRecord("s2", "AB12CD", started=1.0, ended=2.0))

    _redis(redis_url, body)
    with redis_server.client() as r:
        own = sorted(k.decode() for k in r.keys("*{AB12CD}*"))
    assert own == [
        "cobrowse:{AB12CD}:s:s1",
        "cobrowse:{AB12CD}:s:s2",
        "cobrowse:{AB12CD}:sessions",
        "cobrowse:{AB12CD}:v",
    ]
    assert {key_slot(k.encode()) for k in own} == {key_slot(b"AB12CD")}


@pytest.mark.cluster
def test_redis_recent_index_stays_bounded_and_keeps_the_most_recent(redis_url: str, redis_server: RedisServer) -> None:
    async def body(store: RedisStore) -> list[str]:
        for i in range(12):
            await store.save_visitor(Visitor(f"V{i:02d}", first_seen=1, last_seen=100 + i))
        assert await store.get_visitor("V00") is not None  # trimmed from the index, still read by id
        return [v.short_id for v in await store.latest_visitors(100)]

    assert _redis(redis_url, body, recent=5) == ["V11", "V10", "V09", "V08", "V07"]
    with redis_server.client() as r:
        assert r.zcard("cobrowse:idx:recent") == 5


@pytest.mark.cluster
def test_redis_search_reads_indexes_in_pages_never_the_keyspace(redis_url: str, redis_server: RedisServer) -> None:
    async def body(store: RedisStore) -> None:
        for i in range(30):
            await store.save_visitor(Visitor(f"P{i:02d}", tags=["#even" if i % 2 == 0 else "#odd"], last_seen=i))
        await store.save_visitor(Visitor("ON", tags=["#odd"], last_seen=1, online=True))
        with redis_server.client() as r:
            r.config_resetstat()
        got = await store.search_visitors(parse_search("tag:#odd"), 4)
        assert [v.short_id for v in got] == ["ON", "P29", "P27", "P25"]
        assert [v.short_id for v in await store.search_visitors(parse_search("online:false even"), 2)] == ["P28", "P26"]
        assert [v.short_id for v in await store.search_visitors(parse_search("online:true"), 9)] == ["ON"]
        with redis_server.client() as r:
            stats = r.info("commandstats")
        assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), stats
        assert stats["cmdstat_zrevrange"]["calls"] == 6  # 3 + 1 + 2 pages of 7: each search stops at its limit

    _redis(redis_url, body, page=7)


@pytest.mark.cluster
def test_redis_expiry_checks_each_candidate_against_its_hash(redis_url: str, redis_server: RedisServer) -> None:
    async def body(store: RedisStore) -> None:
        await store.save_visitor(Visitor("RACED", first_seen=1, last_seen=10))
        await store.save_session(SessionRecord("s1", "RACED", started=5.0, ended=8.0))
        with redis_server.client() as r:  # a stale index entry, as a race between two nodes could leave
            r.zadd("cobrowse:idx:nosession", {"RACED": 10, "DELETED": 10})
        assert await store.expire_visitors(100.0) == 0
        assert await store.get_visitor("RACED") is not None
        with redis_server.client() as r:
            assert r.zcard("cobrowse:idx:nosession") == 0

    _redis(redis_url, body)


@pytest.mark.cluster
def test_redis_nonce_expires_with_its_grant(redis_url: str, redis_server: RedisServer) -> None:
    exp = time.time() + 60

    async def body(store: RedisStore) -> None:
        assert await store.use_nonce("n1", exp) is True

    _redis(redis_url, body)
    with redis_server.client() as r:
        assert abs(r.expiretime("cobrowse:nonce:n1") - exp) <= 1


@pytest.mark.cluster
def test_redis_ping_is_false_on_a_read_only_replica_and_a_dead_server(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(redis_server.port))
    try:
        assert _redis(replica.url, lambda store: store.ping()) is False
        assert _redis(redis_server.url, lambda store: store.ping()) is True

        async def stopped(store: RedisStore) -> bool:
            replica.stop()
            return await store.ping()

        assert _redis(replica.url, stopped) is False
    finally:
        replica.stop()


@pytest.mark.cluster
def test_redis_code_keys_expire_with_the_claim_and_the_pointer_sits_in_the_visitors_slot(
    redis_url: str, redis_server: RedisServer
) -> None:
    exp = time.time() + 60

    async def body(store: RedisStore) -> None:
        assert await store.save_code("123456789", "AB12CD", exp)

    _redis(redis_url, body)
    with redis_server.client() as r:
        assert r.get("cobrowse:code:123456789") == b"AB12CD"
        assert r.get("cobrowse:{AB12CD}:code") == b"123456789"
        for key in ("cobrowse:code:123456789", "cobrowse:{AB12CD}:code"):
            assert abs(r.pexpiretime(key) / 1000 - exp) <= 0.01
    assert key_slot(b"cobrowse:{AB12CD}:code") == key_slot(b"cobrowse:{AB12CD}:v")


@pytest.mark.cluster
def test_redis_a_half_made_claim_reads_as_no_claim(redis_url: str, redis_server: RedisServer) -> None:
    """What a crash between a claim's commands leaves: keys that do not point back at each other."""
    exp_ms = int((time.time() + 60) * 1000)
    with redis_server.client() as r:
        r.set("cobrowse:code:111111111", b"V1", pxat=exp_ms)  # claimed, pointer never written
        r.set("cobrowse:{V2}:code", b"222222222", pxat=exp_ms)  # pointer to a code never claimed
        r.set("cobrowse:code:333333333", b"V3", pxat=exp_ms)  # released too late: V3 moved on
        r.set("cobrowse:{V3}:code", b"444444444", pxat=exp_ms)
        r.set("cobrowse:code:444444444", b"V3", pxat=exp_ms)

    async def body(store: RedisStore) -> None:
        assert await store.visitor_of_code("111111111") is None
        assert await store.code_of("V2") is None
        assert await store.visitor_of_code("333333333") is None
        assert (await store.code_of("V3"), await store.visitor_of_code("444444444")) == ("444444444", "V3")
        assert await store.save_code("111111111", "V9", exp_ms / 1000) is False  # held until it expires
        assert await store.save_code("111111111", "V1", exp_ms / 1000) is True  # its visitor completes it
        assert await store.visitor_of_code("111111111") == "V1"

    _redis(redis_url, body)


@pytest.mark.cluster
def test_redis_store_on_a_sentinel_url_follows_a_failover(tmp_path: Path) -> None:
    """SIGKILL the master: within down-after + 5 s a write lands on the promoted replica.

    Meanwhile the store is seen failing: ``ping()`` answers False (its 1 s
    budget runs out while redis-py retries against a master the sentinels
    call down) or a write raises once redis-py's retries are spent. The
    visitor written (and replicated) before the kill is still there.

    Observed (redis-py 8.1, Redis 7.0, down-after 1 s): one ping False, then
    the next write, held by the retries :func:`relay.cluster.redisconn.connect`
    gives the Sentinel client, lands 2.6 to 3.1 s after the kill; no write
    raised. Without those retries (redis-py's ``master_for`` has none) every
    write raised at once, ``ConnectionError`` (refused) for about a second,
    then ``MasterNotFoundError`` until the promotion.
    """
    down_after = 1.0
    with SentinelGroup(tmp_path / "sentinel", down_after_ms=int(down_after * 1000)) as group:

        async def body(store: RedisStore) -> tuple[list[bool], list[str]]:
            await store.save_visitor(Visitor("BEFORE", first_seen=1, last_seen=1))
            with group.master.client() as r:
                assert r.execute_command("WAIT", 1, 2000) == 1  # on the replica too
            killed = await asyncio.to_thread(group.kill_master)
            since = time.monotonic()
            pings: list[bool] = []
            errors: list[str] = []
            for i in range(200):  # bounded by the deadline below long before
                assert time.monotonic() - since < down_after + 5, (pings, errors)
                pings.append(await store.ping())
                try:
                    await store.save_visitor(Visitor(f"AFTER{i}", first_seen=1, last_seen=2))
                except RedisError as e:
                    errors.append(type(e).__name__)
                else:
                    if pings[-1]:
                        break
                await asyncio.sleep(0.1)
            assert time.monotonic() - since < down_after + 5, (pings, errors)
            assert await store.get_visitor("BEFORE") is not None
            new = await asyncio.to_thread(group.wait_failover, 10)
            assert new != killed.port
            with group.server(new).client() as r:
                assert r.exists(f"cobrowse:{{AFTER{i}}}:v") == 1
            return pings, errors

        pings, errors = _redis(group.url, body)
        assert False in pings or errors, (pings, errors)


def test_open_storage_picks_redis_when_redis_url_is_set(tmp_path: Path) -> None:
    assert isinstance(open_storage(Settings(data_dir=tmp_path)), SqliteStore)
    store = open_storage(Settings(data_dir=tmp_path, redis_url="redis+sentinel://127.0.0.1:26379/mymaster"))
    assert isinstance(store, RedisStore)
    with pytest.raises(ValueError, match="names the master's service"):
        open_storage(Settings(data_dir=tmp_path, redis_url="redis+sentinel://127.0.0.1:26379"))
