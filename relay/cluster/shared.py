"""Cluster mode: the nodes sharing one Redis. Registry and health, ownership, location, reaping.

Keys (``P`` is the prefix, ``cobrowse``; one visitor's keys share its hash tag)::

    P:node:NAME       string  the node's heartbeat (JSON: url, started, sessions, sockets...), PX 5 s
    P:nodes           zset    node names by their last heartbeat (for listing and reaping)
    P:nodevis:NAME    set     short ids of the visitors whose socket is on NAME
    P:{SHORT}:owner   string  "NODE EPOCH": who owns the visitor's session, PX OWNERSHIP_TTL
    P:{SHORT}:epoch   counter the fencing epoch, INCR on every claim
    P:{SHORT}:live    string  "1" from a claim until the session ends (no TTL): the visitor has a
                              session somewhere, owned or orphaned (a visitor without one is
                              placed in one round trip)
    P:{SHORT}:at      string  the node the visitor's socket is on (a hint, checked against liveness)
    P:reaper          string  which node reaps now (PX 10 s)
    P:bus:NAME        channel requests to NAME (relay/cluster/bus.py)

**Heartbeat.** Every second the node writes its key with a 5 s expiry.
:meth:`SharedCluster.healthy` is true only while the last write succeeded
less than :data:`STALE_BEAT` seconds ago and the bus is subscribed: a node
that cannot *write* (Redis down, a replica after failover answering
READONLY) says 503, and the balancer takes it out.

**Ownership.** :meth:`claim` is a compare-and-set in one slot: it succeeds
when the owner key is absent or still holds the epoch the claimer saw, and
takes a new epoch from ``INCR`` (never below ``floor``: after Redis lost its
data the counter starts again, the node's own last epoch is the floor). The
owner refreshes its claims every ``OWNERSHIP_TTL / 3`` (:meth:`refresh`, one
pipeline for all); the service fences on the deadline it computes from the
last good refresh (``Room.lease_until``).

**Reaping.** One node at a time (the ``P:reaper`` lock) looks every few
seconds for nodes whose heartbeat is gone and marks their visitors offline
(those still ``at`` that node), and for open sessions that no node owns: one
unowned for longer than ``RESUME_WINDOW + OWNERSHIP_TTL`` (its node died and
neither its visitor nor a viewer came back) is closed with ``node_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..core.limits import AddressLimits
from ..settings import Settings
from ..storage.base import Store
from .bus import Bus, Handler, Reply
from .redisconn import connect, parse_redis_url, pubsub_client

__all__ = ["NODE_LOST", "NodeInfo", "Owner", "SharedCluster", "STALE_BEAT"]

log = logging.getLogger("relay.cluster")

BEAT = 1.0  # seconds between heartbeats
BEAT_TTL_MS = 5000  # a heartbeat's life
STALE_BEAT = 2.5  # seconds since the last good heartbeat before /health says 503
REAP_EVERY = 10.0  # seconds between reaping passes at most (half RESUME_WINDOW when that is shorter)
MAX_SHARED_ADDRESSES = 2000  # addresses a node publishes at most (the heaviest)
NODE_LOST = "node_lost"
"""``end_reason`` of a session whose node died and to which nobody came back."""

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local e = tonumber(string.match(cur, ' (%d+)$'))
  if e ~= tonumber(ARGV[2]) then return 0 end
end
local e = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if e <= floor then
  e = floor + 1
  redis.call('SET', KEYS[2], e)
end
if e > 4294967295 then
  e = 1
  redis.call('SET', KEYS[2], e)
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. e, 'PX', ARGV[4])
redis.call('SET', KEYS[3], '1')
return e
"""
_REFRESH = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then return 0 end
return -1
"""
_DEL_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Owner:
    node: str
    epoch: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    url: str
    started: float
    sessions: int
    sockets: int
    visitors: int
    seen: float  # wall time of its last heartbeat


def _text(raw: object) -> str:
    """A reply item as text (redis-py answers bytes; typed more widely)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _owner(raw: object) -> Owner | None:
    if not raw:
        return None
    node, _, epoch = _text(raw).rpartition(" ")
    return Owner(node, int(epoch)) if node and epoch.isdigit() else None


