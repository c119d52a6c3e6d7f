"""The service: the one API every surface calls (websockets and REST).

It admits peers (checking grants against the store), turns the hub's
session events into stored history, answers session-class messages, and
builds watch URLs. Rules live here and in the hub; transports and HTTP
routes only translate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisClusterException, RedisError

from protocol import (
    KIND_INFO,
    PROTOCOL_VERSION,
    Bye,
    CloseCode,
    Error,
    Hello,
    Message,
    Pageview,
    PermissionsUpdate,
    Ping,
    Pong,
    Presence,
    ProtocolError,
    ResyncRequest,
    Routing,
    SessionAccept,
    SessionDecline,
    SessionEnd,
    Welcome,
    encode,
)

from ..logs import event
from ..settings import Settings
from ..storage.base import HISTORY_MAX, SearchQuery, SessionRecord, Store, Visitor
from .errors import Moved, NotFound, RateLimited, SessionEnded, TokenInvalid, TokenReused, Unavailable
from .grants import Grant, ResumeClaim, Signer
from .hub import FOREVER, Hub, HubConfig, Link, Peer, Room, SessionState, ViewerSlot
from .limits import AddressLimits, RateConfig, SocketRates
from .restore import record_of, take_over

if TYPE_CHECKING:
    from ..cluster.shared import SharedCluster

__all__ = ["Service", "ClientInfo", "WatchRequest", "new_short_id"]

log = logging.getLogger("relay.service")
WRITERS = 64  # background store writes in flight at once
ASK_TIMEOUT = 1.0  # seconds a node waits for the owner's answer before deciding without it
LEASE_MARGIN = 0.9  # a claim is served until this share of OWNERSHIP_TTL after its last refresh
PAGEVIEW_SKEW = 86400.0  # a PAGEVIEW's own time is kept within this many seconds of the relay's clock
_SHORT_ID = re.compile(r"^[A-Za-z0-9_-]{4,40}$")
_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


# Per kind byte: 1 for session-class kinds (decoded by the relay), counted in their own bucket.
_SESSION_CLASS = bytes(1 if info is not None and info.routing is Routing.SESSION else 0 for info in KIND_INFO)


def new_short_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str = ""
    user_agent: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class WatchRequest:
    visitor: str
    agent_id: str
    agent_name: str
    permissions: tuple[str, ...]
    branding: dict[str, Any]
    observer_id: str = ""
    observer_name: str = ""
    metadata: dict[str, Any] | None = None


def browser_name(user_agent: str) -> str:
    ua = user_agent
    for token, name in (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome")):
        if token in ua:
            version = ua.split(token, 1)[1].split(".", 1)[0]
            return f"{name} {version}"
    if "Safari/" in ua:
        return "Safari"
    return ""


def device_type(user_agent: str) -> str:
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua:
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"


class Service:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.signer = Signer(settings.secret_key)
        self.hub = Hub(
            HubConfig(
                limits=settings.limits,
                max_ordered=settings.queue_max_bytes,
                slow_timeout=settings.slow_timeout,
                resume_window=settings.resume_window,
                log_max_bytes=settings.log_max_bytes,
            ),
            listener=self,
        )
        self.visitors: dict[str, Visitor] = {}  # online visitors, by short id
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers = asyncio.Semaphore(WRITERS)
        self.draining = False
        # fenced: frames dropped because this node's claim on the room lapsed (cluster mode)
        self.counters = {"protocol_errors": 0, "rate_limited": 0, "resyncs_refused": 0, "fenced": 0}
        self.rates = RateConfig(
            control=settings.rate_control,
            content=settings.rate_content,
            bytes=settings.rate_bytes,
            burst=settings.rate_burst,
            min_bytes_burst=2.0 * settings.max_keyframe,
        )
        self.addresses = AddressLimits(settings.max_sockets_per_ip, settings.new_visitors_per_ip)
        self.cluster: SharedCluster | None = None  # cluster mode: set by the app once started
        self._placing: dict[str, asyncio.Lock] = {}  # per visitor: one placement at a time
        self._pageviews: dict[str, deque[tuple[str, str, float]]] = {}  # per visitor: pageviews not yet stored

    # --- background writes ------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._bounded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _bounded(self, coro: Coroutine[Any, Any, None]) -> None:
        """At most WRITERS background writes run at once (a burst of closes queues here, not in
        the store's connection pool)."""
        async with self._writers:
            await coro

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("store write failed: %r", task.exception())

    async def flush(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- admission ------------------------------------------------------------------
    async def admit(self, role: str, hello: Hello, link: Link, client: ClientInfo) -> Peer:
        if hello.role != role:
            raise ProtocolError("bad_value", f"role {hello.role!r} on the {role} endpoint")
        if role == "visitor":
            return await self.admit_visitor(hello, link, client)
        if role == "viewer":
            return await self.admit_viewer(hello, link, client)
        raise NotFound("devices are not enrolled on this node")

    async def admit_visitor(self, hello: Hello, link: Link, client: ClientInfo) -> Peer:
        short_id = hello.client_id if _SHORT_ID.match(hello.client_id) else new_short_id()
        placed = self.cluster is not None and await self._place(short_id, self._place_visitor)
        now = time.time()
        visitor = self.visitors.get(short_id) or await self.store.get_visitor(short_id)
        if visitor is None:
            if not self.addresses.new_visitor(client.ip, time.monotonic()):
                event("limit_hit", limit="NEW_VISITORS_PER_IP", ip=client.ip)
                raise RateLimited("too many new visitors from this address; retry later")
            visitor = Visitor(short_id=short_id, first_seen=now)
        visitor.ip = client.ip
        visitor.browser = browser_name(client.user_agent) or visitor.browser
        visitor.device_type = device_type(client.user_agent) if client.user_agent else visitor.device_type
        visitor.last_seen = now
        visitor.online = True
        room = self.hub.room(short_id)
        visitor.in_session = room.state is not None
        self.visitors[short_id] = visitor
        peer = self.hub.new_peer("visitor", short_id, link, room)
        peer.rates = SocketRates(self.rates, time.monotonic())
        peer.address = client.ip
        peer.send(
            Welcome(
                version=PROTOCOL_VERSION,
                session=room.session_id if room.state is SessionState.LIVE else "",
                client_id=short_id,
                epoch=room.epoch,
                node=self.settings.node_name,
                heartbeat=int(self.settings.ping_interval),
            )
        )
        room.attach_visitor(peer)
        self._spawn(self.store.save_visitor(visitor))
        if self.cluster is not None and not placed:
            self.cluster.arrived(short_id)  # placing wrote it already
        return peer

    async def admit_viewer(self, hello: Hello, link: Link, client: ClientInfo) -> Peer:
        slot, room, resumable = await self._viewer_slot(hello.token)
        peer = self.hub.new_peer("viewer", slot.viewer_id, link, room)
        peer.rates = SocketRates(self.rates, time.monotonic())
        peer.address = client.ip
        room.admit_viewer(
            slot,
            peer,
            lambda p: p.outbox.link.write(self.welcome_viewer(p, slot)),
            hello.resume_epoch if resumable else 0,
            hello.resume_seq if resumable else 0,
        )
        event(
            "viewer_joined",
            session=room.session_id,
            visitor=room.visitor_id,
            viewer=slot.viewer_id,
            agent=slot.agent_id,
            resumed=resumable,
        )
        return peer

    async def _viewer_slot(self, token: str) -> tuple[ViewerSlot, Room, bool]:
        """The slot a token seats, its room, and whether the viewer may resume from its seq.

        A resume token is good for its session only, and not for a viewer that
        left it. Within the resume window the viewer gets its slot back and the
        frames it missed; past it (its slot expired while other viewers kept the
        session alive) it is seated again from a fresh keyframe."""
        try:
            grant = self.signer.read_grant(token)
        except TokenInvalid:
            claim = self.signer.read_resume(token)
            if self.cluster is not None:
                await self._place(claim.visitor, lambda v: self._place_viewer(v, claim.session))
            room = self.hub.rooms.get(claim.visitor)
            if room is None or room.session_id != claim.session or room.state is None:
                raise SessionEnded("the session has ended") from None
            if claim.viewer in room.left:
                raise SessionEnded("this viewer left the session") from None
            slot = room.slots.get(claim.viewer)
            if slot is not None:
                return slot, room, True
            return (
                ViewerSlot(claim.viewer, claim.agent_id, claim.agent_name, frozenset(claim.permissions)),
                room,
                False,
            )
        if self.cluster is not None:
            await self._place(grant.visitor, lambda v: self._place_viewer(v, None))
        if not await self.store.use_nonce(grant.nonce, grant.expires):
            self._unown_if_idle(self.hub.rooms.get(grant.visitor))
            raise TokenReused("this watch URL was already used")
        room = self.hub.room(grant.visitor)
        if room.state is None:
            room.metadata = dict(grant.metadata)
            room.observer = {"id": grant.observer_id, "name": grant.observer_name} if grant.observer_id else {}
        slot = ViewerSlot(secrets.token_hex(6), grant.agent_id, grant.agent_name, frozenset(grant.permissions))
        return slot, room, False

    def welcome_viewer(self, peer: Peer, slot: ViewerSlot) -> bytes:
        """WELCOME for a seated viewer, with a resume token for this session."""
        room = peer.room
        resume = self.signer.resume(
            ResumeClaim(
                visitor=room.visitor_id,
                session=room.session_id,
                viewer=slot.viewer_id,
                agent_id=slot.agent_id,
                agent_name=slot.agent_name,
                permissions=tuple(sorted(slot.permissions)),
                expires=time.time() + 12 * 3600,
            )
        )
        frame = encode(
            Welcome(
                version=PROTOCOL_VERSION,
                session=room.session_id,
                client_id=room.visitor_id,
                epoch=room.epoch,
                node=self.settings.node_name,
                heartbeat=int(self.settings.ping_interval),
                resume=resume,
                permissions=tuple(sorted(peer.permissions)),
            )
        )
        self.hub.out_session += 1
        self.hub.out_session_bytes += len(frame)
        return frame

    # --- frames ---------------------------------------------------------------------
    def on_frame(self, peer: Peer, data: bytes) -> None:
        """Everything a peer sends after the handshake. Never raises."""
        room = peer.room
        rates = peer.rates
        now = time.monotonic()
        if now > room.lease_until:  # cluster mode: this node's claim lapsed; serve nothing (fencing)
            self.counters["fenced"] += 1
            room.fenced = True
            return
        if rates is not None:
            over = rates.admit(len(data) > 1 and _SESSION_CLASS[data[1]] == 1, len(data), now)
            if over is not None:
                self.counters["rate_limited"] += 1
                wait = self.addresses.strike(peer.address, now) if peer.address else 0.0
                event("limit_hit", limit=over, role=peer.role, peer=peer.id, session=room.session_id, cooldown=wait)
                peer.outbox.clear()
                peer.outbox.link.fail(CloseCode.RATE_LIMITED, f"rate limit: {over}")
                return
        try:
            if peer.role == "visitor":
                room.from_visitor(peer, data)
            else:
                room.from_viewer(peer, data)
        except ProtocolError as e:
            self.counters["protocol_errors"] += 1
            code = CloseCode.FORBIDDEN if e.code == "bad_value" and "is not sent by" in e.detail else e.close_code
            peer.close(code, e.code)
        except Exception:  # a bug must cost one socket, never the relay
            log.exception("frame handling failed for %s %s", peer.role, peer.id)
            peer.close(CloseCode.INTERNAL_ERROR, "internal error")

    def on_disconnect(self, peer: Peer) -> None:
        room = peer.room
        if peer.role == "visitor":
            room.detach_visitor(peer)
            if room.visitor is None:
                visitor = self.visitors.pop(peer.id, None)
                if visitor is not None:
                    visitor.online = False
                    visitor.last_seen = time.time()
                    self._spawn(self.store.save_visitor(visitor))
                if self.cluster is not None:
                    self.cluster.departed(peer.id)
        else:
            room.detach_viewer(peer, leaving=False)

    # --- hub listener ---------------------------------------------------------------
    def message(self, room: Room, peer: Peer, msg: Message) -> None:
        match msg:
            case Presence():
                self._presence(room, peer, msg)
            case Pageview() if peer.role == "visitor":
                self._pageview(peer, msg)
            case SessionAccept() if peer.role == "visitor":
                room.go_live()
            case SessionDecline() if peer.role == "visitor":
                room.end_session(msg.reason or "declined", CloseCode.DECLINED)
            case SessionEnd() if peer.role == "visitor":
                room.end_session("visitor_ended")
            case SessionEnd():
                room.detach_viewer(peer, leaving=True)
                peer.close(CloseCode.NORMAL, "left")
            case ResyncRequest() if peer.role == "viewer":
                if peer.outbox.replay_next or (peer.rates is not None and not peer.rates.resync(time.monotonic())):
                    self.counters["resyncs_refused"] += 1  # one replay at a time, a few per second
                else:
                    self.hub.resyncs_requested += 1
                    room.replay(peer)
            case PermissionsUpdate() if peer.role == "visitor":
                room.set_visitor_allow(msg.permissions)
            case Ping():
                peer.send(Pong(t=msg.t))
            case Pong() | Error():
                pass
            case Bye():
                peer.close(CloseCode.NORMAL, "bye")
            case _:
                raise ProtocolError("bad_value", f"{type(msg).__name__} is not sent by {peer.role}s")

    def _presence(self, room: Room, peer: Peer, p: Presence) -> None:
        visitor = self.visitors.get(peer.id)
        if visitor is None:
            return
        visitor.last_url = p.url or visitor.last_url
        visitor.unique_id = p.unique_id
        visitor.identities = list(p.identities)
        visitor.tags = list(p.tags)
        visitor.lookup_code = p.lookup_code
        visitor.browser = p.browser or visitor.browser
        visitor.device_type = p.device_type or visitor.device_type
        visitor.last_seen = time.time()
        room.set_visitor_allow(p.allow)
        self._spawn(self.store.save_visitor(visitor))

    def _pageview(self, peer: Peer, p: Pageview) -> None:
        """The visitor's own socket only (the catalog admits no other sender). Stored in the
        background, one visitor's pageviews one after another in the order they came; what is
        kept is bounded by the store (HISTORY_MAX per visitor, URL and title clipped)."""
        visitor = self.visitors.get(peer.id)
        if visitor is None:
            return
        now = time.time()
        at = p.at / 1000
        if not now - PAGEVIEW_SKEW <= at <= now + PAGEVIEW_SKEW:
            at = now  # 0, or a clock too far off: the time the relay received it
        queue = self._pageviews.get(visitor.short_id)
        if queue is None:
            self._pageviews[visitor.short_id] = queue = deque(maxlen=HISTORY_MAX)
            self._spawn(self._save_pageviews(visitor, queue))
        queue.append((p.url, p.title, at))

    async def _save_pageviews(self, visitor: Visitor, queue: deque[tuple[str, str, float]]) -> None:
        try:
            while queue:
                url, title, at = queue.popleft()
                if not await self.store.add_pageview(visitor.short_id, url, title, at):
                    # A new visitor's first save may still be in flight: save it, then once more.
                    await self.store.save_visitor(visitor)
                    await self.store.add_pageview(visitor.short_id, url, title, at)
        finally:
            if self._pageviews.get(visitor.short_id) is queue:
                del self._pageviews[visitor.short_id]

    def consent_asked(self, room: Room) -> None:
        event("consent_asked", session=room.session_id, visitor=room.visitor_id)

    def keyframe_asked(self, room: Room, reason: str) -> None:
        event("keyframe_asked", session=room.session_id, visitor=room.visitor_id, reason=reason)

    def session_changed(self, room: Room) -> None:
        if room.state is SessionState.LIVE and not room.went_live:
            event("session_live", session=room.session_id, visitor=room.visitor_id)
        if room.state is SessionState.LIVE:
            room.went_live = True
        self._set_in_session(room.visitor_id, True)
        self._spawn(self.store.save_session(record_of(room)))

    def session_ended(self, room: Room, reason: str) -> None:
        event("session_ended", session=room.session_id, visitor=room.visitor_id, reason=reason)
        self._set_in_session(room.visitor_id, False)
        self._spawn(self.store.save_session(record_of(room, ended=time.time(), end_reason=reason)))
        room.went_live = False
        self._unown(room)

    def _set_in_session(self, short_id: str, value: bool) -> None:
        visitor = self.visitors.get(short_id)
        if visitor is not None and visitor.in_session != value:
            visitor.in_session = value
            self._spawn(self.store.save_visitor(visitor))

    # --- REST-facing ------------------------------------------------------------------
    async def get_visitor(self, short_id: str) -> Visitor:
        visitor = self.visitors.get(short_id) or await self.store.get_visitor(short_id)
        if visitor is None:
            raise NotFound("visitor not found")
        return visitor

    async def latest_visitors(self, limit: int = 50) -> list[Visitor]:
        return await self.store.latest_visitors(limit)

    async def search_visitors(self, q: SearchQuery, limit: int = 50) -> list[Visitor]:
        return await self.store.search_visitors(q, limit)

    async def sessions_for(self, short_id: str, limit: int = 20) -> list[SessionRecord]:
        return await self.store.sessions_for(short_id, limit)

    async def watch_url(self, req: WatchRequest) -> str:
        await self.get_visitor(req.visitor)
        grant = Grant(
            visitor=req.visitor,
            agent_id=req.agent_id,
            agent_name=req.agent_name,
            permissions=req.permissions,
            expires=time.time() + self.settings.grant_ttl,
            observer_id=req.observer_id,
            observer_name=req.observer_name,
            branding=req.branding,
            metadata=req.metadata or {},
        )
        token = self.signer.grant(grant)
        event("watch_url_issued", visitor=req.visitor, agent=req.agent_id)
        return f"{self.settings.base_url}/screen?id={req.visitor}&token={token}"

    # --- cluster mode (relay/cluster) ----------------------------------------------------
    # Rules: a room's session is owned by one node (a claim in Redis with a fencing epoch);
    # participants meet on the owner (others are sent there: Moved, close 4003); ownership
    # follows the visitor (the node its socket reaches takes over, unless the owner still holds
    # a live socket of it: then the newcomer is a second tab and is sent to the owner).

    async def _place(self, visitor: str, how: Callable[[str], Coroutine[Any, Any, None]]) -> bool:
        """Run one placement for ``visitor`` at a time on this node (``how`` may raise Moved);
        False when this node owns the room already (nothing to place)."""
        lock = self._placing.get(visitor)
        if lock is None:
            lock = self._placing[visitor] = asyncio.Lock()
        try:
            async with lock:
                room = self.hub.rooms.get(visitor)
                if room is not None and room.owned:
                    return False
                try:
                    await how(visitor)
                except (RedisError, RedisClusterException, OSError) as e:
                    raise Unavailable(f"the cluster's Redis did not answer ({type(e).__name__}); retry") from None
                return True
        finally:
            if not lock.locked() and self._placing.get(visitor) is lock:
                del self._placing[visitor]

    async def _open_session_of(self, visitor: str) -> SessionRecord | None:
        recent = await self.store.sessions_for(visitor, 1)
        return recent[0] if recent and recent[0].ended is None else None

    async def _place_visitor(self, visitor: str) -> None:
        """A visitor socket reached this node: take its session over, or send it to its owner."""
        c = self.cluster
        assert c is not None
        for attempt in range(3):
            cur, live = await (c.arrive(visitor) if attempt == 0 else c.state_of(visitor))
            if cur is None and not live:
                return  # no session anywhere: nothing to own (one round trip for most visitors)
            if cur is not None and cur.node != c.name:
                args = {"visitor": visitor, "node": c.name, "url": c.url}
                reached, answer = await c.ask(cur.node, "arrive", args, ASK_TIMEOUT)
                if answer is not None and answer.get("held"):
                    c.redirects += 1
                    raise Moved(cur.node, str(answer.get("url", "")))
                if answer is None and reached:
                    # Listening but not answering (frozen?): its claim must lapse first (fencing).
                    raise Unavailable("the node serving this session does not answer; retry")
            rec = await self._open_session_of(visitor)
            if rec is None:
                return  # no session: nothing to own
            epoch = await c.claim(visitor, cur.epoch if cur is not None else 0, rec.epoch)
            if epoch is None:
                continue  # another node claimed it meanwhile: look again
            self._took_over(rec, epoch)
            return
        raise Unavailable("the session is moving between nodes; retry")

    async def _place_viewer(self, visitor: str, session: str | None) -> None:
        """A viewer reached this node: send it to the owner, or own the session here (a new one
        where the visitor is; or ``session``, orphaned by a dead node, until its visitor returns)."""
        c = self.cluster
        assert c is not None
        for _ in range(3):
            cur = await c.owner_of(visitor)
            if cur is not None and cur.node != c.name and await c.alive(cur.node):
                c.redirects += 1
                raise Moved(cur.node, await c.url_of(cur.node))
            rec = await self._open_session_of(visitor)
            if session is not None and (rec is None or rec.id != session):
                raise SessionEnded("the session has ended")
            if rec is None:
                at = await c.located(visitor)
                if at is not None and at != c.name and await c.alive(at):
                    c.redirects += 1
                    raise Moved(at, await c.url_of(at))
            epoch = await c.claim(visitor, cur.epoch if cur is not None else 0, rec.epoch if rec else 0)
            if epoch is None:
                continue
            if rec is not None:
                self._took_over(rec, epoch)
                return
            at = await c.located(visitor)  # the visitor may have arrived elsewhere meanwhile
            if at is not None and at != c.name and await c.alive(at):
                await c.release(visitor, epoch, ended=True)
                c.redirects += 1
                raise Moved(at, await c.url_of(at))
            room = self.hub.room(visitor)
            room.next_epoch = epoch
            self._owned(room)
            return
        raise Unavailable("the session is moving between nodes; retry")

    def _owned(self, room: Room) -> None:
        assert self.cluster is not None
        room.owned = True
        room.lease_until = time.monotonic() + self.settings.ownership_ttl * LEASE_MARGIN

    def _took_over(self, rec: SessionRecord, epoch: int) -> None:
        assert self.cluster is not None
        room = take_over(self.hub, rec, epoch)
        if room is None:
            self._spawn(self.cluster.release(rec.visitor, epoch, ended=True))
            return
        self._owned(room)
        self.cluster.takeovers += 1
        event("session_taken_over", session=rec.id, visitor=rec.visitor, epoch=epoch, node=self.cluster.name)
        self._spawn(self.store.save_session(record_of(room)))

    def _unown(self, room: Room, ended: bool = True) -> None:
        if room.owned and self.cluster is not None:
            self._spawn(self.cluster.release(room.visitor_id, room.claim_epoch, ended))
        room.owned = False
        room.lease_until = FOREVER
        room.next_epoch = 0

    def _unown_if_idle(self, room: Room | None) -> None:
        """A claim made for a session that did not start (the grant was refused) is given back."""
        if room is not None and room.owned and room.state is None:
            self._unown(room)
            self.hub.forget_if_idle(room)

    def moved_frame(self, node: str, url: str) -> bytes:
        return encode(
            Error(
                code="session_moved",
                message=f"the session is served by node {node}",
                close_code=CloseCode.SESSION_MOVED,
                node=node,
                url=url,
            )
        )

    def _surrender(self, room: Room, node: str, url: str) -> None:
        event("session_moved", session=room.session_id, visitor=room.visitor_id, to=node)
        room.surrender(self.moved_frame(node, url), CloseCode.SESSION_MOVED, "moved")

    async def keep_leases(self) -> None:
        """Refresh this node's claims every OWNERSHIP_TTL / 3; act on the ones lost or lapsed."""
        c = self.cluster
        assert c is not None
        period = self.settings.ownership_ttl / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self._refresh_leases(c, period)
            except Exception:  # keep refreshing whatever one pass hit
                log.exception("lease refresh failed")

    async def _refresh_leases(self, c: SharedCluster, period: float) -> None:
        rooms = [r for r in self.hub.rooms.values() if r.owned]
        if not rooms:
            return
        leases = [(r.visitor_id, r.claim_epoch) for r in rooms]
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(period):
                results = await c.refresh(leases)
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("cluster: %d claims not refreshed: %s", len(leases), e or type(e).__name__)
            return  # the deadlines stand; past them the rooms are fenced
        until = t0 + self.settings.ownership_ttl * LEASE_MARGIN
        for room, (visitor, epoch), result in zip(rooms, leases, results, strict=True):
            if not room.owned or room.claim_epoch != epoch or self.hub.rooms.get(visitor) is not room:
                continue  # changed while we asked
            if result == 1 and (t0 <= room.lease_until or not room.fenced):
                room.lease_until = until  # still ours; lapsed but nothing was dropped meanwhile: no gap
            elif result == -1:
                cur = await c.owner_of(visitor)
                node = cur.node if cur is not None else ""
                self._surrender(room, node, await c.url_of(node) if node else "")
            else:
                await self._reown(c, room, epoch)

    async def _reown(self, c: SharedCluster, room: Room, epoch: int) -> None:
        """The claim lapsed (fenced frames were dropped) or Redis lost it: claim again under a new
        epoch and resynchronise everyone; if another node got it first, go there."""
        new = await c.claim(room.visitor_id, epoch, epoch)
        if new is None:
            cur = await c.owner_of(room.visitor_id)
            node = cur.node if cur is not None else ""
            self._surrender(room, node, await c.url_of(node) if node else "")
            return
        self._owned(room)
        room.fenced = False
        if room.state is None:
            room.next_epoch = new
            return
        event("session_reowned", session=room.session_id, visitor=room.visitor_id, epoch=new)
        room.reepoch(new, CloseCode.SESSION_MOVED, "resync")

    async def on_request(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """What another node asks of this one over the cluster bus."""
        visitor = args.get("visitor")
        room = self.hub.rooms.get(visitor) if isinstance(visitor, str) else None
        if op == "arrive":
            if room is None or not room.owned:
                return {"held": False}
            if room.visitor is not None and not self.draining:
                return {"held": True, "url": self.settings.node_url}
            self._surrender(room, str(args.get("node", "")), str(args.get("url", "")))
            return {"held": False}
        if op == "end":
            if room is None or not room.owned or room.state is None:
                return {"found": False}
            started = room.started
            room.end_session(str(args.get("reason", "")) or "agent_ended")
            return {"found": True, "started": started, "ended": time.time()}
        return {}

    async def end_live(self, visitor: str, reason: str) -> tuple[float, float] | None:
        """End ``visitor``'s live session wherever it is served: (started, ended) or None if none.

        On its owner (this node, or the one the request is forwarded to over the bus), as an
        agent's End would; an orphan (its node died) is closed in the store."""
        room = self.hub.rooms.get(visitor)
        c = self.cluster
        if room is not None and room.state is not None and (c is None or room.owned):
            started = room.started
            room.end_session(reason)
            return started, time.time()
        if c is None:
            return None
        cur = await c.owner_of(visitor)
        if cur is not None and cur.node != c.name:
            _, answer = await c.ask(cur.node, "end", {"visitor": visitor, "reason": reason}, 2.0)
            if answer is None:
                raise Unavailable("the node serving this session did not answer; retry")
            if not answer.get("found"):
                return None
            return float(answer["started"]), float(answer["ended"])
        rec = await self._open_session_of(visitor)
        if rec is None:
            return None
        now = time.time()
        await self.store.close_sessions([rec.id], now, reason)
        await c.ended([visitor])
        return rec.started, now

    def release_all(self) -> None:
        """Draining: give up every claim now, so other nodes take the sessions over at once."""
        for room in list(self.hub.rooms.values()):
            if room.owned:
                self._unown(room, ended=False)

    def cluster_counts(self) -> dict[str, int]:
        rooms = self.hub.rooms.values()
        return {
            "sessions": sum(1 for r in rooms if r.state is not None),
            "sockets": sum(1 for _ in self.hub.peers()),
            "visitors": len(self.visitors),
        }

    def stats(self) -> dict[str, int]:
        rooms = self.hub.rooms.values()
        return {
            "rooms": len(self.hub.rooms),
            "sessions": sum(1 for r in rooms if r.state is not None),
            "viewers": sum(len(r.viewers) for r in rooms),
            "visitors_online": len(self.visitors),
            "drains_missed": self.hub.rescued,
            **self.counters,
            "forbidden": self.hub.forbidden,
        }
