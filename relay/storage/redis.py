"""The cluster store: Redis (one server, Sentinel or Redis Cluster) through ``redis.asyncio``.

Persistence is Redis's own. The lines an operator puts in ``redis.conf``::

    appendonly yes              # every write goes to the AOF
    appendfsync everysec        # a crash of the host costs at most about a second
    maxmemory-policy noeviction # a full Redis refuses writes; it never drops visitors or nonces

Key layout (``P`` is the prefix, ``cobrowse`` by default)::

    P:{SHORT}:v            hash    one visitor; each field an orjson value
    P:{SHORT}:sessions     zset    that visitor's session ids by start time
    P:{SHORT}:s:SESSION    hash    one session; each field an orjson value
    P:session:SESSION      string  the short id whose tag holds SESSION
    P:idx:recent           zset    short ids by last_seen, trimmed to the most recent ``recent``
    P:idx:online           zset    short ids of online visitors by last_seen
    P:idx:nosession        zset    short ids of visitors without a session by last_seen
    P:idx:open             zset    ids of sessions not ended, by start time
    P:nonce:NONCE          string  a used grant nonce, expiring when the grant does
    P:code:CODE            string  the short id holding live-session code CODE, expiring with the claim
    P:{SHORT}:code         string  the code SHORT holds, expiring with the claim
    P:{SHORT}:history      list    that visitor's pageviews (orjson [url, title, at]), newest first,
                                   trimmed to HISTORY_MAX in the script that pushes one
    P:idx:visitors         zset    every visitor's short id by last_seen, never trimmed (usage, bulk deletion)
    P:idx:started          zset    session ids by start time (usage windows)
    P:idx:length           hash    session id -> seconds (ended - started) of each ended session
    P:idx:agents           zset    agent ids by the start of their latest session (ZADD GT)
    P:meeting:ID           hash    one meeting; each field an orjson value
    P:idx:meetings         zset    meeting ids by created_at
    P:apikey:ID            hash    one API key; each field an orjson value
    P:idx:apikeys:KIND     zset    ids of the keys of KIND by created_at
    P:probe                string  what :meth:`RedisStore.ping` writes (100 ms TTL)

One visitor's keys share the hash tag ``{SHORT}``, so they live in one slot
and the only multi-key operations (a ``MULTI`` or a Lua script) stay inside
it; every global key is touched by its own command, never in a transaction
with another slot. That is what Redis Cluster allows. Short ids and the
prefix carry no braces.

The global indexes are hints, the visitor and session hashes the truth: an
index entry left behind by a race (two nodes writing one visitor) is checked
against the hash before it is acted on. Search never lists keys: it reads
the recent index page by page (:data:`PAGE` members, their hashes in one
pipeline) and stops at ``limit`` matches, so a visitor trimmed out of the
most recent ``recent`` is no longer found (it is still read by its id).

Deleting a visitor is one script in its slot (its hash, sessions, their
hashes, history and code pointer; it answers the session ids and the code),
then the global keys by commands of their own: the session pointers, the
index entries, the code key if it still names the visitor. A crash between
them leaves index entries that the hashes contradict (ignored, as above) and
a code key that expires with its claim. The usage figures are counts over
index score ranges (ZCARD, ZCOUNT); only the seconds read rows: the 30-day
window of ``P:idx:started``, :data:`USAGE_PAGE` entries a round trip with
their lengths (HMGET on ``P:idx:length``). The meetings list reads
``P:idx:meetings`` newest first; unfiltered, just its page (any page), with
filters the :data:`MEETING_SCAN` most recent meetings at most, :data:`PAGE`
a round trip (HMGET of the three filtered fields), so a filter never finds
an older one. Indexes new in this version start empty on a Redis written by
an older one: ``P:idx:visitors`` holds a visitor once it is saved again, and
``P:idx:started`` / ``P:idx:length`` / ``P:idx:agents`` hold the sessions
saved since (the usage windows fill in over 30 days; deleting all offline
visitors misses those not seen since).

A live-session code is two keys in two slots, so a claim is three commands,
each atomic on its own key: claim ``P:code:CODE`` (a script: set unless
another visitor holds it), point ``P:{SHORT}:code`` at it (``SET ... GET``
returns the previous code), release the previous code (a script: delete it
if it still names this visitor). A reader follows a pointer only when the
other key points back (code to visitor to the same code), so what a crash
or a race between these commands leaves behind, a code key whose visitor
has moved on, reads as no claim; it expires with its claim and until then
keeps that code from being claimed by another visitor (codes are random:
the caller draws another).

``RedisStore(url)`` takes every ``REDIS_URL`` form
(:mod:`relay.cluster.redisconn`): one server, Sentinel (a failover is
followed: commands retried by redis-py reach the promoted replica), or a
Redis Cluster. The contract suite runs it on each, the cluster having three
masters, so whatever crosses slots is refused as in production. A per-node
:meth:`RedisStore.mark_all_offline` is left to the cluster work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..cluster.redisconn import connect, parse_redis_url
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

__all__ = ["RedisStore", "RECENT", "PAGE", "MEETING_SCAN", "USAGE_PAGE"]

RECENT = 10_000  # visitors the recent index keeps: what latest_visitors and search can see
PAGE = 200  # index members read per round trip by search, latest_visitors, open_sessions, expiry, meetings
MEETING_SCAN = 10_000  # most recent meetings a filtered meetings list reads at most
USAGE_PAGE = 1000  # sessions read per round trip for the usage seconds
T = TypeVar("T")

_VISITOR_FIELDS = tuple(f.name for f in dataclasses.fields(Visitor))
_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionRecord))
_MEETING_FIELDS = tuple(f.name for f in dataclasses.fields(Meeting))
_API_KEY_FIELDS = tuple(f.name for f in dataclasses.fields(ApiKey))
# Matched by free text (as their orjson text, like the SQLite adapter's JSON columns).
_TEXT_FIELDS = ("short_id", "unique_id", "identities", "tags", "lookup_code", "last_url")

# KEYS[1] a session hash. End it if it is open: its start if it was, nil if not.
_CLOSE = """
if redis.call('HGET', KEYS[1], 'ended') ~= 'null' then return false end
redis.call('HSET', KEYS[1], 'ended', ARGV[1], 'end_reason', ARGV[2], 'state', '""')
return redis.call('HGET', KEYS[1], 'started')
"""
# KEYS[1] a visitor hash, KEYS[2] its sessions, KEYS[3] its history. Delete it (and its history)
# if past ARGV[1], offline and sessionless: 1 deleted, 0 kept, -1 not a candidate any more
# (has sessions, or gone).
_EXPIRE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local f = redis.call('HMGET', KEYS[1], 'last_seen', 'online')
if not f[1] then return -1 end
if f[2] == 'true' or tonumber(f[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
return 1
"""
# KEYS[1] a visitor hash, KEYS[2] its sessions, KEYS[3] its history, KEYS[4] its code pointer;
# ARGV[1] the prefix of its session hashes (the same slot), ARGV[2] '1' to keep it if online.
# Delete all of it: {1 | 0 (there was no visitor hash), its code or '', its session ids...};
# {-1} if kept.
_DELETE = """
if ARGV[2] == '1' and redis.call('HGET', KEYS[1], 'online') == 'true' then return {-1} end
local out = {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[4]) or ''}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    redis.call('DEL', ARGV[1] .. id)
    out[#out + 1] = id
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return out
"""
# KEYS[1] a visitor hash, KEYS[2] its history: push ARGV[1] and keep the newest ARGV[2] if the
# visitor exists. 1 pushed, 0 unknown visitor.
_PAGEVIEW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1
"""
# KEYS[1] an API key hash: revoke it at ARGV[1] unless unknown or revoked. 1 revoked, 0 not.
_REVOKE = """
local at = redis.call('HGET', KEYS[1], 'revoked_at')
if at ~= 'null' then return 0 end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""
# KEYS[1] a visitor hash: mark it offline if it still exists.
_OFFLINE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'online', 'false', 'in_session', 'false')
return 1
"""
# KEYS[1] a code key: give it to visitor ARGV[1] until ARGV[2] (Unix ms) unless another
# visitor holds it. 1 claimed, 0 held.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""
# KEYS[1] a code key or a visitor's code pointer: delete it if it still holds ARGV[1].
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _dump(value: object) -> bytes:
    return orjson.dumps(value)


def _fields(obj: object, names: Iterable[str]) -> dict[Any, bytes]:
    return {name: _dump(getattr(obj, name)) for name in names}


def _load(raw: Mapping[Any, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The known fields of a stored hash, decoded (fields a newer version added are ignored)."""
    got = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return {k: v for k, v in got.items() if k in names}