class SharedCluster:
    """This node's view of the cluster. Built by the app; ``start`` after the store opened."""

    shared = True

    def __init__(
        self,
        settings: Settings,
        store: Store,
        counts: Callable[[], dict[str, int]],
        addresses: AddressLimits | None = None,
        prefix: str = "cobrowse",
    ) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.name = settings.node_name
        self.url = settings.node_url
        self.ttl_ms = int(settings.ownership_ttl * 1000)
        self._store = store
        self._counts = counts
        self._addresses = addresses
        self._p = prefix
        self._target = parse_redis_url(settings.redis_url)
        options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}
        self._r: aioredis.Redis | aioredis.RedisCluster = connect(self._target, **options)
        self._pubsub_options = options
        self.bus: Bus | None = None
        self.started = time.time()
        self.instance = secrets.token_hex(6)
        self.last_beat = -1e9  # monotonic time of the last good heartbeat
        self.redis_latency = 0.0  # seconds, the last heartbeat's round trip
        self.takeovers = 0  # sessions this node took over from another node (or its own past)
        self.redirects = 0  # sockets sent to the owner (4003)
        self._tasks: list[asyncio.Task[None]] = []
        self._chains: dict[str, asyncio.Task[None]] = {}  # per visitor: location writes in order
        self._writers = asyncio.Semaphore(64)  # location writes in flight at once
        self._orphans: dict[str, float] = {}  # session id -> monotonic time first seen unowned
        self.reaped_sessions = 0
        self.reap_every = min(REAP_EVERY, max(1.0, settings.resume_window / 2))

    # --- keys ---------------------------------------------------------------------------
    def _k(self, visitor: str, what: str) -> str:
        return f"{self._p}:{{{visitor}}}:{what}"

    def _node_key(self, name: str) -> str:
        return f"{self._p}:node:{name}"

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        """Reap this node's past, beat, listen, reap others (``preflight`` refused a duplicate name)."""
        with contextlib.suppress(RedisError, OSError):
            await self._reap_node(self.name)  # what a previous run of this node left online
        await self._beat()
        self.bus = Bus(pubsub_client(self._target, **self._pubsub_options), self._p, self.name, handler)
        await self.bus.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_loop()), loop.create_task(self._reap_loop())]
        if self._addresses is not None:
            self._tasks.append(loop.create_task(self._limits_loop(self._addresses)))

    async def stop(self) -> None:
        """Stop beating and listening; drop this node's heartbeat so peers see it gone now."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._chains:
            await asyncio.wait(list(self._chains.values()), timeout=2.0)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._r.eval(_DEL_IF, 1, self._node_key(self.name), self._beat_value())
        if self.bus is not None:
            await self.bus.stop()
        with contextlib.suppress(RedisError, OSError):
            await self._r.aclose()

    # --- health and registry ------------------------------------------------------------
    def healthy(self) -> bool:
        return time.monotonic() - self.last_beat < STALE_BEAT and self.bus is not None and self.bus.listening

    def _beat_value(self) -> bytes:
        counts = self._counts()
        return orjson.dumps(
            {
                "name": self.name,
                "url": self.url,
                "started": self.started,
                "instance": self.instance,
                "pid": os.getpid(),
                "t": time.time(),
                **counts,
            }
        )

    async def _beat(self) -> None:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(BEAT):
                await self._r.set(self._node_key(self.name), self._beat_value(), px=BEAT_TTL_MS)
                await self._r.zadd(f"{self._p}:nodes", {self.name: time.time()})
        except (RedisError, OSError, TimeoutError) as e:
            if time.monotonic() - self.last_beat < STALE_BEAT + BEAT:
                log.warning("cluster: heartbeat failed: %s", e or type(e).__name__)
            return
        self.last_beat = time.monotonic()
        self.redis_latency = self.last_beat - t0

    async def _beat_loop(self) -> None:
        while True:
            t0 = time.monotonic()
            await self._beat()
            await asyncio.sleep(max(0.05, BEAT - (time.monotonic() - t0)))

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (heartbeat present), by name."""
        names = sorted(_text(m) for m in await self._r.zrange(f"{self._p}:nodes", 0, -1))
        out: list[NodeInfo] = []
        for name in names:
            raw = await self._r.get(self._node_key(name))
            if raw is None:
                continue
            try:
                d = orjson.loads(raw)
                out.append(
                    NodeInfo(
                        name=name,
                        url=str(d.get("url", "")),
                        started=float(d.get("started", 0.0)),
                        sessions=int(d.get("sessions", 0)),
                        sockets=int(d.get("sockets", 0)),
                        visitors=int(d.get("visitors", 0)),
                        seen=float(d.get("t", 0.0)),
                    )
                )
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                continue
        return out

    async def url_of(self, node: str) -> str:
        """``node``'s NODE_URL ("" when unset or unknown)."""
        if node == self.name:
            return self.url
        try:
            raw = await self._r.get(self._node_key(node))
            d = orjson.loads(raw) if raw else {}
            return str(d.get("url", "")) if isinstance(d, dict) else ""
        except (RedisError, OSError, orjson.JSONDecodeError):
            return ""

    async def alive(self, node: str) -> bool:
        return self.bus is not None and await self.bus.alive(node)

    async def ask(self, node: str, op: str, args: dict[str, Any], timeout: float = 1.0) -> Reply:
        if self.bus is None:
            return Reply(False, None)
        return await self.bus.ask(node, op, args, timeout)

    # --- ownership ----------------------------------------------------------------------
    async def owner_of(self, visitor: str) -> Owner | None:
        return _owner(await self._r.get(self._k(visitor, "owner")))

    async def claim(self, visitor: str, expect: int, floor: int = 0) -> int | None:
        """Own ``visitor``'s session if its owner key is absent or still at epoch ``expect``:
        the new fencing epoch (above ``floor``), or None when another claim came first."""
        keys = (self._k(visitor, "owner"), self._k(visitor, "epoch"), self._k(visitor, "live"))
        got = await self._r.eval(_CLAIM, 3, *keys, self.name, expect, floor, self.ttl_ms)
        epoch = int(got)
        if epoch == 0:
            return None
        return epoch

    async def refresh(self, leases: Sequence[tuple[str, int]]) -> list[int]:
        """Extend this node's claims, one pipeline: per lease 1 (kept), 0 (the key is gone) or
        -1 (another node owns it now)."""
        if not leases:
            return []
        async with self._r.pipeline(transaction=False) as p:
            for visitor, epoch in leases:
                p.eval(_REFRESH, 1, self._k(visitor, "owner"), f"{self.name} {epoch}", self.ttl_ms)
            return [int(x) for x in await p.execute()]

    async def release(self, visitor: str, epoch: int, ended: bool) -> None:
        """Give up this node's claim (a newer claim stays): the session ``ended`` (or never
        started), or it goes on elsewhere (the node drains)."""
        with contextlib.suppress(RedisError, OSError):
            released = await self._r.eval(_DEL_IF, 1, self._k(visitor, "owner"), f"{self.name} {epoch}")
            if ended and released:
                await self._r.delete(self._k(visitor, "live"))

    async def state_of(self, visitor: str) -> tuple[Owner | None, bool]:
        """The visitor's owner (None: no live claim) and whether it has a session somewhere."""
        async with self._r.pipeline(transaction=False) as p:
            p.get(self._k(visitor, "owner"))
            p.get(self._k(visitor, "live"))
            owner, live = await p.execute()
        return _owner(owner), live is not None

    async def ended(self, visitors: Iterable[str]) -> None:
        """Sessions closed without an owner (reaped, or stopped while orphaned)."""
        async with self._r.pipeline(transaction=False) as p:
            for v in visitors:
                p.delete(self._k(v, "live"))
            await p.execute()

    # --- where visitors are ---------------------------------------------------------------
    async def located(self, visitor: str) -> str | None:
        raw = await self._r.get(self._k(visitor, "at"))
        return _text(raw) if raw else None

    def arrived(self, visitor: str) -> None:
        """The visitor's socket is on this node now (written in the background, in order)."""
        self._chain(visitor, self._arrive(visitor))

    async def arrive(self, visitor: str) -> tuple[Owner | None, bool]:
        """The visitor's socket is on this node now, written before it is admitted (a viewer
        arriving next, anywhere, finds it), in order with its earlier departures; in the same
        round trip, :meth:`state_of`. Raises what Redis raises."""
        task = self._chain(visitor, self._arrive(visitor), quiet=False)
        state: tuple[Owner | None, bool] | None = await asyncio.shield(task)
        assert state is not None
        return state

    def departed(self, visitor: str) -> None:
        self._chain(visitor, self._depart(visitor))

    async def _arrive(self, visitor: str) -> tuple[Owner | None, bool]:
        async with self._r.pipeline(transaction=False) as p:
            p.set(self._k(visitor, "at"), self.name.encode())
            p.sadd(f"{self._p}:nodevis:{self.name}", visitor)
            p.get(self._k(visitor, "owner"))  # GETs, not MGET: a cluster pipeline refuses MGET
            p.get(self._k(visitor, "live"))
            *_, owner, live = await p.execute()
        return _owner(owner), live is not None

    async def _depart(self, visitor: str) -> None:
        await self._r.eval(_DEL_IF, 1, self._k(visitor, "at"), self.name)
        await self._r.srem(f"{self._p}:nodevis:{self.name}", visitor)

    def _chain(self, visitor: str, write: Coroutine[Any, Any, Any], quiet: bool = True) -> asyncio.Task[Any]:
        """Run ``write`` after the visitor's pending location write; ``quiet``: its Redis errors
        are logged, not raised (a background write)."""
        prev = self._chains.get(visitor)

        async def run() -> Any:
            if prev is not None:
                await asyncio.wait([prev])
            try:
                async with self._writers:
                    return await write
            except (RedisError, OSError) as e:
                if not quiet:
                    raise
                log.warning("cluster: location of %s not written: %s", visitor, e)
                return None

        task = asyncio.get_running_loop().create_task(run())
        self._chains[visitor] = task
        task.add_done_callback(lambda t: self._chains.pop(visitor, None) if self._chains.get(visitor) is t else None)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: never "never retrieved"
        return task

    # --- per-address limits across nodes ---------------------------------------------------
    async def _limits_loop(self, addresses: AddressLimits) -> None:
        """Every second: publish what this node holds of the heavy addresses (P:limits:NAME,
        PX 5 s) and read the other live nodes', so MAX_SOCKETS_PER_IP, NEW_VISITORS_PER_IP and
        cool-downs hold across the cluster within about a second (an address under a tenth of a
        limit on a node is not published: the slack is that much per node)."""
        while True:
            await asyncio.sleep(BEAT)
            try:
                async with asyncio.timeout(BEAT):
                    await self.share_limits(addresses)
            except (RedisError, OSError, TimeoutError) as e:
                log.debug("cluster: limits not exchanged: %s", e)

    async def share_limits(self, addresses: AddressLimits) -> None:
        mine = addresses.export(time.monotonic())
        if len(mine) > MAX_SHARED_ADDRESSES:
            heaviest = sorted(mine.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True)
            mine = dict(heaviest[:MAX_SHARED_ADDRESSES])
        await self._r.set(f"{self._p}:limits:{self.name}", orjson.dumps(mine), px=BEAT_TTL_MS)
        names = [_text(m) for m in await self._r.zrange(f"{self._p}:nodes", 0, -1)]
        others = [n for n in names if n != self.name]
        if not others:
            addresses.absorb([], time.monotonic())
            return
        async with self._r.pipeline(transaction=False) as p:
            for n in others:
                p.get(f"{self._p}:limits:{n}")
            raws = await p.execute()
        tables: list[dict[str, list[float]]] = []
        for raw in raws:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                table = orjson.loads(raw) if raw else None
                if isinstance(table, dict):
                    tables.append(table)
        addresses.absorb(tables, time.monotonic())

    # --- reaping ------------------------------------------------------------------------
    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every)
            try:
                key, hold = f"{self._p}:reaper", int(self.reap_every * 3000)
                if await self._r.set(key, self.name.encode(), nx=True, px=hold) or (
                    await self._r.get(key) == self.name.encode()
                ):
                    await self._r.pexpire(key, hold)
                    await self.reap()
            except (RedisError, OSError, TimeoutError) as e:
                log.debug("cluster: reaping skipped: %s", e)
            except Exception:
                log.exception("cluster: reaping failed")

    async def reap(self) -> None:
        """Dead nodes' visitors offline; open sessions nobody owned for too long closed."""
        for name in (_text(m) for m in await self._r.zrange(f"{self._p}:nodes", 0, -1)):
            if name != self.name and not await self._r.exists(self._node_key(name)):
                await self._reap_node(name)
        now = time.monotonic()
        grace = self.settings.resume_window + self.settings.ownership_ttl
        open_ = await self._store.open_sessions()
        owners = await self._owners(s.visitor for s in open_)
        seen: set[str] = set()
        expired: list[str] = []
        for rec, owner in zip(open_, owners, strict=True):
            if owner is not None:
                continue
            seen.add(rec.id)
            since = self._orphans.setdefault(rec.id, now)
            if now - since > grace:
                expired.append(rec.id)
        self._orphans = {k: v for k, v in self._orphans.items() if k in seen and k not in expired}
        if expired:
            closed = await self._store.close_sessions(expired, time.time(), NODE_LOST)
            await self.ended(rec.visitor for rec in open_ if rec.id in expired)
            self.reaped_sessions += closed
            log.info("cluster: closed %d sessions whose node was lost and to which nobody came back", closed)

    async def _owners(self, visitors: Iterable[str]) -> list[Owner | None]:
        keys = [self._k(v, "owner") for v in visitors]
        if not keys:
            return []
        async with self._r.pipeline(transaction=False) as p:
            for k in keys:
                p.get(k)
            return [_owner(raw) for raw in await p.execute()]

    async def _reap_node(self, name: str) -> None:
        """Mark offline the visitors still ``at`` the dead node ``name``; forget the node."""
        members = f"{self._p}:nodevis:{name}"
        while batch := [_text(m) for m in await self._r.spop(members, 200) or []]:
            async with self._r.pipeline(transaction=False) as p:
                for visitor in batch:
                    p.get(self._k(visitor, "at"))
                where = await p.execute()
            for visitor, at in zip(batch, where, strict=True):
                if at is not None and _text(at) != name:
                    continue  # it is on another node now
                await self._r.eval(_DEL_IF, 1, self._k(visitor, "at"), name)
                v = await self._store.get_visitor(visitor)
                if v is not None and v.online:
                    v.online, v.in_session, v.last_seen = False, False, time.time()
                    await self._store.save_visitor(v)
        if name != self.name:
            await self._r.zrem(f"{self._p}:nodes", name)
