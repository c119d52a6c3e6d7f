"""The live-session API (seed 001, Genesys Co-browse's realtime REST) under ``{BASE}/rest/live``.

``POST /sessions``: the visitor starts a session itself and gets a 9-digit
``sessionToken`` to read out to an agent, plus ``sessionServerName`` (the
node serving it) and a ``gcbSessionServer`` cookie naming that node, which a
balancer sticks further requests to. The visitor is named by ``userToken``
(its SDK's client id), in the JSON body or the query.

``GET /sessions/{id}``: which node serves a session. ``id`` is a 9-digit
session token, a session id, or a visitor's short id (what the watch page
asks before it connects). ``sessionServerUrl`` is present only when that
node has ``NODE_URL`` set (URL-based stickiness).

``GET /users/{userToken}/session/stop``: ends the visitor's live session,
wherever it is served (forwarded to its node in cluster mode), and answers
its ``activationTime`` and ``deactivationTime`` in milliseconds.

Every call is subject to CORS control: its ``Origin`` (or, without one, the
origin of its ``Referer``) must be allowed (``ALLOWED_ORIGINS``, or the
relay's own), else 403; allowed origins get ``Access-Control-Allow-Origin``.
Errors are ``{"status": "error", "error": code, "message": ...}`` as
under ``/api``. Single-node mode serves the same API: every answer names
this node. Bodies are declared once below (:mod:`relay.api.declare`).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from urllib.parse import urlsplit

import msgspec
from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import RelayError
from ..core.service import Service
from ._http import ApiError, ErrorBody, service_of
from .declare import Handler, Operation, Param, Surface, reply

__all__ = ["surface", "COOKIE"]

COOKIE = "gcbSessionServer"
_SHORT_ID = re.compile(r"^[A-Za-z0-9_-]{4,40}$")
_CODE = re.compile(r"^[0-9]{9}$")
_SESSION_ID = re.compile(r"^[0-9a-f]{16}$")


class CreateSessionBody(Struct):
    """``POST /sessions``: the visitor's client id (or ``?userToken=``)."""

    userToken: str | None = None  # the seed's name


class CreatedSession(Struct, kw_only=True):
    sessionToken: str
    sessionServerName: str


class SessionWhere(CreatedSession, kw_only=True):
    sessionServerUrl: str | msgspec.UnsetType = msgspec.UNSET  # only with NODE_URL


class StoppedSession(Struct, kw_only=True):
    activationTime: int  # milliseconds
    deactivationTime: int


def _origin(request: Request) -> str:
    """The caller's origin (403 unless allowed); "" never passes."""
    origin = request.headers.get("origin")
    if not origin:
        referer = urlsplit(request.headers.get("referer", ""))
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else ""
    if not origin or not service_of(request).settings.origin_allowed(origin):
        raise ApiError(403, "origin_not_allowed", "the request's Origin (or Referer) is not in ALLOWED_ORIGINS")
    return origin


def _check_origin(request: Request) -> None:
    """The surface's guard: 403 before anything else (a body is read only from an allowed origin)."""
    _origin(request)


def _cors(response: Response, origin: str) -> Response:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Vary"] = "Origin"
    return response


async def preflight(request: Request, _: None) -> Response:
    origin = _origin(request)
    response = Response(status_code=204)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Max-Age"] = "600"
    return _cors(response, origin)


async def _where(service: Service, visitor: str) -> tuple[str, str]:
    """(node name, its NODE_URL) serving ``visitor``: the owner of its session, else the node its
    socket is on, else this node."""
    c = service.cluster
    if c is None:
        return service.settings.node_name, service.settings.node_url
    room = service.hub.rooms.get(visitor)
    if room is not None and room.owned:
        return c.name, c.url
    owner = await c.owner_of(visitor)
    if owner is not None and await c.alive(owner.node):
        return owner.node, await c.url_of(owner.node)
    at = await c.located(visitor)
    if at is not None and await c.alive(at):
        return at, await c.url_of(at)
    return c.name, c.url


def _user_token(request: Request, body: CreateSessionBody) -> str:
    token = body.userToken if body.userToken is not None else request.query_params.get("userToken", "")
    if not _SHORT_ID.match(token):
        raise ApiError(400, "invalid_user_token", "userToken must be the visitor's client id", field="userToken")
    return token


async def create(request: Request, body: CreateSessionBody) -> Response:
    origin = _origin(request)
    service = service_of(request)
    visitor_id = _user_token(request, body)
    visitor = service.visitors.get(visitor_id) or await service.store.get_visitor(visitor_id)
    if visitor is None:
        raise ApiError(404, "not_found", "no visitor has this userToken")
    if not visitor.online:
        raise ApiError(409, "visitor_offline", "the visitor's page is not connected to the relay")
    expires = time.time() + service.settings.grant_ttl
    for _ in range(8):
        code = str(100_000_000 + secrets.randbelow(900_000_000))
        if await service.store.save_code(code, visitor_id, expires):
            break
    else:
        raise ApiError(503, "unavailable", "no free session token; retry")
    node, _url = await _where(service, visitor_id)
    response = reply(CreatedSession(sessionToken=code, sessionServerName=node))
    path = service.settings.base_path or "/"
    response.set_cookie(COOKIE, node, path=path, httponly=True, samesite="lax")
    return _cors(response, origin)


