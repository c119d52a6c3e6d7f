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
from relay.storage.base import (
    HISTORY_MAX,
    MEETINGS_PER_MAX,
    PAGEVIEW_TITLE_MAX,
    PAGEVIEW_URL_MAX,
    ApiKey,
    Meeting,
    MeetingFilter,
    Pageview,
    SessionRecord,
    Store,
    Visitor,
    parse_search,
)
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
        assert list(later) == [False, True]

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


# --- the cloud API: history, deleting visitors, usage ---------------------------------------
MIDNIGHT = 1_700_006_400.0  # a UTC midnight (2023-11-15)
NOW = MIDNIGHT + 7200  # "now" for the usage windows: 02:00 UTC
DAY = 86400.0


def test_history_keeps_the_newest_pageviews_newest_first_and_only_for_known_visitors(open_store: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.add_pageview("NOBODY", "https://x/", "X", 1.0) is False
        assert await store.history("NOBODY", 10) == []
        await store.save_visitor(Visitor("H", first_seen=1, last_seen=1))
        for i in range(HISTORY_MAX + 5):
            assert await store.add_pageview("H", f"https://x/{i}", f"page {i}", 100.0 + i) is True
        got = await store.history("H", 1000)
        assert len(got) == HISTORY_MAX  # the 5 oldest were dropped
        assert got[0] == Pageview("https://x/204", "page 204", 304.0)
        assert got[-1] == Pageview("https://x/5", "page 5", 105.0)
        assert [p.url for p in await store.history("H", 2)] == ["https://x/204", "https://x/203"]
        assert await store.history("H", 0) == []
        long_url = "https://x/" + "a" * 5000
        assert await store.add_pageview("H", long_url, "t" * 1000, 400.0)
        (top,) = await store.history("H", 1)
        assert (top.url, top.title) == (long_url[:PAGEVIEW_URL_MAX], "t" * PAGEVIEW_TITLE_MAX)
        pending = asyncio.gather(
            store.save_visitor(Visitor("NEW", first_seen=1, last_seen=1)),
            store.add_pageview("NEW", "https://x/new", "New", 2.0),
        )
        assert list(await pending) == [None, True]  # the visitor's pending save lands first

    open_store(body)


def test_expiry_takes_the_visitors_history_along(open_store: Any) -> None:
    async def body(store: Store) -> None:
        await store.save_visitor(Visitor("GONE", first_seen=1, last_seen=10))
        assert await store.add_pageview("GONE", "https://x/", "X", 10.0)
        assert await store.expire_visitors(100.0) == 1
        await store.save_visitor(Visitor("GONE", first_seen=200, last_seen=200))  # it comes back: a new visitor
        assert await store.history("GONE", 10) == []

    open_store(body)


def test_deleting_a_visitor_removes_all_of_it_and_nothing_else(open_store: Any) -> None:
    async def body(store: Store) -> None:
        exp = time.time() + 60
        for sid, agent in (("DEL", "a3"), ("KEEP", "a2")):
            await store.save_visitor(Visitor(sid, identities=["Ann"], first_seen=1, last_seen=NOW - 10, online=True))
            await store.save_session(_open(f"{sid}-open", sid, NOW - 100))
            done = SessionRecord(f"{sid}-done", sid, agents=[{"id": agent, "name": "B"}], started=NOW - 500)
            done.ended = NOW - 400
            await store.save_session(done)
            assert await store.add_pageview(sid, "https://x/", "X", NOW - 50)
        assert await store.save_code("123456789", "DEL", exp)
        assert await store.save_code("987654321", "KEEP", exp)

        assert await store.delete_visitor("DEL") is True
        assert await store.get_visitor("DEL") is None
        assert await store.sessions_for("DEL", 10) == []
        assert await store.get_session("DEL-open") is None and await store.get_session("DEL-done") is None
        assert await store.history("DEL", 10) == []
        assert await store.code_of("DEL") is None and await store.visitor_of_code("123456789") is None
        assert [s.id for s in await store.open_sessions()] == ["KEEP-open"]
        assert [v.short_id for v in await store.latest_visitors(10)] == ["KEEP"]
        assert [v.short_id for v in await store.search_visitors(parse_search("ann"), 10)] == ["KEEP"]
        u = await store.usage(NOW)
        assert (u.visitors_online_now, u.visitors_last_24_hrs, u.session_counts_now) == (1, 1, 1)
        assert (u.session_counts_last_30_days, u.session_seconds_last_30_days) == (2, 100 + 100)
        assert u.agents_last_30_days == 3  # a1, a2, and a3: an agent's activity outlives the visitor

        assert await store.get_visitor("KEEP") is not None
        assert [s.id for s in await store.sessions_for("KEEP", 10)] == ["KEEP-open", "KEEP-done"]
        assert len(await store.history("KEEP", 10)) == 1
        assert await store.code_of("KEEP") == "987654321"

        assert await store.delete_visitor("DEL") is False  # unknown now
        assert await store.save_code("123456789", "OTHER", exp)  # its code was released
        await store.save_session(SessionRecord("orphan", "GHOST", started=NOW - 5, ended=NOW - 1))
        assert await store.delete_visitor("GHOST") is False  # no visitor row, but its sessions go
        assert await store.get_session("orphan") is None

    open_store(body)


def test_deleting_offline_visitors_goes_in_batches_and_never_deletes_an_online_one(open_store: Any) -> None:
    async def body(store: Store) -> None:
        for i in range(2):  # seen before the offline ones: the walk steps over them first
            await store.save_visitor(Visitor(f"ON{i}", first_seen=1, last_seen=NOW - 5000 + i, online=True))
            await store.save_session(_open(f"on{i}", f"ON{i}", NOW - 5000))
        for i in range(5):
            await store.save_visitor(Visitor(f"OFF{i}", first_seen=1, last_seen=NOW - 1000 + i))
        await store.save_session(SessionRecord("s-off", "OFF0", started=NOW - 2000, ended=NOW - 1900))
        assert await store.add_pageview("OFF0", "https://x/", "X", NOW - 1000)
        assert await store.delete_offline_visitors(2) == 2
        assert await store.get_visitor("OFF0") is None and await store.get_visitor("OFF1") is None  # oldest first
        assert await store.get_session("s-off") is None and await store.history("OFF0", 5) == []
        assert await store.get_visitor("OFF2") is not None
        assert [await store.delete_offline_visitors(2) for _ in range(3)] == [2, 1, 0]
        assert await store.delete_offline_visitors(0) == 0
        assert [v.short_id for v in await store.latest_visitors(10)] == ["ON1", "ON0"]
        assert [s.id for s in await store.open_sessions()] == ["on0", "on1"]

    open_store(body)


def test_usage_counts_each_window_from_controlled_timestamps(open_store: Any) -> None:
    async def body(store: Store) -> None:
        visitors = {  # short id: (last_seen, online)
            "ON_OLD": (NOW - 40 * DAY, True),  # online counts in every window, however long ago it was seen
            "ON_NEW": (NOW - 60, True),
            "HOUR": (NOW - 3600, False),
            "DAYS2": (NOW - 2 * DAY, False),
            "EDGE": (NOW - 30 * DAY, False),  # a window's start is in it
            "OLD": (NOW - 31 * DAY, False),
        }
        for sid, (seen, online) in visitors.items():
            await store.save_visitor(Visitor(sid, first_seen=1, last_seen=seen, online=online))

        def s(sid: str, started: float, length: float | None, *agents: str) -> SessionRecord:
            ended = None if length is None else started + length
            return SessionRecord(sid, "HOUR", [{"id": a, "name": a} for a in agents], started=started, ended=ended)

        for rec in (
            s("open", NOW - 600, None, "a1"),  # open: 600 s so far
            s("today", NOW - 1800, 600, "a2"),
            s("at2h", NOW - 7200, 200, "a3"),  # at UTC midnight: today by default, not from NOW - 3600
            s("10d", NOW - 10 * DAY, 1000, "a1", "a4"),
            s("40d", NOW - 40 * DAY, 5000, "a5"),
            s("closed", NOW - 300, None, "a2"),
        ):
            await store.save_session(rec)
        assert await store.close_sessions(["closed"], NOW - 100, "visitor_gone") == 1  # 200 s

        u = await store.usage(NOW, day_start=NOW - 3600)
        assert (u.visitors_online_now, u.visitors_last_24_hrs, u.visitors_last_30_days) == (2, 3, 5)
        assert (u.agents_today, u.agents_last_30_days) == (2, 4)
        assert (u.session_counts_now, u.session_counts_today, u.session_counts_last_30_days) == (1, 3, 5)
        assert (u.session_seconds_today, u.session_seconds_last_30_days) == (600 + 600 + 200, 1400 + 200 + 1000)
        d = await store.usage(NOW)  # "today" from UTC midnight
        assert (d.agents_today, d.session_counts_today, d.session_seconds_today) == (3, 4, 1600)
        assert d.as_json() == {
            "visitors": {"online_now": 2, "last_24_hrs": 3, "last_30_days": 5},
            "agents": {"today": 3, "last_30_days": 4},
            "session_counts": {"now": 1, "today": 4, "last_30_days": 5},
            "session_seconds": {"today": 1600, "last_30_days": 2600},
        }
        later = await store.usage(NOW + 100)  # the open session grows
        assert later.session_seconds_last_30_days == 2700 and later.visitors_online_now == 2

    open_store(body)


# --- meetings (CoClick) ------------------------------------------------------------------------
def _email(name: str, domain: str = "example.com") -> str:
    return f"{name}{chr(64)}{domain}"


def _meeting(n: int, user: str = "", status: str = "scheduled", starts_at: float = 0.0) -> Meeting:
    user = user or _email("someone")
    return Meeting(f"{n:064x}", user, starts_at or 5000.0 + n, "https://shop.example/", status, created_at=1000.0 + n)


def test_a_meeting_reads_back_whole_and_updates_in_place(open_store: Any) -> None:
    async def body(store: Store) -> None:
        m = Meeting(
            id="c3d9f69827eef8a25eedc920f1950a0ab9b3f6c9a0bfdca1111dff277a2d7694",
            user=_email("phil", "coclick.io"),
            starts_at=1635596973.0,
            cobrowsing_url="http://www.coclick.io",
            cobrowsing_cookies_data=[{"domain": ".coclick.io", "name": "sid", "value": "x"}],
            custom_data={"user_id": 17, "username": "Phil"},
            presenter_waiting_room_iframe_url="https://www.youtube.com/embed/dQw4w9WgXcQ",
            created_at=100.0,
            updated_at=100.0,
        )
        await store.save_meeting(m)
        assert await store.get_meeting(m.id) == m
        m.status, m.duration, m.custom_data, m.updated_at = "in_progress", 30, None, 200.0
        await store.save_meeting(m)
        assert await store.get_meeting(m.id) == m
        assert await store.list_meetings([], 1, 20) == ([m], 1)
        assert await store.get_meeting("0" * 64) is None
        with pytest.raises(ValueError, match="status"):
            await store.save_meeting(_meeting(1, status="done"))

    open_store(body)


def test_meetings_list_newest_first_in_pages_with_the_total(open_store: Any) -> None:
    async def body(store: Store) -> None:
        made = [_meeting(n) for n in range(MEETINGS_PER_MAX + 5)]
        for at in range(0, len(made), 15):  # 15 at once (100 or more left a Sentinel client's sockets open)
            await asyncio.gather(*map(store.save_meeting, made[at : at + 15]))

        async def page(p: int, per: int) -> tuple[list[int], int]:
            got, total = await store.list_meetings([], p, per)
            return [int(m.id, 16) for m in got], total

        assert await page(1, 10) == (list(range(104, 94, -1)), 105)
        assert await page(11, 10) == ([4, 3, 2, 1, 0], 105)
        assert await page(12, 10) == ([], 105)
        assert len((await store.list_meetings([], 1, 1000))[0]) == MEETINGS_PER_MAX
        tie = [_meeting(200), _meeting(201)]
        for m in tie:
            m.created_at = 9999.0
            await store.save_meeting(m)
        assert await page(1, 3) == ([201, 200, 104], 107)  # one created_at: by id, descending
        for p, per in ((0, 10), (1, 0)):
            with pytest.raises(ValueError):
                await store.list_meetings([], p, per)

    open_store(body)


def test_meetings_filters_each_predicate_and_their_conjunction(open_store: Any) -> None:
    async def body(store: Store) -> None:
        for m in (
            _meeting(1, _email("Hugh.Grant"), "scheduled", 5000.0),
            _meeting(2, _email("ann"), "in_progress", 6000.0),
            _meeting(3, _email("hugh"), "closed", 7000.0),
            _meeting(4, _email("bob"), "cancelled", 8000.0),
            _meeting(5, _email("HUGH"), "scheduled", 9000.0),
            _meeting(6, _email("Élodie"), "scheduled", 9500.0),
        ):
            await store.save_meeting(m)

        async def ids(*preds: tuple[Any, Any, Any], page: int = 1, per: int = 20) -> tuple[list[int], int]:
            got, total = await store.list_meetings([MeetingFilter(*p) for p in preds], page, per)
            return [int(m.id, 16) for m in got], total

        assert await ids(("user_email", "cont", "HUGH")) == ([5, 3, 1], 3)  # case-insensitive substring
        assert await ids(("user_email", "cont", "élodie")) == ([6], 1)  # beyond ASCII
        assert await ids(("user_email", "cont", "%")) == ([], 0)  # no wildcard
        assert await ids(("status", "eq", "scheduled")) == ([6, 5, 1], 3)
        assert await ids(("status", "gt", "in_progress")) == ([4, 3], 2)  # the API's order of statuses
        assert await ids(("status", "lt", "closed")) == ([6, 5, 2, 1], 4)
        assert await ids(("starts_at", "eq", 7000.0)) == ([3], 1)
        assert await ids(("starts_at", "gt", 7000)) == ([6, 5, 4], 3)
        assert await ids(("starts_at", "lt", 6000.0)) == ([1], 1)
        hugh_scheduled = (("user_email", "cont", "hugh"), ("status", "eq", "scheduled"))
        assert await ids(*hugh_scheduled) == ([5, 1], 2)
        assert await ids(*hugh_scheduled, ("starts_at", "gt", 5000.0)) == ([5], 1)
        assert await ids(("user_email", "cont", "example"), page=2, per=2) == ([4, 3], 6)
        assert await ids(("user_email", "cont", "example"), page=4, per=2) == ([], 6)
        for bad in (
            ("status", "cont", "sched"),
            ("status", "eq", "done"),
            ("user_email", "eq", _email("hugh")),
            ("starts_at", "gt", "tomorrow"),
            ("starts_at", "gt", True),
            ("created_at", "eq", 1.0),
        ):
            with pytest.raises(ValueError):
                MeetingFilter(*bad)

    open_store(body)


# --- API keys ----------------------------------------------------------------------------------
def test_api_keys_read_back_by_kind_and_revoked_ones_read_back_revoked(open_store: Any) -> None:
    async def body(store: Store) -> None:
        k1 = ApiKey("e89b3a", "coclick", "hash-1", name="CRM", company="MyCompany", created_at=10.0)
        k2 = ApiKey("f00d42", "coclick", "hash-2", created_at=20.0)
        reg = ApiKey("reg1", "registration", "hash-3", name="kiosks", created_at=15.0)
        for k in (k1, k2, reg):
            await store.save_api_key(k)
        assert await store.get_api_key("e89b3a") == k1
        assert await store.get_api_key("nope") is None
        assert await store.list_api_keys("coclick") == [k2, k1]
        assert await store.list_api_keys("registration") == [reg]
        assert await store.list_api_keys("other") == []
        assert await store.revoke_api_key("e89b3a", 30.0) is True
        assert await store.revoke_api_key("e89b3a", 40.0) is False  # the first revocation stays
        assert await store.revoke_api_key("nope", 40.0) is False
        got = await store.get_api_key("e89b3a")
        assert got is not None and got.revoked_at == 30.0 and got.secret_hash == "hash-1"
        assert [(k.id, k.revoked_at) for k in await store.list_api_keys("coclick")] == [
            ("f00d42", None),
            ("e89b3a", 30.0),
        ]
        pending = asyncio.gather(store.save_api_key(ApiKey("new", "coclick", "h")), store.revoke_api_key("new", 5.0))
        assert list(await pending) == [None, True]  # the pending save lands first

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
                # agents (a table added since) filled from the old sessions: "1"; then new1's "a1"
                assert (await store.usage(30.0)).agents_last_30_days == (2 if again else 1)
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
                # the other tables added since
                await store.save_visitor(Visitor("V", first_seen=1, last_seen=1))
                assert await store.add_pageview("V", "https://x/", "X", 1.0)
                assert len(await store.history("V", 10)) == (2 if again else 1)
                await store.save_meeting(_meeting(int(again)))
                assert (await store.list_meetings([], 1, 10))[1] == (2 if again else 1)
                await store.save_api_key(ApiKey(f"k{again:d}", "coclick", "h"))
                assert len(await store.list_api_keys("coclick")) == (2 if again else 1)
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


def _dump_keys(r: Any) -> dict[str, Any]:
    """Every key of a test server and what it holds (members of sets, fields of hashes)."""
    out: dict[str, Any] = {}
    for key in r.keys("*"):
        kind = r.type(key).decode()
        if kind == "zset":
            out[key.decode()] = {m.decode() for m in r.zrange(key, 0, -1)}
        elif kind == "hash":
            out[key.decode()] = {f.decode() for f in r.hkeys(key)}
        elif kind == "list":
            out[key.decode()] = r.lrange(key, 0, -1)
        else:
            out[key.decode()] = r.get(key)
    return out


@pytest.mark.cluster
def test_redis_deleting_a_visitor_leaves_no_key_and_no_index_entry_of_it(
    redis_url: str, redis_server: RedisServer
) -> None:
    exp = time.time() + 60

    async def body(store: RedisStore) -> None:
        for sid in ("AB12CD", "OTHER"):
            await store.save_visitor(Visitor(sid, first_seen=1, last_seen=2, online=sid == "OTHER"))
            await store.save_session(_open(f"{sid}-1", sid, 10.0))
            await store.save_session(SessionRecord(f"{sid}-2", sid, started=1.0, ended=2.0))
            assert await store.add_pageview(sid, "https://x/", "X", 3.0)
        assert await store.save_code("123456789", "AB12CD", exp)
        with redis_server.client() as r:
            own = sorted(k.decode() for k in r.keys("*{AB12CD}*"))
            assert "cobrowse:{AB12CD}:history" in own and "cobrowse:{AB12CD}:code" in own
            assert {key_slot(k.encode()) for k in own} == {key_slot(b"AB12CD")}
            before = _dump_keys(r)
            r.config_resetstat()
        assert await store.delete_visitor("AB12CD") is True
        with redis_server.client() as r:
            stats = r.info("commandstats")
            after = _dump_keys(r)
        assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), stats
        gone = {"AB12CD", "AB12CD-1", "AB12CD-2"}
        assert not [k for k in after if any(g in k for g in gone)], after
        assert not [k for k, held in after.items() if isinstance(held, set) and held & gone], after
        assert "cobrowse:code:123456789" not in after and "cobrowse:session:AB12CD-1" not in after
        assert {k for k in before if "OTHER" in k} <= set(after)  # the other visitor's keys stay

    _redis(redis_url, body)


