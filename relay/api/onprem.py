"""The on-premise REST API (seed 000): ``{BASE}/api/visitors/...``.

Off (404 ``api_not_enabled``) unless ``REST_KEY`` is set; ``Authorization:
<REST_KEY>`` on every call, at most ``REST_RATE`` calls a minute. Errors:
``{"status": "error", "error": <code>, "message": ...}`` with a 4xx status.
Every body is declared here once, as a ``msgspec.Struct``: it validates the
request, shapes the answer and is the OpenAPI document's schema
(:mod:`relay.api.declare`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response

from protocol import PERMISSION_FLAGS

from ..core.errors import NotFound
from ..core.service import WatchRequest
from ..storage.base import SessionRecord, Visitor, parse_search
from ._http import ApiError, ErrorBody, check_api_enabled, check_rest_key, service_of
from .declare import Operation, Param, Security, Surface, reply

__all__ = ["surface", "visitor_json", "session_json", "watch_request", "WatchUrlBody"]

_ENDPOINTS = (
    "GET /api/visitors/list/latest, GET /api/visitors/list/search?search=, "
    "GET /api/visitors/{id}, POST /api/visitors/{id}/watch_url"
)


# --- answers ---------------------------------------------------------------------------------
class VisitorOut(Struct, kw_only=True):
    """A visitor as the seed lists it."""

    short_id: str
    unique_id: str | None
    identities: list[str] | None
    tags: list[str]
    lookup_code: str | None
    device_type: str | None
    device_name: None = None
    browser_name: str | None
    ip_address: str | None
    last_url: str | None
    location_city: None = None
    location_country: None = None
    first_seen_at: str | None
    last_seen_at: str | None
    is_online: bool
    is_in_session: bool
    type: Literal["visitor"] = msgspec.field(default="visitor", name="_type")


class AgentOut(Struct, kw_only=True):
    id: str | None
    name: str | None
    type: Literal["external_agent"] = msgspec.field(default="external_agent", name="_type")


class SessionOut(Struct, kw_only=True):
    """One of a visitor's sessions."""

    id: str
    length_seconds: int
    formatted_length: str
    started_at: str | None
    ended_at: str | None
    went_live: bool
    features_used: list[str]
    visitor_id: str
    agents: list[AgentOut]
    observer: dict[str, str] | None
    metadata: dict[str, Any]
    type: Literal["session"] = msgspec.field(default="session", name="_type")


class VisitorWithSessions(VisitorOut, kw_only=True):
    sessions: list[SessionOut]


class VisitorList(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    visitors: list[VisitorOut]


class VisitorAnswer(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    visitor: VisitorWithSessions


class LiveSessionAnswer(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    visitor: VisitorOut


class WatchUrlAnswer(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    watch_url: str


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _visitor_fields(v: Visitor) -> dict[str, Any]:
    return {
        "short_id": v.short_id,
        "unique_id": v.unique_id or None,
        "identities": v.identities or None,
        "tags": v.tags,
        "lookup_code": v.lookup_code or None,
        "device_type": v.device_type or None,
        "browser_name": v.browser or None,
        "ip_address": v.ip or None,
        "last_url": v.last_url or None,
        "first_seen_at": _iso(v.first_seen),
        "last_seen_at": _iso(v.last_seen),
        "is_online": v.online,
        "is_in_session": v.in_session,
    }


def visitor_json(v: Visitor) -> VisitorOut:
    return VisitorOut(**_visitor_fields(v))


def session_json(s: SessionRecord) -> SessionOut:
    length = int(s.length)
    return SessionOut(
        id=s.id,
        length_seconds=length,
        formatted_length=_formatted(length),
        started_at=_iso(s.started),
        ended_at=_iso(s.ended),
        went_live=s.went_live,
        features_used=s.features_used,
        visitor_id=s.visitor,
        agents=[AgentOut(id=a.get("id"), name=a.get("name")) for a in s.agents],
        observer=s.observer or None,
        metadata=s.metadata,
    )


def _formatted(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}" if seconds else "-"
    minutes = seconds // 60
    return f"{minutes} minute{'s' * (minutes != 1)}"


# --- the watch URL request -------------------------------------------------------------------
Text = Annotated[str, Meta(max_length=256)]
Required = Annotated[str, Meta(min_length=1, max_length=256)]  # "" counts as missing (declare.invalid)
Url = Annotated[str, Meta(pattern=r"^(https?://|/)", max_length=2048, description="an http(s) URL or a path")]
Scalar = Annotated[str, Meta(max_length=1024)] | int | float | bool
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=128)], Scalar],
    Meta(max_length=50, description="flat: strings, numbers, booleans; at most 50 keys"),
]