async def _visitor_of(service: Service, ident: str) -> tuple[str, str]:
    """(visitor, sessionToken) for a session token, a session id or a visitor id; 404 if none is live."""
    store = service.store
    if _CODE.match(ident):
        visitor = await store.visitor_of_code(ident)
        if visitor is None:
            raise ApiError(404, "not_found", "no live session has this token")
        return visitor, ident
    if _SESSION_ID.match(ident):
        rec = await store.get_session(ident)
        if rec is not None:
            if rec.ended is not None:
                raise ApiError(404, "not_found", "that session has ended")
            return rec.visitor, (await store.code_of(rec.visitor)) or rec.id
    if not _SHORT_ID.match(ident):
        raise ApiError(404, "not_found", "no live session has this id")
    room = service.hub.rooms.get(ident)
    if room is not None and room.state is not None:
        return ident, (await store.code_of(ident)) or room.session_id
    recent = await store.sessions_for(ident, 1)
    if recent and recent[0].ended is None:
        return ident, (await store.code_of(ident)) or recent[0].id
    known = service.visitors.get(ident) or await store.get_visitor(ident)
    if known is None or not known.online:
        raise ApiError(404, "not_found", "no live session or connected visitor has this id")
    return ident, (await store.code_of(ident)) or ""


async def get_session(request: Request, _: None) -> Response:
    origin = _origin(request)
    service = service_of(request)
    visitor, token = await _visitor_of(service, request.path_params["id"])
    node, url = await _where(service, visitor)
    body = SessionWhere(sessionToken=token, sessionServerName=node, sessionServerUrl=url or msgspec.UNSET)
    return _cors(reply(body), origin)


async def stop(request: Request, _: None) -> Response:
    origin = _origin(request)
    service = service_of(request)
    visitor = request.path_params["token"]
    if not _SHORT_ID.match(visitor):
        raise ApiError(404, "not_found", "no live session for this userToken")
    try:
        times = await service.end_live(visitor, "stopped")
    except RelayError as e:
        raise ApiError(e.status, e.code, str(e)) from None
    code = await service.store.code_of(visitor)
    if code is not None:
        await service.store.drop_code(code)
    if times is None:
        raise ApiError(404, "not_found", "this user has no live session")
    started, ended = times
    return _cors(reply(StoppedSession(activationTime=int(started * 1000), deactivationTime=int(ended * 1000))), origin)


def _with_cors(handler: Handler) -> Handler:
    """Errors after the origin check carry the CORS headers too, so the page can read them."""

    async def handle(request: Request, body: object) -> Response:
        try:
            return await handler(request, body)
        except ApiError as e:
            response = e.response()
            if e.code != "origin_not_allowed":
                with contextlib.suppress(ApiError):
                    _cors(response, _origin(request))
            return response

    return handle


_PREFLIGHT = {204: (None, "allowed: the CORS headers")}
_ANY_TOKEN = Param("token", "path", {"type": "string"}, "any value: a preflight checks the Origin only")
_TOKEN = Param(
    "token", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{4,40}$"}, "the visitor's client id (userToken)"
)
_ID = Param("id", "path", {"type": "string", "minLength": 1}, "a 9-digit session token, a session id or a client id")

surface = Surface(
    name="live-session",
    mount="/rest/live",
    description=(
        "The live-session API (seed 001, Genesys Co-browse's realtime REST). No key: every call must carry an "
        "Origin (or, without one, a Referer) in ALLOWED_ORIGINS or the relay's own, else 403 `origin_not_allowed`; "
        "allowed origins get Access-Control-Allow-Origin on answers and errors alike."
    ),
    guard=_check_origin,
    wrap=_with_cors,
    errors={
        403: "`origin_not_allowed`: the Origin (or Referer) is not allowed",
        404: "`not_found`",
        503: "`unavailable`: the store did not answer (cluster mode); retry",
    },
    operations=[
        Operation(
            "POST",
            "/sessions",
            create,
            "Start a visitor's session: a 9-digit code to read out, and the gcbSessionServer cookie",
            {
                200: (CreatedSession, "the code and the node serving it"),
                400: (ErrorBody, "`invalid_user_token`, `invalid_json` or `invalid_field`"),
                404: (ErrorBody, "`not_found`: no visitor has this userToken"),
                409: (ErrorBody, "`visitor_offline`"),
            },
            body=CreateSessionBody,
            body_limit=4096,
            params=[Param("userToken", "query", {"type": "string"}, "the visitor's client id, if not in the body")],
        ),
        Operation("OPTIONS", "/sessions", preflight, "CORS preflight", _PREFLIGHT),
        Operation(
            "GET",
            "/sessions/{id}",
            get_session,
            "Which node serves a session",
            {200: (SessionWhere, "the session's token and node"), 404: (ErrorBody, "`not_found`: nothing live")},
            params=[_ID],
        ),
        Operation("OPTIONS", "/sessions/{id}", preflight, "CORS preflight", _PREFLIGHT, params=[_ID]),
        Operation(
            "GET",
            "/users/{token}/session/stop",
            stop,
            "End the visitor's live session wherever it is served: its times in ms",
            {200: (StoppedSession, "activation and deactivation times"), 404: (ErrorBody, "`not_found`")},
            params=[_TOKEN],
        ),
        Operation(
            "OPTIONS", "/users/{token}/session/stop", preflight, "CORS preflight", _PREFLIGHT, params=[_ANY_TOKEN]
        ),
    ],
)
