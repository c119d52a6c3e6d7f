"""The Upscope cloud REST API v1.1 (seed 002): ``{BASE}/api/v1.1/...``.

Off (404 ``api_not_enabled``) unless ``REST_KEY`` is set, as the on-premise
API; every call carries ``X-Api-Key: <REST_KEY>`` (compared in constant time;
401 ``invalid_api_key`` otherwise) and shares the on-premise API's REST_RATE
bucket for that key (429). Field names, wrappers and error codes are the
seed's; errors are ``{"status": "error", "error": code, "message": ...}``
(the seed's two fields, plus a sentence). Every body is declared below once,
as a ``msgspec.Struct`` (:mod:`relay.api.declare`).

What a self-hosted relay does not know is ``null`` (``api_key``,
``integration``, ``device_name``, the locations, ``team.id``, an agent's
internal ``id``); ``js_configuration`` is ``false``; calls are never counted
(``call_length_seconds`` 0).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Struct
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..core.errors import NotFound, RelayError
from ..core.service import Service
from ..storage.base import Pageview, SessionRecord, Visitor
from ._http import ApiError, ErrorBody, check_rest_key, service_of
from .declare import Operation, Param, Security, Surface, reply
from .onprem import (
    AgentIn,
    BrandingIn,
    Metadata,
    PermissionsIn,
    WatchUrlBody,
    _formatted,
    _iso,
    searched,
    watch_request,
)

__all__ = ["surface", "concurrent_sessions"]

log = logging.getLogger("relay.api.cloud")
DELETE_BATCH = 500  # offline visitors deleted per store call by DELETE visitors.json?all=true
HISTORY_LIMIT = 200  # pageviews in ``history`` (the store keeps at most HISTORY_MAX)


# --- answers ---------------------------------------------------------------------------------
class CloudUsageVisitors(Struct, kw_only=True):
    online_now: int
    last_24_hrs: int
    last_30_days: int


class CloudUsageAgents(Struct, kw_only=True):
    today: int
    last_30_days: int


class CloudUsageSessionCounts(Struct, kw_only=True):
    now: int
    today: int
    last_30_days: int


class CloudUsageSessionSeconds(Struct, kw_only=True):
    today: int
    last_30_days: int


class CloudUsage(Struct, kw_only=True):
    visitors: CloudUsageVisitors
    agents: CloudUsageAgents
    session_counts: CloudUsageSessionCounts
    session_seconds: CloudUsageSessionSeconds


class CloudUsageAnswer(Struct, kw_only=True):
    """``usage.json``: the seed's shape, with no ``status``."""

    usage: CloudUsage


class CloudVisitor(Struct, kw_only=True):
    """A visitor with every attribute the seed lists (unknown ones ``null``)."""

    api_key: None = None
    browser_name: str | None
    device_name: None = None
    device_type: str | None
    first_seen_at: str | None
    identities: list[str] | None
    integration: None = None
    ip_address: str | None
    is_in_session: bool
    is_online: bool
    js_configuration: bool = False
    last_seen_at: str | None
    last_url: str | None
    location_city: None = None
    location_country: None = None
    location_country_name: None = None
    lookup_code: str | None
    short_id: str
    tags: list[str]
    unique_id: str | None
    type: Literal["visitor"] = msgspec.field(default="visitor", name="_type")


class CloudTeam(Struct, kw_only=True):
    id: None = None
    domain: str | None
    type: Literal["team"] = msgspec.field(default="team", name="_type")


class CloudAgent(Struct, kw_only=True):
    id: None = None  # Upscope's own agent number: none here
    name: str | None
    agent_identifier: str | None  # the agent.id given to watch_url.json
    type: Literal["external_agent"] = msgspec.field(default="external_agent", name="_type")


class CloudSession(Struct, kw_only=True):
    id: str
    length_seconds: int
    formatted_length: str
    call_length_seconds: int = 0
    formatted_call_length: str = "-"
    started_at: str | None
    ended_at: str | None
    went_live: bool
    features_used: list[str]
    visitor_id: str
    team: CloudTeam
    agents: list[CloudAgent]
    metadata: dict[str, Any]
    type: Literal["session"] = msgspec.field(default="session", name="_type")