class AgentIn(Struct):
    """The agent who will watch (a number is taken as its decimal string)."""

    id: Required | int
    name: Required | int


class ObserverIn(Struct):
    id: Text | int | None = None
    name: Text | int | None = None


class BrandingIn(Struct, forbid_unknown_fields=True):
    naked: bool | None = False
    no_bottom_bar: bool | None = None
    on_end_url: Url | None = None
    retry_url: Url | None = None
    metadata: Metadata | None = None  # the cloud seed puts it here


PermissionsIn = msgspec.defstruct(
    "PermissionsIn",
    [(flag, bool | None, default) for flag, (_, default) in PERMISSION_FLAGS.items()],
    forbid_unknown_fields=True,
)


class WatchUrlBody(Struct):
    """``POST /api/visitors/{id}/watch_url``: who watches, with which permissions and branding."""

    agent: AgentIn
    licenseToken: str | None = None  # the seed's name; accepted and ignored
    permissions: PermissionsIn | None = None  # type: ignore[valid-type]
    branding: BrandingIn | None = None
    observer: ObserverIn | None = None
    metadata: Metadata | None = None


def _str(value: str | int | None) -> str:
    return "" if value is None else str(value)


def watch_request(short_id: str, body: WatchUrlBody) -> WatchRequest:
    branding = body.branding or BrandingIn()
    perms = body.permissions or PermissionsIn()
    observer = body.observer or ObserverIn()
    granted = [perm.value for flag, (perm, _) in PERMISSION_FLAGS.items() if getattr(perms, flag)]
    return WatchRequest(
        visitor=short_id,
        agent_id=_str(body.agent.id),
        agent_name=_str(body.agent.name),
        permissions=tuple(sorted(granted)),
        branding={
            "naked": bool(branding.naked),
            "no_bottom_bar": branding.no_bottom_bar,
            "on_end_url": branding.on_end_url,
            "retry_url": branding.retry_url,
        },
        observer_id=_str(observer.id),
        observer_name=_str(observer.name),
        metadata={**(branding.metadata or {}), **(body.metadata or {})},
    )


# --- handlers --------------------------------------------------------------------------------
async def index(request: Request, _: None) -> Response:
    """``GET /api``: nothing lives here; a 404 in the error shape naming the endpoints."""
    check_api_enabled(request)
    raise ApiError(404, "not_found", f"no endpoint at /api itself; the API is {_ENDPOINTS}")


async def document(request: Request, _: None) -> Response:
    """``GET /api/openapi.json``: the OpenAPI document of every REST surface (no key)."""
    return Response(request.app.state.openapi, media_type="application/json")


async def latest(request: Request, _: None) -> Response:
    visitors = await service_of(request).latest_visitors()
    return reply(VisitorList(visitors=[visitor_json(v) for v in visitors]))


async def searched(request: Request) -> list[Visitor]:
    """The visitors ``?search=`` finds (the latest without one); 400 ``invalid_search`` naming the
    term the syntax does not know. The on-premise and the cloud list both answer with it."""
    service = service_of(request)
    query = request.query_params.get("search", "").strip()
    if len(query) > 512:
        raise ApiError(400, "invalid_search", "search is over 512 characters", field="search")
    if not query:
        return await service.latest_visitors()
    try:
        parsed = parse_search(query)
    except ValueError as e:
        raise ApiError(400, "invalid_search", str(e), field="search") from None
    return await service.search_visitors(parsed)


async def search(request: Request, _: None) -> Response:
    return reply(VisitorList(visitors=[visitor_json(v) for v in await searched(request)]))


async def get_visitor(request: Request, _: None) -> Response:
    service = service_of(request)
    short_id = request.path_params["visitor_id"]
    try:
        visitor = await service.get_visitor(short_id)
    except NotFound:
        raise ApiError(404, "not_found", "visitor not found") from None
    sessions = [session_json(s) for s in await service.sessions_for(short_id)]
    return reply(VisitorAnswer(visitor=VisitorWithSessions(**_visitor_fields(visitor), sessions=sessions)))


