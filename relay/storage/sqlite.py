"""The embedded store: SQLite (stdlib) in WAL mode under ``DATA_DIR``.

One connection, owned by one worker thread; the event loop never blocks on
disk. WAL with ``synchronous=NORMAL`` keeps every committed write across a
crash of the process (SIGKILL included); only a power loss may cost the last
transactions.

Schema changes are additive: :func:`_migrate` adds the columns a database
made by an older version lacks (``ALTER TABLE ... ADD COLUMN``), so an
upgrade keeps every row; tables new in a version are made by ``_SCHEMA``
(``CREATE TABLE IF NOT EXISTS``) and, when they hold what older rows imply
(``agents``), filled from those rows the first time.

Tables: ``visitors``, ``sessions``, ``nonces``, ``live_codes``; ``pageviews``
(a visitor's history, :data:`~.base.HISTORY_MAX` rows per visitor, trimmed
in the transaction that adds one); ``agents`` (each agent id's latest session
start: the usage figures); ``meetings``; ``api_keys``.
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

from .base import (
    HISTORY_MAX,
    MEETING_STATUSES,
    ApiKey,
    Meeting,
    MeetingFilter,
    Pageview,
    SearchQuery,
    SessionRecord,
    Usage,
    Visitor,
    clip_pageview,
    meeting_page,
    usage_windows,
)

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
CREATE TABLE IF NOT EXISTS pageviews (
    seq INTEGER PRIMARY KEY,
    visitor TEXT NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pageviews_visitor ON pageviews (visitor, seq);
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    last_started REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_last_started ON agents (last_started);
CREATE TABLE IF NOT EXISTS meetings (
    id TEXT PRIMARY KEY,
    user_email TEXT NOT NULL,
    starts_at REAL NOT NULL,
    cobrowsing_url TEXT NOT NULL,
    status TEXT NOT NULL,
    duration INTEGER,
    cobrowsing_cookies_data TEXT NOT NULL DEFAULT '[]',
    custom_data TEXT NOT NULL DEFAULT 'null',
    presenter_waiting_room_iframe_url TEXT,
    prospect_waiting_room_iframe_url TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS meetings_created ON meetings (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_kind ON api_keys (kind, created_at DESC, id DESC);
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
# After the migration: the partial index that open_sessions reads, the sessions by start
# (usage windows), the online visitors by last_seen (usage counts them apart).
_INDEXES = """
CREATE INDEX IF NOT EXISTS sessions_open ON sessions (started) WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started);
CREATE INDEX IF NOT EXISTS visitors_online ON visitors (last_seen) WHERE online = 1;
"""

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


_MEETING_COLS = (
    "id, user_email, starts_at, cobrowsing_url, status, duration, cobrowsing_cookies_data, custom_data, "
    "presenter_waiting_room_iframe_url, prospect_waiting_room_iframe_url, created_at, updated_at"
)
_API_KEY_COLS = "id, kind, secret_hash, name, company, created_at, revoked_at"


def _meeting(row: tuple[Any, ...]) -> Meeting:
    return Meeting(
        id=row[0],
        user=row[1],
        starts_at=row[2],
        cobrowsing_url=row[3],
        status=row[4],
        duration=row[5],
        cobrowsing_cookies_data=orjson.loads(row[6]),
        custom_data=orjson.loads(row[7]),
        presenter_waiting_room_iframe_url=row[8],
        prospect_waiting_room_iframe_url=row[9],
        created_at=row[10],
        updated_at=row[11],
    )


def _meeting_row(m: Meeting) -> tuple[Any, ...]:
    return (
        m.id, m.user, m.starts_at, m.cobrowsing_url, m.status, m.duration,
        orjson.dumps(m.cobrowsing_cookies_data).decode(), orjson.dumps(m.custom_data).decode(),
        m.presenter_waiting_room_iframe_url, m.prospect_waiting_room_iframe_url, m.created_at, m.updated_at,
    )  # fmt: skip


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(*row)


# A meeting's status as its place in MEETING_STATUSES (what status_gt / status_lt compare).
_STATUS_RANK = "CASE status " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(MEETING_STATUSES)) + " END"
_OPS = {"eq": "=", "gt": ">", "lt": "<"}


def _meeting_where(filters: Sequence[MeetingFilter]) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of ``filters``, and-ed; ``1`` for none."""
    where: list[str] = []
    args: list[Any] = []
    for f in filters:
        if f.field == "user_email":
            where.append("instr(py_lower(user_email), ?) > 0")  # Python's lower(): not ASCII only
            args.append(str(f.value).lower())
        elif f.field == "status":
            where.append(f"{_STATUS_RANK} {_OPS[f.op]} ?")
            args.append(MEETING_STATUSES.index(str(f.value)))
        else:
            where.append(f"starts_at {_OPS[f.op]} ?")
            args.append(float(f.value))
    return " AND ".join(where) or "1", args


