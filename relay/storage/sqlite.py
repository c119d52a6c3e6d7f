"""The embedded store: SQLite (stdlib) in WAL mode under ``DATA_DIR``.

One connection, owned by one worker thread; the event loop never blocks on
disk. WAL with ``synchronous=NORMAL`` keeps every committed write across a
crash of the process (SIGKILL included); only a power loss may cost the last
transactions.

Schema changes are additive: :func:`_migrate` adds the columns a database
made by an older version lacks (``ALTER TABLE ... ADD COLUMN``), so an
upgrade keeps every row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .base import SearchQuery, SessionRecord, Visitor

__all__ = ["SqliteStore"]
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visitors (
    short_id TEXT PRIMARY KEY,
    unique_id TEXT NOT NULL DEFAULT '',
    identities TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    lookup_code TEXT NOT NULL DEFAULT '',
    device_type TEXT NOT NULL DEFAULT '',
    browser TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    last_url TEXT NOT NULL DEFAULT '',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    in_session INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS visitors_last_seen ON visitors (last_seen DESC);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    visitor TEXT NOT NULL,
    agents TEXT NOT NULL DEFAULT '[]',
    observer TEXT NOT NULL DEFAULT '{}',
    started REAL NOT NULL,
    ended REAL,
    went_live INTEGER NOT NULL DEFAULT 0,
    features_used TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT '',
    viewers TEXT NOT NULL DEFAULT '[]',
    visitor_allow TEXT NOT NULL DEFAULT '[]',
    epoch INTEGER NOT NULL DEFAULT 0,
    left_viewers TEXT NOT NULL DEFAULT '[]',
    end_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_visitor ON sessions (visitor, started DESC);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS live_codes (
    code TEXT PRIMARY KEY,
    visitor TEXT NOT NULL UNIQUE,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS live_codes_expires ON live_codes (expires);
"""

