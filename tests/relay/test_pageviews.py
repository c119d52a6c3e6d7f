"""PAGEVIEW: a visitor's pageviews end up in its stored history; nobody else can send one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import protocol as p
from relay.storage.base import Pageview as StoredPageview
from relay.storage.sqlite import SqliteStore
from tests.relay.client import live_session, run, visitor, wait_for


def history(relay: Any, short_id: str, limit: int = 50) -> list[StoredPageview]:
    """The visitor's history as the relay's own store keeps it (its SQLite file under DATA_DIR)."""

    async def read() -> list[StoredPageview]:
        store = SqliteStore(relay.data_dir / "relay.sqlite3")
        await store.open()
        try:
            return await store.history(short_id, limit)
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_visitors_pageviews_are_stored_newest_first(relay):
    before = time.time()

    async def scenario() -> None:
        vis, _ = await visitor(relay, "pv-visitor-01")
        await vis.send(p.Pageview(url="https://shop.example/", title="Home", at=int(before * 1000)))
        await vis.send(p.Pageview(url="https://shop.example/cart", title="Cart (2) — Shop"))  # at 0: relay time
        await vis.send(p.Pageview(url="https://shop.example/old", title="Skewed", at=1000))  # 1970: relay time
        await vis.send(p.Ping(t=1))
        await vis.expect(p.Pong)  # handled in order: the three were taken

    run(scenario())
    views = wait_for(lambda: (h := history(relay, "pv-visitor-01")) and len(h) == 3 and h, what="3 pageviews")
    assert [(v.url, v.title) for v in views] == [
        ("https://shop.example/old", "Skewed"),
        ("https://shop.example/cart", "Cart (2) — Shop"),
        ("https://shop.example/", "Home"),
    ]
    assert abs(views[2].at - before) < 0.01  # the page's own time, kept
    after = time.time()
    assert before <= views[1].at <= after and before <= views[0].at <= after


def test_a_new_visitors_first_pageview_is_kept(relay):
    async def scenario() -> None:
        peer = (await visitor(relay, "pv-visitor-02"))[0]
        await peer.send(p.Pageview(url="https://shop.example/first", title="First"))
        await peer.send(p.Ping(t=1))
        await peer.expect(p.Pong)

    run(scenario())
    views = wait_for(lambda: history(relay, "pv-visitor-02"), what="the first pageview")
    assert [v.url for v in views] == ["https://shop.example/first"]


def test_a_viewer_cannot_send_a_pageview(relay):
    async def scenario() -> int | None:
        vis, view, _ = await live_session(relay, "pv-visitor-03")
        await view.send(p.Pageview(url="https://evil.example/", title="x"))
        code = await view.closed()
        await vis.send(p.Ping(t=2))
        await vis.expect(p.Pong)  # the visitor's socket is untouched
        return code

    assert run(scenario()) == p.CloseCode.FORBIDDEN
    time.sleep(0.3)
    assert history(relay, "pv-visitor-03") == []


def test_oversize_strings_are_refused_as_the_codec_refuses_them(relay):
    limit = p.DEFAULT_LIMITS.max_string

    async def scenario() -> int | None:
        vis, _ = await visitor(relay, "pv-visitor-04")
        await vis.send(p.Pageview(url="https://shop.example/" + "a" * (limit - 21), title="t" * 300))
        await vis.send(p.Ping(t=3))
        await vis.expect(p.Pong)  # at the limit (and within max_frame): taken
        # Over it: encode() refuses too, so build the frame from a legal one.
        frame = bytearray(p.encode(p.Pageview(url="u" * limit)))
        tail = frame[frame.index(b"u" * limit) - 3 :]
        assert tail[:3] == b"\xda\x80\x00"  # str16 of 32,768
        over = bytes(frame[: len(frame) - len(tail)]) + b"\xda\x80\x01" + b"u" * (limit + 1)
        await vis.raw(over)
        return await vis.closed()

    assert run(scenario()) == p.CloseCode.PROTOCOL_ERROR
    views = wait_for(lambda: history(relay, "pv-visitor-04"), what="the pageview at the limit")
    assert len(views) == 1
    assert len(views[0].url) == 2048 and len(views[0].title) == 256  # the store clips what it keeps