class CloudPageview(Struct, kw_only=True):
    url: str
    title: str
    at: str | None
    type: Literal["pageview"] = msgspec.field(default="pageview", name="_type")


class CloudVisitorFull(CloudVisitor, kw_only=True):
    sessions: list[CloudSession]
    history: list[CloudPageview] | msgspec.UnsetType = msgspec.UNSET  # only with ?with_history=true


class CloudVisitorList(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    visitors: list[CloudVisitor]


class CloudVisitorAnswer(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    visitor: CloudVisitorFull


class CloudOk(Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class CloudWatchUrlAnswer(Struct, kw_only=True):
    """The seed's answer: ``watch_url`` alone."""

    watch_url: str


# --- the watch URL request -------------------------------------------------------------------
class CloudWatchUrlBody(Struct, forbid_unknown_fields=True):
    """``POST visitors/{id}/watch_url.json``: the seed's options (``metadata`` at the top, as its
    example, or in ``branding``, as its table)."""

    agent: AgentIn
    branding: BrandingIn | None = None
    permissions: PermissionsIn | None = None  # type: ignore[valid-type]
    metadata: Metadata | None = None


def _visitor_fields(v: Visitor) -> dict[str, Any]:
    return {
        "browser_name": v.browser or None,
        "device_type": v.device_type or None,
        "first_seen_at": _iso(v.first_seen),
        "identities": v.identities or None,
        "ip_address": v.ip or None,
        "is_in_session": v.in_session,
        "is_online": v.online,
        "last_seen_at": _iso(v.last_seen),
        "last_url": v.last_url or None,
        "lookup_code": v.lookup_code or None,
        "short_id": v.short_id,
        "tags": v.tags,
        "unique_id": v.unique_id or None,
    }


def _session(s: SessionRecord, domain: str | None) -> CloudSession:
    length = int(s.length)
    return CloudSession(
        id=s.id,
        length_seconds=length,
        formatted_length=_formatted(length),
        started_at=_iso(s.started),
        ended_at=_iso(s.ended),
        went_live=s.went_live,
        features_used=s.features_used,
        visitor_id=s.visitor,
        team=CloudTeam(domain=domain),
        agents=[CloudAgent(name=a.get("name") or None, agent_identifier=a.get("id") or None) for a in s.agents],
        metadata=s.metadata,
    )


def _pageview(p: Pageview) -> CloudPageview:
    return CloudPageview(url=p.url, title=p.title, at=_iso(p.at))


# --- auth ------------------------------------------------------------------------------------
def check_api_key(request: Request) -> None:
    """The surface's guard: 404 ``api_not_enabled`` without REST_KEY; 401 ``invalid_api_key``
    unless ``X-Api-Key`` is the REST_KEY (constant time); 429 past REST_RATE."""
    check_rest_key(request, "x-api-key", "missing or wrong X-Api-Key header: send the relay's REST_KEY")


# --- the session limit -----------------------------------------------------------------------
async def concurrent_sessions(service: Service) -> int:
    """Sessions open now: this node's rooms with a session; in cluster mode plus the other
    nodes' counts from their last heartbeats (this node's own heartbeat is left out: its
    rooms are counted live)."""
    rooms = service.hub.rooms.values()
    here = sum(1 for r in rooms if r.state is not None and (service.cluster is None or r.owned))
    if service.cluster is None:
        return here
    try:
        nodes = await service.cluster.nodes()
    except (RedisError, OSError):
        nodes = []
    return here + sum(n.sessions for n in nodes if n.name != service.cluster.name)


async def _check_limit(service: Service, short_id: str) -> None:
    """402 when a new session would pass MAX_CONCURRENT_SESSIONS (0: no limit); joining a
    session the visitor already has adds none."""
    limit = service.settings.max_concurrent_sessions
    if limit <= 0:
        return
    room = service.hub.rooms.get(short_id)
    if room is not None and room.state is not None:
        return
    if await concurrent_sessions(service) >= limit:
        recent = await service.store.sessions_for(short_id, 1)
        if recent and recent[0].ended is None:
            return  # in a session served by another node (cluster mode)
        raise ApiError(
            402,
            "payment_required",
            f"a new session would pass MAX_CONCURRENT_SESSIONS ({limit} sessions at once)",
        )


# --- handlers --------------------------------------------------------------------------------
def _short_id(request: Request) -> str:
    short_id: str = request.path_params["visitor_id"]
    return short_id


def _domain(service: Service) -> str | None:
    return urlsplit(service.settings.base_url).hostname or None


async def _visitor(service: Service, short_id: str) -> Visitor:
    try:
        return await service.get_visitor(short_id)
    except NotFound:
        raise ApiError(404, "not_found", "visitor not found") from None


async def usage(request: Request, _: None) -> Response:
    figures = (await service_of(request).store.usage(time.time())).as_json()
    return reply(CloudUsageAnswer(usage=msgspec.convert(figures, CloudUsage)))


async def list_visitors(request: Request, _: None) -> Response:
    visitors = await searched(request)
    return reply(CloudVisitorList(visitors=[CloudVisitor(**_visitor_fields(v)) for v in visitors]))


async def get_visitor(request: Request, _: None) -> Response:
    service = service_of(request)
    short_id = _short_id(request)
    visitor = await _visitor(service, short_id)
    domain = _domain(service)
    sessions = [_session(s, domain) for s in await service.sessions_for(short_id)]
    out = CloudVisitorFull(**_visitor_fields(visitor), sessions=sessions)
    if request.query_params.get("with_history", "").lower() in ("true", "1"):
        out.history = [_pageview(p) for p in await service.store.history(short_id, HISTORY_LIMIT)]
    return reply(CloudVisitorAnswer(visitor=out))


async def _end_live(service: Service, short_id: str, reason: str) -> None:
    try:
        await service.end_live(short_id, reason)
    except RelayError as e:
        raise ApiError(e.status, e.code, str(e)) from None
    code = await service.store.code_of(short_id)
    if code is not None:
        await service.store.drop_code(code)


async def delete_visitor(request: Request, _: None) -> Response:
    """The visitor's live session is ended first (wherever it is served), then its data goes."""
    service = service_of(request)
    short_id = _short_id(request)
    await _visitor(service, short_id)
    await _end_live(service, short_id, "stopped")
    if not await service.store.delete_visitor(short_id):
        raise ApiError(404, "not_found", "visitor not found")
    return reply(CloudOk())


async def _delete_offline(service: Service) -> None:
    total = 0
    try:
        while gone := await service.store.delete_offline_visitors(DELETE_BATCH):
            total += gone
            await asyncio.sleep(0)  # other requests between batches
    except Exception:  # a background task: log, never crash the relay
        log.exception("deleting offline visitors failed after %d", total)
    else:
        log.info("deleted %d offline visitors (DELETE visitors.json?all=true)", total)


async def delete_all(request: Request, _: None) -> Response:
    """Offline visitors only, in the background (one run at a time); answers at once."""
    if request.query_params.get("all") != "true":
        raise ApiError(400, "invalid_field", "all=true is required to delete every offline visitor", field="all")
    state = request.app.state
    task: asyncio.Task[None] | None = getattr(state, "cloud_delete_all", None)
    if task is None or task.done():
        state.cloud_delete_all = asyncio.get_running_loop().create_task(_delete_offline(service_of(request)))
    return reply(CloudOk())


async def watch_url(request: Request, body: CloudWatchUrlBody) -> Response:
    service = service_of(request)
    short_id = _short_id(request)
    await _visitor(service, short_id)
    await _check_limit(service, short_id)
    onprem_body = WatchUrlBody(
        agent=body.agent, permissions=body.permissions, branding=body.branding, metadata=body.metadata
    )
    try:
        url = await service.watch_url(watch_request(short_id, onprem_body))
    except NotFound:
        raise ApiError(404, "not_found", "visitor not found") from None
    return reply(CloudWatchUrlAnswer(watch_url=url))


async def stop_session(request: Request, _: None) -> Response:
    """``ok`` (plain text), whether a session was live or not."""
    service = service_of(request)
    short_id = _short_id(request)
    await _visitor(service, short_id)
    await _end_live(service, short_id, "stopped")
    return PlainTextResponse("ok")


# --- the surface -----------------------------------------------------------------------------
_VISITOR_ID = Param("visitor_id", "path", {"type": "string", "minLength": 1}, "the visitor's short_id")
_NOT_FOUND = (ErrorBody, "`not_found`: no such visitor")

surface = Surface(
    name="cloud-v1.1",
    mount="/api/v1.1",
    description=(
        "The Upscope cloud REST API v1.1 (seed 002). Off (404 `api_not_enabled`) unless the relay has REST_KEY; "
        "every call carries `X-Api-Key: <REST_KEY>`, at most REST_RATE calls a minute (shared with the "
        "on-premise API)."
    ),
    security=Security("cloudApiKey", {"type": "apiKey", "in": "header", "name": "X-Api-Key"}),
    guard=check_api_key,
    errors={
        401: "`invalid_api_key`: the X-Api-Key header is missing or wrong",
        404: "`api_not_enabled` (no REST_KEY), or `not_found`",
        429: "`rate_limited`: over REST_RATE calls a minute (see Retry-After)",
        503: "`unavailable`: the store (or the node serving the session) did not answer; retry",
    },
    operations=[
        Operation(
            "GET",
            "/usage.json",
            usage,
            "Usage statistics from the store",
            {200: (CloudUsageAnswer, "the usage figures")},
        ),
        Operation(
            "GET",
            "/list.json",
            list_visitors,
            "Search visitors, or list the latest (no search)",
            {200: (CloudVisitorList, "the visitors"), 400: (ErrorBody, "`invalid_search`")},
            params=[Param("search", "query", {"type": "string", "maxLength": 512}, "the query")],
        ),
        Operation(
            "GET",
            "/visitors/{visitor_id}.json",
            get_visitor,
            "One visitor with its recent sessions (and its pageviews with ?with_history=true)",
            {200: (CloudVisitorAnswer, "the visitor"), 404: _NOT_FOUND},
            params=[
                _VISITOR_ID,
                Param("with_history", "query", {"type": "string"}, "`true`: add `history`, the visitor's pageviews"),
            ],
        ),
        Operation(
            "DELETE",
            "/visitors/{visitor_id}.json",
            delete_visitor,
            "Delete a visitor and all its data (its live session is ended first)",
            {200: (CloudOk, "deleted"), 404: _NOT_FOUND},
            params=[_VISITOR_ID],
        ),
        Operation(
            "DELETE",
            "/visitors.json",
            delete_all,
            "Delete every offline visitor, in the background (answers at once)",
            {200: (CloudOk, "started (or already running)"), 400: (ErrorBody, "`invalid_field`: all=true missing")},
            params=[Param("all", "query", {"type": "string", "enum": ["true"]}, "must be `true`", required=True)],
        ),
        Operation(
            "POST",
            "/visitors/{visitor_id}/watch_url.json",
            watch_url,
            "A signed one-time URL to watch the visitor (valid GRANT_TTL seconds)",
            {
                200: (CloudWatchUrlAnswer, "the URL"),
                402: (ErrorBody, "`payment_required`: a new session would pass MAX_CONCURRENT_SESSIONS"),
                404: _NOT_FOUND,
            },
            body=CloudWatchUrlBody,
            params=[_VISITOR_ID],
        ),
        Operation(
            "DELETE",
            "/visitors/{visitor_id}/session",
            stop_session,
            "End the visitor's live session wherever it is served: `ok` (text), also when none was live",
            {200: (None, "`ok` as text/plain"), 404: _NOT_FOUND},
            params=[_VISITOR_ID],
        ),
    ],
)