# Columns added since the first schema, with their definitions: _migrate adds
# the ones an existing database lacks. New columns go at the end of both.
_SESSION_ADDED = (
    ("state", "TEXT NOT NULL DEFAULT ''"),
    ("viewers", "TEXT NOT NULL DEFAULT '[]'"),
    ("visitor_allow", "TEXT NOT NULL DEFAULT '[]'"),
    ("epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("left_viewers", "TEXT NOT NULL DEFAULT '[]'"),
    ("end_reason", "TEXT NOT NULL DEFAULT ''"),
)
# After the migration: the partial index that open_sessions reads.
_INDEXES = "CREATE INDEX IF NOT EXISTS sessions_open ON sessions (started) WHERE ended IS NULL;"

_SESSION_COLS = (
    "id, visitor, agents, observer, started, ended, went_live, features_used, metadata, "
    "state, viewers, visitor_allow, epoch, left_viewers, end_reason"
)

_VISITOR_COLS = (
    "short_id, unique_id, identities, tags, lookup_code, device_type, browser, ip, "
    "last_url, first_seen, last_seen, online, in_session"
)


def _visitor(row: tuple[Any, ...]) -> Visitor:
    return Visitor(
        short_id=row[0],
        unique_id=row[1],
        identities=orjson.loads(row[2]),
        tags=orjson.loads(row[3]),
        lookup_code=row[4],
        device_type=row[5],
        browser=row[6],
        ip=row[7],
        last_url=row[8],
        first_seen=row[9],
        last_seen=row[10],
        online=bool(row[11]),
        in_session=bool(row[12]),
    )


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(
        id=row[0],
        visitor=row[1],
        agents=orjson.loads(row[2]),
        observer=orjson.loads(row[3]),
        started=row[4],
        ended=row[5],
        went_live=bool(row[6]),
        features_used=orjson.loads(row[7]),
        metadata=orjson.loads(row[8]),
        state=row[9],
        viewers=orjson.loads(row[10]),
        allow=orjson.loads(row[11]),
        epoch=row[12],
        left_viewers=orjson.loads(row[13]),
        end_reason=row[14],
    )


def _migrate(db: sqlite3.Connection) -> None:
    """Add the session columns a database made by an older version lacks."""
    have = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    for name, definition in _SESSION_ADDED:
        if name not in have:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {definition}")


def _like(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_VISITOR_UPSERT = (
    f"INSERT INTO visitors ({_VISITOR_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(short_id) DO UPDATE SET unique_id=excluded.unique_id, identities=excluded.identities, "
    "tags=excluded.tags, lookup_code=excluded.lookup_code, device_type=excluded.device_type, "
    "browser=excluded.browser, ip=excluded.ip, last_url=excluded.last_url, "
    "last_seen=excluded.last_seen, online=excluded.online, in_session=excluded.in_session"
)
_SESSION_UPSERT = f"INSERT OR REPLACE INTO sessions ({_SESSION_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_SESSION_CLOSE = "UPDATE sessions SET ended = ?, end_reason = ?, state = '' WHERE id = ? AND ended IS NULL"
# Visitors past retention: offline, last seen before the cutoff, in no session row.
_VISITOR_EXPIRE = (
    "DELETE FROM visitors WHERE last_seen < ? AND online = 0 "
    "AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.visitor = visitors.short_id)"
)


def _atomic(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(db)`` in one transaction: committed if it returns, rolled back if it raises."""
    db.execute("BEGIN")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return result


def _claim_code(db: sqlite3.Connection, code: str, visitor: str, expires: float) -> bool:
    """Prune expired codes, then give ``code`` to ``visitor`` unless another visitor holds it.

    One row per visitor (its unique index): its previous code goes with the claim.
    """
    db.execute("DELETE FROM live_codes WHERE expires <= ?", (time.time(),))
    held = db.execute("SELECT visitor FROM live_codes WHERE code = ?", (code,)).fetchone()
    if held is not None and held[0] != visitor:
        return False
    db.execute("DELETE FROM live_codes WHERE visitor = ?", (visitor,))
    db.execute("INSERT INTO live_codes (code, visitor, expires) VALUES (?, ?, ?)", (code, visitor, expires))
    return True


def _visitor_row(v: Visitor) -> tuple[Any, ...]:
    return (
        v.short_id, v.unique_id, orjson.dumps(v.identities).decode(), orjson.dumps(v.tags).decode(),
        v.lookup_code, v.device_type, v.browser, v.ip, v.last_url, v.first_seen, v.last_seen,
        int(v.online), int(v.in_session),
    )  # fmt: skip


def _session_row(s: SessionRecord) -> tuple[Any, ...]:
    return (
        s.id, s.visitor, orjson.dumps(s.agents).decode(), orjson.dumps(s.observer).decode(), s.started,
        s.ended, int(s.went_live), orjson.dumps(s.features_used).decode(), orjson.dumps(s.metadata).decode(),
        s.state, orjson.dumps(s.viewers).decode(), orjson.dumps(s.allow).decode(), s.epoch,
        orjson.dumps(s.left_viewers).decode(), s.end_reason,
    )  # fmt: skip


def _create_private(path: Path) -> None:
    """Create ``path``'s directory (0700) and an empty database file (0600) if absent.

    SQLite would create the file 0644 less the umask; made here first, it is
    private from its first byte, and SQLite gives the -wal and -shm files the
    database file's own mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class _Batch:
    """Writes gathered during one loop turn, committed in one transaction."""

    __slots__ = ("done", "nonces", "results", "sessions", "visitors")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.visitors: dict[str, tuple[Any, ...]] = {}  # latest row per key wins
        self.sessions: dict[str, tuple[Any, ...]] = {}
        self.nonces: dict[str, float] = {}
        self.results: dict[str, bool] = {}
        self.done: asyncio.Future[None] = loop.create_future()


class SqliteStore:
    """Group commit: every write awaits the transaction that holds it (so a
    completed write is durable, as before), but concurrent writes, and the
    nonce checks of concurrent admissions, share one transaction and one
    hand-off to the database thread. Reads see writes still pending."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._batch: _Batch | None = None  # collecting
        self._inflight: _Batch | None = None  # being committed
        self._writer: asyncio.Task[None] | None = None

    # --- group commit ------------------------------------------------------------------
    def _collecting(self) -> _Batch:
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = _Batch(loop)
            if self._writer is None:
                self._writer = loop.create_task(self._write_loop())
        return self._batch

    async def _write_loop(self) -> None:
        try:
            while self._batch is not None:
                await asyncio.sleep(0)  # let this loop turn add to the batch
                batch, self._batch = self._batch, None
                self._inflight = batch
                try:
                    await self._run(partial(self._commit, b=batch))
                except Exception as e:  # every waiter of this batch sees it
                    batch.done.set_exception(e)
                else:
                    batch.done.set_result(None)
                finally:
                    self._inflight = None
        finally:
            self._writer = None

    @staticmethod
    def _commit(db: sqlite3.Connection, b: _Batch) -> None:
        db.execute("BEGIN")
        try:
            if b.visitors:
                db.executemany(_VISITOR_UPSERT, b.visitors.values())
            if b.sessions:
                db.executemany(_SESSION_UPSERT, b.sessions.values())
            if b.nonces:
                db.execute("DELETE FROM nonces WHERE expires < ?", (time.time(),))
                for nonce, expires in b.nonces.items():
                    cur = db.execute("INSERT OR IGNORE INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires))
                    b.results[nonce] = cur.rowcount == 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def _settled(self) -> None:
        """Wait until every write made so far is committed (or failed)."""
        for b in (self._inflight, self._batch):
            if b is not None:
                await asyncio.wait([b.done])

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            assert self._db is not None, "store is closed"
            return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self) -> None:
        def connect() -> None:
            _create_private(self._path)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            _migrate(db)
            db.executescript(_INDEXES)
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    async def close(self) -> None:
        await self._settled()
        if self._writer is not None:
            await asyncio.wait([self._writer])

        def shut() -> None:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)

    async def ping(self) -> bool:
        """True when the store can *write* now: take the write lock (200 ms at most) and let it go.

        ``SELECT 1`` reads no page and takes no lock: /health stayed 200 while
        another process held the write lock or the file was read-only."""

        def probe(db: sqlite3.Connection) -> bool:
            db.execute("PRAGMA busy_timeout=200")
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            finally:
                db.execute("PRAGMA busy_timeout=5000")
            return True

        try:
            return await self._run(probe)
        except (sqlite3.Error, AssertionError, RuntimeError):
            return False

    async def save_visitor(self, v: Visitor) -> None:
        batch = self._collecting()
        batch.visitors[v.short_id] = _visitor_row(v)
        await asyncio.shield(batch.done)

    async def get_visitor(self, short_id: str) -> Visitor | None:
        for b in (self._batch, self._inflight):
            if b is not None and short_id in b.visitors:
                return _visitor(b.visitors[short_id])
        sql = f"SELECT {_VISITOR_COLS} FROM visitors WHERE short_id = ?"
        found = await self._run(lambda db: db.execute(sql, (short_id,)).fetchone())
        return None if found is None else _visitor(found)

    async def latest_visitors(self, limit: int) -> list[Visitor]:
        await self._settled()
        sql = f"SELECT {_VISITOR_COLS} FROM visitors ORDER BY online DESC, last_seen DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (limit,)).fetchall())
        return [_visitor(r) for r in rows]

    async def search_visitors(self, q: SearchQuery, limit: int) -> list[Visitor]:
        await self._settled()
        where: list[str] = []
        args: list[Any] = []
        text_cols = ("short_id", "unique_id", "identities", "tags", "lookup_code", "last_url")
        for term in q.text:
            where.append("(" + " OR ".join(f"lower({c}) LIKE ? ESCAPE '\\'" for c in text_cols) + ")")
            args.extend([_like(term)] * len(text_cols))
        for col, value in q.fields:
            where.append(f"lower({col}) LIKE ? ESCAPE '\\'")
            args.append(_like(value))
        if q.online is not None:
            where.append("online = ?")
            args.append(int(q.online))
        clause = " AND ".join(where) or "1"
        sql = f"SELECT {_VISITOR_COLS} FROM visitors WHERE {clause} ORDER BY online DESC, last_seen DESC LIMIT ?"
        args.append(limit)
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [_visitor(r) for r in rows]

    async def mark_all_offline(self) -> None:
        await self._run(lambda db: db.execute("UPDATE visitors SET online = 0, in_session = 0"))

    async def use_nonce(self, nonce: str, expires: float) -> bool:
        batch = self._collecting()
        if nonce in batch.nonces:
            return False  # a concurrent admission in this batch took it first
        batch.nonces[nonce] = expires
        await asyncio.shield(batch.done)
        return batch.results[nonce]

    async def save_session(self, s: SessionRecord) -> None:
        batch = self._collecting()
        batch.sessions[s.id] = _session_row(s)
        await asyncio.shield(batch.done)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        await self._settled()
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?"
        row = await self._run(lambda db: db.execute(sql, (session_id,)).fetchone())
        return None if row is None else _session(row)

    async def sessions_for(self, short_id: str, limit: int) -> list[SessionRecord]:
        await self._settled()
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE visitor = ? ORDER BY started DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (short_id, limit)).fetchall())
        return [_session(r) for r in rows]

    async def open_sessions(self) -> list[SessionRecord]:
        await self._settled()
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE ended IS NULL ORDER BY started"
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        return [_session(r) for r in rows]

    async def close_sessions(self, ids: Sequence[str], ended: float, reason: str) -> int:
        if not ids:
            return 0
        await self._settled()  # a pending save of one of them must not reopen it afterwards
        args = [(ended, reason, i) for i in dict.fromkeys(ids)]
        return await self._run(partial(_atomic, fn=lambda db: db.executemany(_SESSION_CLOSE, args).rowcount))

    async def expire_visitors(self, cutoff: float) -> int:
        await self._settled()
        return await self._run(lambda db: db.execute(_VISITOR_EXPIRE, (cutoff,)).rowcount)

    # --- live-session codes --------------------------------------------------------------
    async def save_code(self, code: str, visitor: str, expires: float) -> bool:
        """One transaction: expired codes pruned, the claim checked, the visitor's row replaced."""
        return await self._run(partial(_atomic, fn=partial(_claim_code, code=code, visitor=visitor, expires=expires)))

    async def visitor_of_code(self, code: str) -> str | None:
        sql = "SELECT visitor FROM live_codes WHERE code = ? AND expires > ?"
        row = await self._run(lambda db: db.execute(sql, (code, time.time())).fetchone())
        return None if row is None else str(row[0])

    async def code_of(self, visitor: str) -> str | None:
        sql = "SELECT code FROM live_codes WHERE visitor = ? AND expires > ?"
        row = await self._run(lambda db: db.execute(sql, (visitor, time.time())).fetchone())
        return None if row is None else str(row[0])

    async def drop_code(self, code: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM live_codes WHERE code = ?", (code,)))