async def live_session(request: Request, _: None) -> Response:
    """``GET /api/live_sessions/{code}``: the visitor holding a 9-digit session token (what the
    visitor read out to the agent: the console's "Join by code")."""
    service = service_of(request)
    code = request.path_params["code"]
    short_id = await service.store.visitor_of_code(code) if code.isdigit() and len(code) == 9 else None
    if short_id is None:
        raise ApiError(404, "not_found", "no live session has this code (it may have expired)")
    try:
        visitor = await service.get_visitor(short_id)
    except NotFound:
        raise ApiError(404, "not_found", "the visitor of this code is gone") from None
    return reply(LiveSessionAnswer(visitor=visitor_json(visitor)))


async def watch_url(request: Request, body: WatchUrlBody) -> Response:
    service = service_of(request)
    short_id = request.path_params["visitor_id"]
    req = watch_request(short_id, body)
    try:
        url = await service.watch_url(req)
    except NotFound:
        raise ApiError(404, "not_found", "visitor not found") from None
    return reply(WatchUrlAnswer(watch_url=url))


# --- the surface -----------------------------------------------------------------------------
_VISITOR_ID = Param("visitor_id", "path", {"type": "string", "minLength": 1}, "the visitor's short id")
_NOT_FOUND = (ErrorBody, "`not_found`: no such visitor")

surface = Surface(
    name="on-premise",
    mount="/api",
    description=(
        "The on-premise REST API (seed 000). Off (404 `api_not_enabled`) unless the relay has REST_KEY; "
        "every call carries `Authorization: <REST_KEY>`, at most REST_RATE calls a minute."
    ),
    security=Security("restKey", {"type": "apiKey", "in": "header", "name": "Authorization"}),
    guard=check_rest_key,
    errors={
        401: "`invalid_api_key`: the Authorization header is missing or wrong",
        404: "`api_not_enabled` (no REST_KEY), or `not_found`",
        429: "`rate_limited`: over REST_RATE calls a minute (see Retry-After)",
        503: "`unavailable`: the store did not answer (cluster mode); retry",
    },
    operations=[
        Operation(
            "GET",
            "",
            index,
            "Nothing here: a 404 naming the endpoints",
            {404: (ErrorBody, "`not_found` naming the endpoints, or `api_not_enabled`")},
            public=True,
            extra_methods=["HEAD"],
        ),
        Operation(
            "GET",
            "/openapi.json",
            document,
            "This document: every REST surface (no key needed)",
            {200: (dict[str, Any], "the OpenAPI 3.1 document")},
            public=True,
        ),
        Operation(
            "GET",
            "/visitors/list/latest",
            latest,
            "Latest visitors: online first, then the most recently seen",
            {200: (VisitorList, "the visitors")},
        ),
        Operation(
            "GET",
            "/visitors/list/search",
            search,
            "Search visitors (free text and field:value terms; empty: the latest)",
            {200: (VisitorList, "the visitors matching every term"), 400: (ErrorBody, "`invalid_search`")},
            params=[Param("search", "query", {"type": "string", "maxLength": 512}, "the query")],
        ),
        Operation(
            "GET",
            "/visitors/{visitor_id}",
            get_visitor,
            "One visitor, with its recent sessions",
            {200: (VisitorAnswer, "the visitor"), 404: _NOT_FOUND},
            params=[_VISITOR_ID],
        ),
        Operation(
            "POST",
            "/visitors/{visitor_id}/watch_url",
            watch_url,
            "A signed one-time URL to watch the visitor (valid GRANT_TTL seconds)",
            {200: (WatchUrlAnswer, "the URL"), 404: _NOT_FOUND},
            body=WatchUrlBody,
            params=[_VISITOR_ID],
        ),
        Operation(
            "GET",
            "/live_sessions/{code}",
            live_session,
            "The visitor holding a 9-digit session code",
            {200: (LiveSessionAnswer, "the visitor"), 404: (ErrorBody, "`not_found`: no live session has this code")},
            params=[Param("code", "path", {"type": "string", "minLength": 1}, "the 9-digit code")],
        ),
    ],
)