@pytest.mark.cluster
def test_redis_a_filtered_meetings_list_reads_at_most_the_scan_bound_in_pages(
    redis_url: str, redis_server: RedisServer
) -> None:
    async def body(store: RedisStore) -> None:
        for n in range(8):
            await store.save_meeting(_meeting(n))
        with redis_server.client() as r:
            r.config_resetstat()
        got, total = await store.list_meetings([MeetingFilter("status", "eq", "scheduled")], 1, 20)
        assert ([int(m.id, 16) for m in got], total) == ([7, 6, 5, 4, 3], 5)  # the 5 most recent only
        with redis_server.client() as r:
            stats = r.info("commandstats")
        assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), stats
        assert stats["cmdstat_zrevrange"]["calls"] == 3  # pages of 2, 2 and 1
        assert stats["cmdstat_hmget"]["calls"] == 5 and stats["cmdstat_hgetall"]["calls"] == 5
        got, total = await store.list_meetings([], 2, 5)  # unfiltered: any page, the whole total
        assert ([int(m.id, 16) for m in got], total) == ([2, 1, 0], 8)

    _redis(redis_url, body, meeting_scan=5, page=2)


@pytest.mark.cluster
def test_redis_usage_counts_index_ranges_and_reads_only_session_lengths(
    redis_url: str, redis_server: RedisServer
) -> None:
    async def body(store: RedisStore) -> None:
        for i in range(3):
            await store.save_visitor(Visitor(f"V{i}", first_seen=1, last_seen=NOW - i * DAY, online=i == 0))
        for i in range(4):  # 3 ended, 1 open, in the last 30 days
            s = SessionRecord(f"s{i}", "V0", [{"id": f"a{i}", "name": "A"}], started=NOW - i * DAY - 100)
            s.ended = None if i == 0 else s.started + 10
            await store.save_session(s)
        await store.save_session(SessionRecord("old", "V1", started=NOW - 40 * DAY, ended=NOW - 40 * DAY + 5))
        with redis_server.client() as r:
            r.config_resetstat()
        u = await store.usage(NOW)
        assert (u.session_counts_last_30_days, u.session_seconds_last_30_days, u.agents_last_30_days) == (4, 130, 4)
        with redis_server.client() as r:
            stats = r.info("commandstats")
        assert not {"cmdstat_keys", "cmdstat_scan", "cmdstat_hgetall", "cmdstat_get"} & set(stats), stats
        assert stats["cmdstat_zcount"]["calls"] == 9  # 4 visitors, 2 agents, 2 sessions, the window's first rank
        assert stats["cmdstat_zrange"]["calls"] == 3 and stats["cmdstat_hmget"]["calls"] == 2  # pages of 2

    _redis(redis_url, body, usage_page=2)


def test_open_storage_picks_redis_when_redis_url_is_set(tmp_path: Path) -> None:
    assert isinstance(open_storage(Settings(data_dir=tmp_path)), SqliteStore)
    store = open_storage(Settings(data_dir=tmp_path, redis_url="redis+sentinel://127.0.0.1:26379/mymaster"))
    assert isinstance(store, RedisStore)
    with pytest.raises(ValueError, match="names the master's service"):
        open_storage(Settings(data_dir=tmp_path, redis_url="redis+sentinel://127.0.0.1:26379"))
