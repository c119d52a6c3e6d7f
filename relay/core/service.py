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
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from protocol import (
    KIND_INFO,
    PROTOCOL_VERSION,
    Bye,
    CloseCode,
    Error,
    Hello,
    Message,
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
from ..storage.base import SearchQuery, SessionRecord, Store, Visitor
from .errors import NotFound, RateLimited, SessionEnded, TokenInvalid, TokenReused
from .grants import Grant, ResumeClaim, Signer
from .hub import Hub, HubConfig, Link, Peer, Room, SessionState, ViewerSlot
from .limits import AddressLimits, RateConfig, SocketRates
from .restore import record_of

__all__ = ["Service", "ClientInfo", "WatchRequest", "new_short_id"]

log = logging.getLogger("relay.service")
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
        self.draining = False
        self.counters = {"protocol_errors": 0, "rate_limited": 0, "resyncs_refused": 0}
        self.rates = RateConfig(
            control=settings.rate_control,
            content=settings.rate_content,
            bytes=settings.rate_bytes,
            burst=settings.rate_burst,
            min_bytes_burst=2.0 * settings.max_keyframe,
        )
        self.addresses = AddressLimits(settings.max_sockets_per_ip, settings.new_visitors_per_ip)

    # --- background writes ------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

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
        if not await self.store.use_nonce(grant.nonce, grant.expires):
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
        if rates is not None:
            over = rates.admit(len(data) > 1 and _SESSION_CLASS[data[1]] == 1, len(data), time.monotonic())
            if over is not None:
                self.counters["rate_limited"] += 1
                wait = self.addresses.strike(peer.address, time.monotonic()) if peer.address else 0.0
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
        else:
            room.detach_viewer(peer, leaving=False)

    # --- hub listener ---------------------------------------------------------------
    def message(self, room: Room, peer: Peer, msg: Message) -> None:
        match msg:
            case Presence():
                self._presence(room, peer, msg)
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