def _visitor(raw: Mapping[Any, Any]) -> Visitor:
    v = Visitor(**_load(raw, _VISITOR_FIELDS))
    v.first_seen, v.last_seen = float(v.first_seen), float(v.last_seen)
    return v


def _session(raw: Mapping[Any, Any]) -> SessionRecord:
    s = SessionRecord(**_load(raw, _SESSION_FIELDS))
    s.started = float(s.started)
    s.ended = None if s.ended is None else float(s.ended)
    return s


def _meeting(raw: Mapping[Any, Any]) -> Meeting:
    m = Meeting(**_load(raw, _MEETING_FIELDS))
    m.starts_at, m.created_at, m.updated_at = float(m.starts_at), float(m.created_at), float(m.updated_at)
    return m


def _api_key(raw: Mapping[Any, Any]) -> ApiKey:
    k = ApiKey(**_load(raw, _API_KEY_FIELDS))
    k.created_at = float(k.created_at)
    k.revoked_at = None if k.revoked_at is None else float(k.revoked_at)
    return k


def _ids(members: Iterable[Any]) -> list[str]:
    """Sorted-set members (bytes from the server) as str."""
    return [m.decode() for m in members]


def _str(raw: object) -> str:
    """A reply (bytes from the server) as str."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _text(v: Visitor, name: str) -> str:
    value = getattr(v, name)
    return (value if isinstance(value, str) else _dump(value).decode()).lower()


def _matches(v: Visitor, q: SearchQuery) -> bool:
    """Whether ``v`` is found by ``q``: the documented syntax, as the SQLite adapter reads it.

    Every free-text term is a case-insensitive substring of one of the text
    fields; every ``field:value`` one of that field; ``online`` is equal.
    """
    if q.online is not None and v.online != q.online:
        return False
    if not all(any(t.lower() in _text(v, f) for f in _TEXT_FIELDS) for t in q.text):
        return False
    return all(value.lower() in _text(v, col) for col, value in q.fields)


class RedisStore:
    """The :class:`~relay.storage.base.Store` port over Redis.

    A completed write is in Redis (durable as its AOF policy says). Writes
    to one visitor or one session are applied in the order they were made,
    even when their callers run concurrently; a write goes on when its
    caller is cancelled. Reads see every write made before them, pending ones
    included: they wait for those first.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "cobrowse",
        *,
        recent: int = RECENT,
        page: int = PAGE,
        meeting_scan: int = MEETING_SCAN,
        usage_page: int = USAGE_PAGE,
    ) -> None:
        """``url`` is any ``REDIS_URL`` form (one server, Sentinel, Redis Cluster); ValueError if malformed.

        ``recent`` bounds the recent index (what search and latest see),
        ``page`` the members read per round trip, ``meeting_scan`` the
        meetings a filtered list reads, ``usage_page`` the sessions read per
        round trip by :meth:`usage`.
        """
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces (they make the hash tag)")
        self._target = parse_redis_url(url)
        self._p = prefix
        self._recent = recent
        self._page = page
        self._meeting_scan = meeting_scan
        self._usage_page = usage_page
        self._r: aioredis.Redis | aioredis.RedisCluster | None = None
        self._tails: dict[str, asyncio.Task[Any]] = {}  # last pending write per visitor/session/code
        self._pending: set[asyncio.Task[Any]] = set()

    # --- keys ----------------------------------------------------------------------------
    def _vkey(self, short_id: str) -> str:
        return f"{self._p}:{{{short_id}}}:v"

    def _vsessions(self, short_id: str) -> str:
        return f"{self._p}:{{{short_id}}}:sessions"

    def _skey(self, short_id: str, session_id: str) -> str:
        return f"{self._p}:{{{short_id}}}:s:{session_id}"

    def _spointer(self, session_id: str) -> str:
        return f"{self._p}:session:{session_id}"

    def _idx(self, name: str) -> str:
        return f"{self._p}:idx:{name}"

    def _ckey(self, code: str) -> str:
        return f"{self._p}:code:{code}"

    def _vcode(self, short_id: str) -> str:
        return f"{self._p}:{{{short_id}}}:code"

    def _vhistory(self, short_id: str) -> str:
        return f"{self._p}:{{{short_id}}}:history"

    def _mkey(self, meeting_id: str) -> str:
        return f"{self._p}:meeting:{meeting_id}"

    def _kkey(self, key_id: str) -> str:
        return f"{self._p}:apikey:{key_id}"

    @property
    def _redis(self) -> aioredis.Redis | aioredis.RedisCluster:
        if self._r is None:
            raise RuntimeError("store is closed")
        return self._r

    # --- write ordering ------------------------------------------------------------------
    def _submit(self, keys: tuple[str, ...], write: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Start ``write`` after the pending writes of ``keys`` (if any); it runs to its end."""
        prev = [t for t in map(self._tails.get, keys) if t is not None]
        task = asyncio.get_running_loop().create_task(self._after(prev, write))
        for key in keys:
            self._tails[key] = task
        self._pending.add(task)
        task.add_done_callback(partial(self._forget, keys))
        return task

    @staticmethod
    async def _after(prev: list[asyncio.Task[Any]], write: Callable[[], Awaitable[T]]) -> T:
        if prev:
            await asyncio.wait(prev)
        return await write()

    def _forget(self, keys: tuple[str, ...], task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        for key in keys:
            if self._tails.get(key) is task:
                del self._tails[key]

    async def _settled(self, key: str | None = None) -> None:
        """Wait for the pending writes of ``key`` (or every pending write); their errors are theirs."""
        tasks = list(self._pending) if key is None else [t for t in (self._tails.get(key),) if t is not None]
        if tasks:
            await asyncio.wait(tasks)

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and check that the server answers (raises if it does not)."""
        r = connect(self._target, socket_connect_timeout=5, socket_timeout=10)
        self._r = r
        self._close_script = r.register_script(_CLOSE)
        self._expire_script = r.register_script(_EXPIRE)
        self._offline_script = r.register_script(_OFFLINE)
        self._claim_script = r.register_script(_CLAIM)
        self._release_script = r.register_script(_RELEASE)
        self._delete_script = r.register_script(_DELETE)
        self._pageview_script = r.register_script(_PAGEVIEW)
        self._revoke_script = r.register_script(_REVOKE)
        try:
            await r.ping()
        except BaseException:
            self._r = None
            await r.aclose()
            raise

    async def close(self) -> None:
        """Let pending writes finish, then disconnect."""
        await self._settled()
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def ping(self) -> bool:
        """True when the store can *write* now: a probe key is set (100 ms TTL) within one second.

        A read-only replica, an unreachable or a full (``noeviction``) server answer False.
        """
        try:
            async with asyncio.timeout(1.0):
                return bool(await self._redis.set(f"{self._p}:probe", b"1", px=100))
        except (RedisError, OSError, TimeoutError, RuntimeError):
            return False

    # --- visitors ------------------------------------------------------------------------
    async def save_visitor(self, v: Visitor) -> None:
        """Upsert ``v``; its first ``first_seen`` is kept."""
        snapshot = dataclasses.replace(v, identities=list(v.identities), tags=list(v.tags))
        await asyncio.shield(self._submit((f"v:{v.short_id}",), partial(self._put_visitor, snapshot)))

    async def _put_visitor(self, v: Visitor) -> None:
        key = self._vkey(v.short_id)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hsetnx(key, "first_seen", _dump(v.first_seen))
            tx.hset(key, mapping=_fields(v, (n for n in _VISITOR_FIELDS if n != "first_seen")))
            tx.exists(self._vsessions(v.short_id))
            *_, has_sessions = await tx.execute()
        await self._index_visitor(v, bool(has_sessions))

    async def _index_visitor(self, v: Visitor, has_sessions: bool) -> None:
        """Update the global indexes for ``v``: separate commands, one per index key."""
        sid, seen = v.short_id, v.last_seen
        async with self._redis.pipeline(transaction=False) as p:
            p.zadd(self._idx("recent"), {sid: seen})
            p.zremrangebyrank(self._idx("recent"), 0, -self._recent - 1)
            p.zadd(self._idx("visitors"), {sid: seen})
            if v.online:
                p.zadd(self._idx("online"), {sid: seen})
            else:
                p.zrem(self._idx("online"), sid)
            if has_sessions:
                p.zrem(self._idx("nosession"), sid)
            else:
                p.zadd(self._idx("nosession"), {sid: seen})
            await p.execute()

    async def get_visitor(self, short_id: str) -> Visitor | None:
        await self._settled(f"v:{short_id}")
        raw = await self._redis.hgetall(self._vkey(short_id))
        return _visitor(raw) if raw else None

    async def latest_visitors(self, limit: int) -> list[Visitor]:
        """Online visitors first, then the most recently seen (among the ``recent`` kept)."""
        return await self.search_visitors(SearchQuery(), limit)

    async def search_visitors(self, q: SearchQuery, limit: int) -> list[Visitor]:
        """Matches of ``q``, online first then most recent; bounded by the online and recent indexes.

        Reads the online index, then the recent one, :data:`PAGE` members a
        round trip, and stops once ``limit`` visitors matched.
        """
        await self._settled()
        found: list[Visitor] = []
        if limit <= 0:
            return found
        seen: set[str] = set()
        indexes = {True: ("online",), False: ("recent",), None: ("online", "recent")}[q.online]
        for name in indexes:
            async with contextlib.aclosing(self._walk(self._idx(name), seen)) as walk:
                async for v in walk:
                    if _matches(v, q):
                        found.append(v)
                        if len(found) >= limit:
                            return found
        return found

    async def _walk(self, index: str, seen: set[str]) -> AsyncGenerator[Visitor, None]:
        """Visitors of ``index``, highest score first, skipping (and adding to) ``seen``."""
        start = 0
        while True:
            ids = _ids(await self._redis.zrevrange(index, start, start + self._page - 1))
            if not ids:
                return
            start += len(ids)
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            for raw in await self._hgetall_many(self._vkey(i) for i in fresh):
                if raw:
                    yield _visitor(raw)

    async def _hgetall_many(self, keys: Iterable[str]) -> list[dict[Any, Any]]:
        async with self._redis.pipeline(transaction=False) as p:
            for key in keys:
                p.hgetall(key)
            return list(await p.execute())

    async def mark_all_offline(self) -> None:
        """Mark every visitor of the online index offline and out of session.

        Run at start-up of a single node. In cluster mode this must only mark
        the visitors *this node* had online (another node's are live): that
        needs a per-node online set, left for the cluster work.
        """
        await self._settled()
        online = self._idx("online")
        while ids := _ids(await self._redis.zrange(online, 0, self._page - 1)):
            for i in ids:
                await self._offline_script(keys=[self._vkey(i)])
            await self._redis.zrem(online, *ids)

    # --- nonces --------------------------------------------------------------------------
    async def use_nonce(self, nonce: str, expires: float) -> bool:
        """``SET NX`` with the grant's expiry: single use across every node sharing this Redis."""
        at = max(1, math.ceil(expires))
        return bool(await self._redis.set(f"{self._p}:nonce:{nonce}", b"1", nx=True, exat=at))

    # --- sessions ------------------------------------------------------------------------
    async def save_session(self, s: SessionRecord) -> None:
        """Upsert ``s`` (a save after a close reopens it, as in every adapter)."""
        snapshot = SessionRecord(**orjson.loads(orjson.dumps(dataclasses.asdict(s))))
        await asyncio.shield(self._submit((f"s:{s.id}",), partial(self._put_session, snapshot)))

    async def _put_session(self, s: SessionRecord) -> None:
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hset(self._skey(s.visitor, s.id), mapping=_fields(s, _SESSION_FIELDS))
            tx.zadd(self._vsessions(s.visitor), {s.id: s.started})
            await tx.execute()
        async with self._redis.pipeline(transaction=False) as p:
            p.set(self._spointer(s.id), s.visitor.encode())
            p.zrem(self._idx("nosession"), s.visitor)
            p.zadd(self._idx("started"), {s.id: s.started})
            if s.ended is None:
                p.zadd(self._idx("open"), {s.id: s.started})
                p.hdel(self._idx("length"), s.id)
            else:
                p.zrem(self._idx("open"), s.id)
                p.hset(self._idx("length"), s.id, _dump(max(0.0, s.ended - s.started)))
            for agent in {a["id"] for a in s.agents if a.get("id")}:
                p.zadd(self._idx("agents"), {agent: s.started}, gt=True)
            await p.execute()

    async def _session_keys(self, ids: Sequence[str]) -> list[str | None]:
        """The hash key of each session id (None for an unknown one)."""
        async with self._redis.pipeline(transaction=False) as p:
            for i in ids:
                p.get(self._spointer(i))
            owners = await p.execute()
        return [None if o is None else self._skey(o.decode(), i) for i, o in zip(ids, owners, strict=True)]

    async def get_session(self, session_id: str) -> SessionRecord | None:
        await self._settled(f"s:{session_id}")
        (key,) = await self._session_keys([session_id])
        raw = await self._redis.hgetall(key) if key else None
        return _session(raw) if raw else None

    async def sessions_for(self, short_id: str, limit: int) -> list[SessionRecord]:
        await self._settled()
        if limit <= 0:
            return []
        ids = _ids(await self._redis.zrevrange(self._vsessions(short_id), 0, limit - 1))
        raws = await self._hgetall_many(self._skey(short_id, i) for i in ids)
        return [_session(raw) for raw in raws if raw]

    async def open_sessions(self) -> list[SessionRecord]:
        """Every session not yet ended, oldest first (the open index, checked against each hash)."""
        await self._settled()
        ids = _ids(await self._redis.zrange(self._idx("open"), 0, -1))
        out: list[SessionRecord] = []
        for at in range(0, len(ids), self._page):
            keys = [k for k in await self._session_keys(ids[at : at + self._page]) if k]
            out += [s for s in map(_session, filter(None, await self._hgetall_many(keys))) if s.ended is None]
        return out

    async def close_sessions(self, ids: Sequence[str], ended: float, reason: str) -> int:
        """End the open sessions among ``ids`` (each atomically, in its visitor's slot)."""
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        await self._settled()  # a pending save of one of them must not reopen it afterwards
        lengths: dict[Any, bytes] = {}
        for sid, key in zip(unique, await self._session_keys(unique), strict=True):
            if key is not None:
                started = await self._close_script(keys=[key], args=[_dump(ended), _dump(reason)])
                if started is not None:
                    lengths[sid] = _dump(max(0.0, ended - float(orjson.loads(started))))
        async with self._redis.pipeline(transaction=False) as p:
            p.zrem(self._idx("open"), *unique)
            if lengths:
                p.hset(self._idx("length"), mapping=lengths)
            await p.execute()
        return len(lengths)

    async def expire_visitors(self, cutoff: float) -> int:
        """Delete visitors past ``cutoff``, offline, sessionless; candidates from the nosession index.

        Each candidate is checked and deleted atomically in its own slot.
        """
        await self._settled()
        index, deleted, offset = self._idx("nosession"), 0, 0
        while ids := _ids(await self._redis.zrangebyscore(index, "-inf", f"({cutoff!r}", start=offset, num=self._page)):
            for i in ids:
                outcome = await self._expire_one(i, cutoff)
                offset += outcome == 0  # kept: stays in the index, ahead of the next page
                deleted += outcome == 1
        return deleted

    async def _expire_one(self, short_id: str, cutoff: float) -> int:
        """1 deleted, 0 kept (online or seen since), -1 no candidate any more (dropped from the index)."""
        keys = [self._vkey(short_id), self._vsessions(short_id), self._vhistory(short_id)]
        outcome = int(await self._expire_script(keys=keys, args=[repr(cutoff)]))
        if outcome != 0:
            await self._forget_visitor(short_id, gone=outcome == 1)
        return outcome

    async def _forget_visitor(self, short_id: str, *, gone: bool) -> None:
        """Drop ``short_id`` from the nosession index, and from every index when it was deleted."""
        async with self._redis.pipeline(transaction=False) as p:
            for name in ("nosession", "recent", "online", "visitors") if gone else ("nosession",):
                p.zrem(self._idx(name), short_id)
            await p.execute()

    # --- live-session codes --------------------------------------------------------------
    async def save_code(self, code: str, visitor: str, expires: float) -> bool:
        """Claim, point, release the previous code: three commands in two slots (the module's docstring)."""
        keys = (f"code:{code}", f"codeof:{visitor}")
        return await asyncio.shield(self._submit(keys, partial(self._claim, code, visitor, expires)))

    async def _claim(self, code: str, visitor: str, expires: float) -> bool:
        at = max(1, math.ceil(expires * 1000))
        if not await self._claim_script(keys=[self._ckey(code)], args=[visitor, at]):
            return False
        prev = await self._redis.set(self._vcode(visitor), code.encode(), pxat=at, get=True)
        if prev is not None and _str(prev) != code:
            await self._release_script(keys=[self._ckey(_str(prev))], args=[visitor])
        return True

    async def visitor_of_code(self, code: str) -> str | None:
        """The code key's visitor, if that visitor's pointer names this code back."""
        await self._settled(f"code:{code}")
        visitor = await self._redis.get(self._ckey(code))
        if visitor is None or await self._redis.get(self._vcode(_str(visitor))) != code.encode():
            return None
        return _str(visitor)

    async def code_of(self, visitor: str) -> str | None:
        """The visitor's pointer, if that code's key names this visitor back."""
        await self._settled(f"codeof:{visitor}")
        code = await self._redis.get(self._vcode(visitor))
        if code is None or await self._redis.get(self._ckey(_str(code))) != visitor.encode():
            return None
        return _str(code)

    async def drop_code(self, code: str) -> None:
        """Delete the code key, then its visitor's pointer if it still names this code."""
        await asyncio.shield(self._submit((f"code:{code}",), partial(self._drop, code)))

    async def _drop(self, code: str) -> None:
        visitor = await self._redis.getdel(self._ckey(code))
        if visitor is not None:
            await self._release_script(keys=[self._vcode(_str(visitor))], args=[code])

    # --- the cloud API: deleting visitors, usage, history --------------------------------
    async def delete_visitor(self, short_id: str) -> bool:
        """The deletion script in the visitor's slot, then the global keys (the module's docstring)."""
        await self._settled()  # pending writes of it (its sessions' included) land first
        keys = (f"v:{short_id}", f"codeof:{short_id}")
        return await asyncio.shield(self._submit(keys, partial(self._delete, short_id, False))) == 1

    async def _delete(self, short_id: str, only_offline: bool) -> int:
        """1 deleted, 0 no visitor hash (its other keys deleted all the same), -1 kept (online)."""
        keys = [self._vkey(short_id), self._vsessions(short_id), self._vhistory(short_id), self._vcode(short_id)]
        args = [self._skey(short_id, ""), "1" if only_offline else "0"]
        status, *rest = await self._delete_script(keys=keys, args=args)
        if int(status) == -1:
            return -1
        code, ids = rest[0], _ids(rest[1:])
        async with self._redis.pipeline(transaction=False) as p:
            for name in ("recent", "online", "nosession", "visitors"):
                p.zrem(self._idx(name), short_id)
            for at in range(0, len(ids), self._page):
                chunk = ids[at : at + self._page]
                for i in chunk:
                    p.delete(self._spointer(i))
                p.zrem(self._idx("open"), *chunk)
                p.zrem(self._idx("started"), *chunk)
                p.hdel(self._idx("length"), *chunk)
            await p.execute()
        if code := _str(code):
            await self._release_script(keys=[self._ckey(code)], args=[short_id])
        return int(status)

    async def delete_offline_visitors(self, batch: int) -> int:
        """Walk ``P:idx:visitors`` from the least recently seen, :data:`PAGE` a round trip.

        Each candidate is checked offline and deleted by one script in its
        slot; online ones stay in the index and are stepped over (the walk
        reads past them on every call).
        """
        if batch <= 0:
            return 0
        await self._settled()
        index, deleted, offset = self._idx("visitors"), 0, 0
        while deleted < batch and (ids := _ids(await self._redis.zrange(index, offset, offset + self._page - 1))):
            for i in ids:
                keys = (f"v:{i}", f"codeof:{i}")
                outcome = await asyncio.shield(self._submit(keys, partial(self._delete, i, True)))
                offset += outcome == -1  # kept: stays in the index, ahead of the next page
                deleted += outcome == 1
                if deleted >= batch:
                    break
        return deleted

    async def usage(self, now: float, day_start: float | None = None) -> Usage:
        """Counts over index score ranges in one round trip, then the seconds (:meth:`_seconds`)."""
        await self._settled()
        w = usage_windows(now, day_start)
        visitors, online, agents, started = (self._idx(n) for n in ("visitors", "online", "agents", "started"))
        async with self._redis.pipeline(transaction=False) as p:
            p.zcard(online)
            for since in (w["day"], w["month"]):  # seen since, or online (last seen before)
                p.zcount(visitors, since, "+inf")
                p.zcount(online, "-inf", f"({since!r}")
            for since in (w["today"], w["month"]):
                p.zcount(agents, since, "+inf")
            p.zcard(self._idx("open"))
            for since in (w["today"], w["month"]):
                p.zcount(started, since, "+inf")
            n = [int(x) for x in await p.execute()]
        today, month = await self._seconds(now, w["today"], w["month"])
        return Usage(
            visitors_online_now=n[0],
            visitors_last_24_hrs=n[1] + n[2],
            visitors_last_30_days=n[3] + n[4],
            agents_today=n[5],
            agents_last_30_days=n[6],
            session_counts_now=n[7],
            session_counts_today=n[8],
            session_counts_last_30_days=n[9],
            session_seconds_today=round(today),
            session_seconds_last_30_days=round(month),
        )

    async def _seconds(self, now: float, today: float, month: float) -> tuple[float, float]:
        """Seconds of the sessions started since ``today`` and since ``month``.

        Reads ``P:idx:started`` by rank from the first start in the month,
        ``usage_page`` sessions a round trip and their lengths (one HMGET);
        a session without a length is open: ``now - started``.
        """
        index = self._idx("started")
        rank = int(await self._redis.zcount(index, "-inf", f"({month!r}"))
        in_today = in_month = 0.0
        while rows := cast(
            list[tuple[bytes, float]],
            await self._redis.zrange(index, rank, rank + self._usage_page - 1, withscores=True),
        ):
            rank += len(rows)
            lengths = await self._redis.hmget(self._idx("length"), [m for m, _ in rows])
            for (_, start), length in zip(rows, lengths, strict=True):
                if start < month:
                    continue  # ranks moved under the walk
                seconds = max(0.0, now - start) if length is None else float(orjson.loads(length))
                in_month += seconds
                in_today += seconds if start >= today else 0.0
        return in_today, in_month

    async def add_pageview(self, short_id: str, url: str, title: str, at: float) -> bool:
        """One script in the visitor's slot: pushed only if its hash exists, trimmed to HISTORY_MAX."""
        url, title = clip_pageview(url, title)
        push = partial(self._push_pageview, short_id, _dump([url, title, at]))
        return await asyncio.shield(self._submit((f"v:{short_id}",), push))

    async def _push_pageview(self, short_id: str, item: bytes) -> bool:
        keys = [self._vkey(short_id), self._vhistory(short_id)]
        return bool(await self._pageview_script(keys=keys, args=[item, HISTORY_MAX]))

    async def history(self, short_id: str, limit: int) -> list[Pageview]:
        await self._settled(f"v:{short_id}")
        if limit <= 0:
            return []
        items = await self._redis.lrange(self._vhistory(short_id), 0, limit - 1)
        return [Pageview(url, title, float(at)) for url, title, at in map(orjson.loads, items)]

    # --- meetings --------------------------------------------------------------------------
    async def save_meeting(self, m: Meeting) -> None:
        """The meeting's hash, then its entry in ``P:idx:meetings`` (two commands, two slots)."""
        if m.status not in MEETING_STATUSES:
            raise ValueError(f"meeting status {m.status!r}: not one of {', '.join(MEETING_STATUSES)}")
        snapshot = Meeting(**orjson.loads(orjson.dumps(dataclasses.asdict(m))))
        await asyncio.shield(self._submit((f"m:{m.id}",), partial(self._put_meeting, snapshot)))

    async def _put_meeting(self, m: Meeting) -> None:
        async with self._redis.pipeline(transaction=False) as p:
            p.hset(self._mkey(m.id), mapping=_fields(m, _MEETING_FIELDS))
            p.zadd(self._idx("meetings"), {m.id: m.created_at})
            await p.execute()

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        await self._settled(f"m:{meeting_id}")
        raw = await self._redis.hgetall(self._mkey(meeting_id))
        return _meeting(raw) if raw else None

    async def list_meetings(self, filters: Sequence[MeetingFilter], page: int, per: int) -> tuple[list[Meeting], int]:
        """Unfiltered: ZCARD and the page's range of the index. Filtered: at most the ``meeting_scan`` most recent.

        The scan reads :data:`PAGE` index members a round trip and their
        three filtered fields (HMGET), then the page's hashes; the total
        counts the matches among the meetings scanned.
        """
        skip, per = meeting_page(page, per)
        await self._settled()
        index = self._idx("meetings")
        if not filters:
            total = int(await self._redis.zcard(index))
            ids = _ids(await self._redis.zrevrange(index, skip, skip + per - 1))
        else:
            total, ids = 0, []
            for start in range(0, self._meeting_scan, self._page):
                stop = min(start + self._page, self._meeting_scan) - 1
                scanned = _ids(await self._redis.zrevrange(index, start, stop))
                async with self._redis.pipeline(transaction=False) as p:
                    for i in scanned:
                        p.hmget(self._mkey(i), ["user", "status", "starts_at"])
                    fields = await p.execute()
                for i, (user, status, starts_at) in zip(scanned, fields, strict=True):
                    if user is None:
                        continue  # a stale entry: the hash is the truth
                    m = Meeting(i, orjson.loads(user), float(orjson.loads(starts_at)), "", orjson.loads(status))
                    if all(f.matches(m) for f in filters):
                        if skip <= total < skip + per:
                            ids.append(i)
                        total += 1
                if len(scanned) < stop - start + 1:
                    break
        return [_meeting(raw) for raw in await self._hgetall_many(map(self._mkey, ids)) if raw], total

    # --- API keys ----------------------------------------------------------------------------
    async def save_api_key(self, k: ApiKey) -> None:
        """The key's hash, then its entry in its kind's index (two commands, two slots)."""
        snapshot = dataclasses.replace(k)
        await asyncio.shield(self._submit((f"k:{k.id}",), partial(self._put_api_key, snapshot)))

    async def _put_api_key(self, k: ApiKey) -> None:
        async with self._redis.pipeline(transaction=False) as p:
            p.hset(self._kkey(k.id), mapping=_fields(k, _API_KEY_FIELDS))
            p.zadd(self._idx(f"apikeys:{k.kind}"), {k.id: k.created_at})
            await p.execute()

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        await self._settled(f"k:{key_id}")
        raw = await self._redis.hgetall(self._kkey(key_id))
        return _api_key(raw) if raw else None

    async def list_api_keys(self, kind: str) -> list[ApiKey]:
        """The kind's index newest first, :data:`PAGE` a round trip; each key's hash decides (its kind, its being)."""
        await self._settled()
        index, out, start = self._idx(f"apikeys:{kind}"), [], 0
        while ids := _ids(await self._redis.zrevrange(index, start, start + self._page - 1)):
            start += len(ids)
            keys = [_api_key(raw) for raw in await self._hgetall_many(map(self._kkey, ids)) if raw]
            out += [k for k in keys if k.kind == kind]
        return out

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """One script on the key's hash: revoked unless unknown or revoked already."""
        revoke = partial(self._revoke_script, keys=[self._kkey(key_id)], args=[_dump(at)])
        return bool(await asyncio.shield(self._submit((f"k:{key_id}",), revoke)))