def _agent_rows(s: SessionRecord) -> list[tuple[str, float]]:
    """(agent id, session start) for each agent of ``s`` with an id."""
    return [(a["id"], s.started) for a in s.agents if a.get("id")]


_AGENT_UPSERT = (
    "INSERT INTO agents (id, last_started) VALUES (?, ?) "
    "ON CONFLICT(id) DO UPDATE SET last_started = max(last_started, excluded.last_started)"
)


def _migrate(db: sqlite3.Connection, new_tables: set[str]) -> None:
    """Add the session columns a database made by an older version lacks; fill new derived tables.

    ``new_tables`` are the tables ``_SCHEMA`` just made. A new ``agents``
    table gets each agent's latest session start from the sessions there are.
    """
    have = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    for name, definition in _SESSION_ADDED:
        if name not in have:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {definition}")
    if "agents" in new_tables:
        rows = db.execute("SELECT agents, started FROM sessions")
        latest: dict[str, float] = {}
        for agents, started in rows:
            for a in orjson.loads(agents):
                if isinstance(a, dict) and a.get("id"):
                    latest[a["id"]] = max(started, latest.get(a["id"], started))
        _atomic(db, lambda db: db.executemany(_AGENT_UPSERT, latest.items()))


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


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
_EXPIRING = (
    "last_seen < ? AND online = 0 AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.visitor = visitors.short_id)"
)


def _expire(db: sqlite3.Connection, cutoff: float) -> int:
    """Delete the visitors past retention and their history (one transaction with :func:`_atomic`)."""
    db.execute(f"DELETE FROM pageviews WHERE visitor IN (SELECT short_id FROM visitors WHERE {_EXPIRING})", (cutoff,))
    return db.execute(f"DELETE FROM visitors WHERE {_EXPIRING}", (cutoff,)).rowcount


def _delete_visitors(db: sqlite3.Connection, ids: Sequence[str]) -> int:
    """Delete the visitors ``ids`` and all their data; how many visitor rows there were."""
    args = [(i,) for i in ids]
    for table, col in (("sessions", "visitor"), ("pageviews", "visitor"), ("live_codes", "visitor")):
        db.executemany(f"DELETE FROM {table} WHERE {col} = ?", args)
    return db.executemany("DELETE FROM visitors WHERE short_id = ?", args).rowcount


def _delete_offline(db: sqlite3.Connection, batch: int) -> int:
    sql = "SELECT short_id FROM visitors WHERE online = 0 ORDER BY last_seen LIMIT ?"
    return _delete_visitors(db, [row[0] for row in db.execute(sql, (batch,))])


def _add_pageview(db: sqlite3.Connection, visitor: str, url: str, title: str, at: float) -> bool:
    """Insert the pageview if the visitor exists, then drop its rows past the newest HISTORY_MAX."""
    cur = db.execute(
        "INSERT INTO pageviews (visitor, url, title, at) SELECT ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM visitors WHERE short_id = ?)",
        (visitor, url, title, at, visitor),
    )
    if cur.rowcount != 1:
        return False
    db.execute(
        "DELETE FROM pageviews WHERE visitor = ? AND seq <= "
        "(SELECT seq FROM pageviews WHERE visitor = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        (visitor, visitor, HISTORY_MAX),
    )
    return True


def _usage(db: sqlite3.Connection, now: float, day_start: float | None) -> Usage:
    w = usage_windows(now, day_start)

    def one(sql: str, *args: Any) -> Any:
        return db.execute(sql, args).fetchone()[0]

    def visitors(since: float) -> int:
        seen = one("SELECT count(*) FROM visitors WHERE last_seen >= ?", since)
        return int(seen + one("SELECT count(*) FROM visitors WHERE online = 1 AND last_seen < ?", since))

    def seconds(since: float) -> int:
        sql = "SELECT total(max(0, coalesce(ended, ?) - started)) FROM sessions WHERE started >= ?"
        return round(float(one(sql, now, since)))

    agents = "SELECT count(*) FROM agents WHERE last_started >= ?"
    sessions = "SELECT count(*) FROM sessions WHERE started >= ?"
    return Usage(
        visitors_online_now=one("SELECT count(*) FROM visitors WHERE online = 1"),
        visitors_last_24_hrs=visitors(w["day"]),
        visitors_last_30_days=visitors(w["month"]),
        agents_today=one(agents, w["today"]),
        agents_last_30_days=one(agents, w["month"]),
        session_counts_now=one("SELECT count(*) FROM sessions WHERE ended IS NULL"),
        session_counts_today=one(sessions, w["today"]),
        session_counts_last_30_days=one(sessions, w["month"]),
        session_seconds_today=seconds(w["today"]),
        session_seconds_last_30_days=seconds(w["month"]),
    )


