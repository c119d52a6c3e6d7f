"""The storage port's contract, run against every adapter: SQLite, and Redis on a real redis-server.

The Redis adapter is tested against ``redis-server`` processes this module
starts on free ports (never a fake): one for the module, flushed before each
test, and a read-only replica of it for the ``ping`` test. Without the binary
these tests skip, and fail under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from relay.storage.base import SessionRecord, Store, Visitor, parse_search
from relay.storage.redis import RedisStore
from relay.storage.sqlite import SqliteStore

from ..conftest import free_port, require_binary

ADAPTERS = (
    pytest.param("redis", marks=pytest.mark.cluster),
    pytest.param("redis-cluster", marks=pytest.mark.cluster),
    "sqlite",
)


class RedisServer:
    """One ``redis-server`` process without persistence, on 127.0.0.1 (a one-node cluster with ``cluster``).

    Its ports come from :func:`free_port`; a server that exits before it
    answers (a port taken meanwhile) is started again on others, three
    times at most. Its log is ``redis.log`` in ``directory``.
    """

    def __init__(self, directory: Path, *extra: str, cluster: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        for _ in range(3):
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.proc = self._spawn([*extra, *self._cluster_args(cluster)])
            if self._await_ready():
                return
        raise RuntimeError(f"redis-server exited three times before answering:\n{self._log()}")

    def _cluster_args(self, cluster: bool) -> list[str]:
        """Cluster mode, its bus on a port of its own (the default, port + 10000, may not exist)."""
        if not cluster:
            return []
        nodes = self._directory / f"nodes-{self.port}.conf"
        bus = free_port()
        while bus == self.port:
            bus = free_port()
        return ["--cluster-enabled", "yes", "--cluster-config-file", str(nodes), "--cluster-port", str(bus)]

    def _spawn(self, extra: list[str]) -> subprocess.Popen[bytes]:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self._directory), "--logfile", str(self._directory / "redis.log")]
        return subprocess.Popen([require_binary("redis-server"), *args, *extra])

    def _log(self) -> str:
        path = self._directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _await_ready(self, timeout: float = 10.0) -> bool:
        """True once it answers PING; False if it exited first; raises if it hangs past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.ConnectionError), self.client() as r:
                if r.ping():
                    return True
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer:\n{self._log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis Cluster of one node holding every slot: it refuses what crosses slots, as a real one does."""
    directory = tmp_path_factory.mktemp("redis-cluster")
    server = RedisServer(directory, cluster=True)
    try:
        with server.client() as r:
            r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while r.cluster("info")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the one-node cluster did not come up"
                time.sleep(0.02)
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster_server: RedisServer) -> str:
    """The module's one-node cluster, emptied for this test."""
    with redis_cluster_server.client() as r:
        r.flushall()
    return redis_cluster_server.url.removesuffix("/0")


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
        cluster_url: str = request.getfixturevalue("redis_cluster_url")
        return lambda: RedisStore(cluster_url, cluster=True)
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
