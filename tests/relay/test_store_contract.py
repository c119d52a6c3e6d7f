"""The storage port's contract, run against every adapter (SQLite today)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.storage.base import SessionRecord, Store, Visitor, parse_search
from relay.storage.sqlite import SqliteStore

ADAPTERS: dict[str, Callable[[Path], Store]] = {"sqlite": lambda d: SqliteStore(d / "store.sqlite3")}


@pytest.fixture(params=sorted(ADAPTERS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Callable[[Store], Awaitable[Any]]], Any]:
    factory = ADAPTERS[request.param]

    def run(body: Callable[[Store], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            store = factory(tmp_path)
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(go())

    return run


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