def _list_meetings(
    db: sqlite3.Connection, filters: Sequence[MeetingFilter], skip: int, per: int
) -> tuple[list[Meeting], int]:
    where, args = _meeting_where(filters)
    total = db.execute(f"SELECT count(*) FROM meetings WHERE {where}", args).fetchone()[0]
    sql = f"SELECT {_MEETING_COLS} FROM meetings WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
    return [_meeting(r) for r in db.execute(sql, [*args, per, skip])], int(total)


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

    __slots__ = ("agents", "done", "nonces", "results", "sessions", "visitors")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.visitors: dict[str, tuple[Any, ...]] = {}  # latest row per key wins
        self.sessions: dict[str, tuple[Any, ...]] = {}
        self.agents: list[tuple[str, float]] = []  # (agent id, session start): the latest start is kept
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
            if b.agents:
                db.executemany(_AGENT_UPSERT, b.agents)
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
            db.create_function("py_lower", 1, str.lower, deterministic=True)
            before = _tables(db)
            db.executescript(_SCHEMA)
            _migrate(db, _tables(db) - before)
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
        batch.agents += _agent_rows(s)
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
        """Delete the visitors past retention, and their history, in one transaction."""
        await self._settled()
        return await self._run(partial(_atomic, fn=partial(_expire, cutoff=cutoff)))

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

    # --- the cloud API: deleting visitors, usage, history --------------------------------
    async def delete_visitor(self, short_id: str) -> bool:
        """One transaction: its sessions, pageviews, code and row."""
        await self._settled()  # a pending save of it must not land afterwards
        return bool(await self._run(partial(_atomic, fn=partial(_delete_visitors, ids=[short_id]))))

    async def delete_offline_visitors(self, batch: int) -> int:
        """One transaction: the ``batch`` least recently seen offline visitors and all their data."""
        if batch <= 0:
            return 0
        await self._settled()
        return await self._run(partial(_atomic, fn=partial(_delete_offline, batch=batch)))

    async def usage(self, now: float, day_start: float | None = None) -> Usage:
        """Counts over the indexes (visitors by last_seen, sessions by start, agents by latest start)."""
        await self._settled()
        return await self._run(partial(_usage, now=now, day_start=day_start))

    async def add_pageview(self, short_id: str, url: str, title: str, at: float) -> bool:
        """One transaction: the row added if the visitor exists, the rows past HISTORY_MAX dropped."""
        url, title = clip_pageview(url, title)
        await self._settled()  # the visitor's pending save first
        add = partial(_add_pageview, visitor=short_id, url=url, title=title, at=at)
        return await self._run(partial(_atomic, fn=add))

    async def history(self, short_id: str, limit: int) -> list[Pageview]:
        await self._settled()  # a pageview waiting on the batch goes first
        sql = "SELECT url, title, at FROM pageviews WHERE visitor = ? ORDER BY seq DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (short_id, max(0, limit))).fetchall())
        return [Pageview(*r) for r in rows]

    # --- meetings --------------------------------------------------------------------------
    async def save_meeting(self, m: Meeting) -> None:
        if m.status not in MEETING_STATUSES:
            raise ValueError(f"meeting status {m.status!r}: not one of {', '.join(MEETING_STATUSES)}")
        sql = f"INSERT OR REPLACE INTO meetings ({_MEETING_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        row = _meeting_row(m)
        await self._run(lambda db: db.execute(sql, row))

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        sql = f"SELECT {_MEETING_COLS} FROM meetings WHERE id = ?"
        row = await self._run(lambda db: db.execute(sql, (meeting_id,)).fetchone())
        return None if row is None else _meeting(row)

    async def list_meetings(self, filters: Sequence[MeetingFilter], page: int, per: int) -> tuple[list[Meeting], int]:
        """One query for the page (``created_at`` index), one for the total."""
        skip, per = meeting_page(page, per)
        return await self._run(partial(_list_meetings, filters=list(filters), skip=skip, per=per))

    # --- API keys ----------------------------------------------------------------------------
    async def save_api_key(self, k: ApiKey) -> None:
        sql = f"INSERT OR REPLACE INTO api_keys ({_API_KEY_COLS}) VALUES (?,?,?,?,?,?,?)"
        row = (k.id, k.kind, k.secret_hash, k.name, k.company, k.created_at, k.revoked_at)
        await self._run(lambda db: db.execute(sql, row))

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        sql = f"SELECT {_API_KEY_COLS} FROM api_keys WHERE id = ?"
        row = await self._run(lambda db: db.execute(sql, (key_id,)).fetchone())
        return None if row is None else _api_key(row)

    async def list_api_keys(self, kind: str) -> list[ApiKey]:
        sql = f"SELECT {_API_KEY_COLS} FROM api_keys WHERE kind = ? ORDER BY created_at DESC, id DESC"
        rows = await self._run(lambda db: db.execute(sql, (kind,)).fetchall())
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        return bool(await self._run(lambda db: db.execute(sql, (at, key_id)).rowcount))
