"""The CoClick meetings API (seed 003) under ``{BASE}/api/v1``.

``POST /authenticate`` trades an API key (``cobrowse-relay keys create --kind
coclick``: its ``secret_id`` and ``secret_key``) for a bearer token valid
``API_TOKEN_TTL`` seconds, signed with ``SECRET_KEY`` as its own kind of token
(:class:`relay.core.grants.ApiTokenClaim`, ``api.`` prefix: never a watch grant
or a resume token). Every other call carries ``Authorization: Bearer <token>``;
the key is looked up again on each call, so revoking it ends its tokens at once.

``GET /meetings`` lists meetings, newest first, filtered by ``q[...]`` predicates
(``user_email_cont``, ``status_eq|gt|lt``, ``starts_at_eq|gt|lt``: and-ed; any
other ``q[...]`` is a 400 naming it) and paginated by the ``X-Page`` / ``X-Per``
request headers (1 and 20 by default, ``X-Per`` capped at 100); the answer's
``X-Page``, ``X-Per``, ``X-Total`` and ``X-Total-Pages`` headers say where it is.
``GET /meetings/{id}`` is one meeting; ``POST /meetings`` makes one, and answers
an invalid body as the seed does: the meeting object with its fields null and
``errors: {field: [messages]}``, status 400.

``prospect_room_url`` (``{BASE}/meetings/{id}``) and ``presenter_room_url``
(``{BASE}/meetings/{id}/presenter``) are derived from the meeting id; the pages
behind them belong to the live meeting flow, which is not served yet.

Errors other than a meeting's validation are the relay's
``{"status": "error", "error": code, "message": ...}`` (the seed shows no body
for them). Bodies are declared once below (:mod:`relay.api.declare`).
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.errors import TokenExpired, TokenInvalid
from ..core.grants import ApiTokenClaim
from ..keys import check_secret
from ..storage.base import MEETING_STATUSES, MEETINGS_PER_MAX, Meeting, MeetingFilter
from ._http import ApiError, ErrorBody, service_of
from .declare import Operation, Param, Security, Surface, decode, read_body, reply

__all__ = ["surface", "meeting_json"]

PER_DEFAULT = 20
PAGE_MAX = 1_000_000

MeetingStatus = Literal["scheduled", "in_progress", "closed", "cancelled"]
assert MEETING_STATUSES == ("scheduled", "in_progress", "closed", "cancelled")

# JSON Schema patterns (ECMAScript); checked whole (re.fullmatch) here.
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_URL = r"^https?://[^\s/?#]+[^\s]*$"
Email = Annotated[str, Meta(pattern=_EMAIL, max_length=254, description="an email address")]
HttpUrl = Annotated[str, Meta(pattern=_URL, max_length=2048, description="an http(s) URL")]
StartsAt = Annotated[datetime, Meta(tz=True, description="ISO 8601 with an offset: 2021-10-30T14:29:33.000+02:00")]
CookieName = Annotated[str, Meta(max_length=255)]
CookieValue = Annotated[str, Meta(max_length=4096)]


# --- bodies ----------------------------------------------------------------------------------
class CoClickCredentials(Struct):
    """``POST /authenticate``: the API key's two parts, as ``keys create`` printed them."""

    secret_id: Annotated[str, Meta(max_length=256)]
    secret_key: Annotated[str, Meta(max_length=256)]


class CoClickToken(Struct, kw_only=True):
    token: str
    expires_at: str  # 2022-06-30T15:23:34.752+00:00
    company: str


class CoClickCookie(Struct, forbid_unknown_fields=True):
    """One cookie the cobrowsing session starts with."""

    domain: CookieName
    name: CookieName
    value: CookieValue


Cookies = Annotated[list[CoClickCookie], Meta(max_length=50)]
MEETING_BODY_LIMIT = 512 * 1024  # past the largest body the schema allows, custom_data aside


class CoClickMeetingIn(Struct):
    """``POST /meetings``. Fields not listed are ignored (the room URLs too: they are derived)."""

    user: Email
    starts_at: StartsAt
    cobrowsing_url: HttpUrl
    cobrowsing_cookies_data: Cookies | None = None
    custom_data: dict[str, Any] | None = None
    presenter_waiting_room_iframe_url: HttpUrl | None = None
    prospect_waiting_room_iframe_url: HttpUrl | None = None
    prospect_room_url: str | None = None  # accepted and ignored
    presenter_room_url: str | None = None  # accepted and ignored


class CoClickMeeting(Struct, kw_only=True):
    """One meeting: ``token`` is its id (as the seed's examples name it; ``id`` as its table does)."""

    token: str
    status: MeetingStatus
    starts_at: str
    duration: int | None
    cobrowsing_url: str
    cobrowsing_cookies_data: list[CoClickCookie]
    user: str
    custom_data: dict[str, Any] | None
    presenter_waiting_room_iframe_url: str | None
    prospect_waiting_room_iframe_url: str | None
    prospect_room_url: str
    presenter_room_url: str
    id: str


class CoClickMeetingErrors(Struct, kw_only=True):
    """A refused ``POST /meetings`` (400): the meeting's fields empty, and each field's messages."""

    token: None = None
    status: Literal["scheduled"] = "scheduled"
    starts_at: None = None
    duration: None = None
    cobrowsing_url: None = None
    cobrowsing_cookies_data: list[CoClickCookie] = msgspec.field(default_factory=list)
    user: None = None
    custom_data: None = None
    presenter_waiting_room_iframe_url: None = None
    prospect_waiting_room_iframe_url: None = None
    prospect_room_url: None = None
    presenter_room_url: None = None
    errors: dict[str, list[str]]


class CoClickMeetingItem(Struct, kw_only=True):
    """A meeting in the list."""

    id: str
    user: str
    status: MeetingStatus
    starts_at: str


# --- helpers ---------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    """2021-10-30T12:29:33.000+00:00: the seed's format, in UTC."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _room_urls(request: Request, meeting_id: str) -> tuple[str, str]:
    """(prospect, presenter) room URLs of a meeting."""
    base = service_of(request).settings.base_url
    return f"{base}/meetings/{meeting_id}", f"{base}/meetings/{meeting_id}/presenter"


def meeting_json(request: Request, m: Meeting) -> CoClickMeeting:
    prospect, presenter = _room_urls(request, m.id)
    return CoClickMeeting(
        token=m.id,
        status=m.status,  # type: ignore[arg-type]  # the store keeps only MEETING_STATUSES
        starts_at=_iso(m.starts_at),
        duration=m.duration,
        cobrowsing_url=m.cobrowsing_url,
        cobrowsing_cookies_data=[CoClickCookie(**c) for c in m.cobrowsing_cookies_data],
        user=m.user,
        custom_data=m.custom_data,
        presenter_waiting_room_iframe_url=m.presenter_waiting_room_iframe_url,
        prospect_waiting_room_iframe_url=m.prospect_waiting_room_iframe_url,
        prospect_room_url=prospect,
        presenter_room_url=presenter,
        id=m.id,
    )


# --- auth ------------------------------------------------------------------------------------
def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="coclick"'})


async def _authenticated(request: Request) -> None:
    """401 unless ``Authorization: Bearer <token>`` is a genuine, unexpired token of a key still active."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("invalid_token", "send Authorization: Bearer <token> (POST /api/v1/authenticate)")
    service = service_of(request)
    try:
        claim = service.signer.read_api_token(token.strip())
    except TokenExpired:
        raise _unauthorized("token_expired", "the token has expired: authenticate again") from None
    except TokenInvalid:
        raise _unauthorized("invalid_token", "the token is not one this relay issued") from None
    key = await service.store.get_api_key(claim.key)
    if key is None or key.kind != "coclick" or key.revoked_at is not None:
        raise _unauthorized("invalid_token", "the API key of this token was revoked")


async def authenticate(request: Request, body: CoClickCredentials) -> Response:
    service = service_of(request)
    key = await service.store.get_api_key(body.secret_id) if body.secret_id else None
    if key is None or key.kind != "coclick" or not check_secret(key, body.secret_key):
        check_secret(None, body.secret_key)  # the same work whether the id exists or not
        raise _unauthorized("invalid_credentials", "secret_id and secret_key are not an active CoClick API key")
    expires = round(time.time() + service.settings.api_token_ttl, 3)
    token = service.signer.api_token(ApiTokenClaim(key=key.id, expires=expires))
    return reply(CoClickToken(token=token, expires_at=_iso(expires), company=key.company))


# --- the meeting body: every field's errors at once, in the seed's shape ---------------------
class _Invalid(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


_MISSING_MESSAGES = {
    "user": ["User must exist"],
    "starts_at": ["please specify a start date"],
    "cobrowsing_url": ["Please specify a cobrowsing URL", "Cobrowsing URL is not valid"],
}
_INVALID_MESSAGES = {
    "user": "User is not a valid email address",
    "starts_at": "Start date is not valid (ISO 8601 with an offset: 2021-10-30T14:29:33.000+02:00)",
    "cobrowsing_url": "Cobrowsing URL is not valid",
    "presenter_waiting_room_iframe_url": "Presenter waiting room iframe URL is not valid",
    "prospect_waiting_room_iframe_url": "Prospect waiting room iframe URL is not valid",
    "custom_data": "Custom data must be an object",
    "prospect_room_url": "Prospect room URL must be a string (it is ignored)",
    "presenter_room_url": "Presenter room URL must be a string (it is ignored)",
}
_PATTERNS = {
    "user": re.compile(_EMAIL.strip("^$")),
    "cobrowsing_url": re.compile(_URL.strip("^$")),
    "presenter_waiting_room_iframe_url": re.compile(_URL.strip("^$")),
    "prospect_waiting_room_iframe_url": re.compile(_URL.strip("^$")),
}


def decode_meeting(raw: bytes) -> CoClickMeetingIn:
    """``raw`` as a meeting to create; :class:`_Invalid` with every field's messages otherwise."""
    try:
        doc = msgspec.json.decode(raw.strip() or b"{}")
    except msgspec.DecodeError:
        raise _Invalid({"base": ["the body is not valid JSON"]}) from None
    if not isinstance(doc, dict):
        raise _Invalid({"base": ["the body must be a JSON object"]})
    errors: dict[str, list[str]] = {}
    for f in msgspec.structs.fields(CoClickMeetingIn):
        name = f.encode_name
        value = doc.get(name)
        if value is None or (value == "" and f.required):
            if f.required:
                errors[name] = list(_MISSING_MESSAGES[name])
            continue
        try:
            msgspec.convert(value, f.type)
        except msgspec.ValidationError as e:
            errors[name] = [_INVALID_MESSAGES.get(name) or _cookies_message(e)]
            continue
        pattern = _PATTERNS.get(name)
        if pattern is not None and not pattern.fullmatch(value):
            errors[name] = [_INVALID_MESSAGES[name]]
    if errors:
        raise _Invalid(errors)
    known = {f.encode_name for f in msgspec.structs.fields(CoClickMeetingIn)}
    return msgspec.convert({k: v for k, v in doc.items() if k in known}, CoClickMeetingIn)


def _cookies_message(e: msgspec.ValidationError) -> str:
    where = str(e).partition(" - at ")[0]
    return f"Cobrowsing cookies data is not valid: an array of {{domain, name, value}} strings ({where})"


# --- meetings --------------------------------------------------------------------------------
async def create_meeting(request: Request, body: CoClickMeetingIn) -> Response:
    now = time.time()
    meeting = Meeting(
        id=secrets.token_hex(32),
        user=body.user,
        starts_at=body.starts_at.timestamp(),
        cobrowsing_url=body.cobrowsing_url,
        cobrowsing_cookies_data=[msgspec.structs.asdict(c) for c in body.cobrowsing_cookies_data or []],
        custom_data=body.custom_data,
        presenter_waiting_room_iframe_url=body.presenter_waiting_room_iframe_url,
        prospect_waiting_room_iframe_url=body.prospect_waiting_room_iframe_url,
        created_at=now,
        updated_at=now,
    )
    await service_of(request).store.save_meeting(meeting)
    return reply(meeting_json(request, meeting), 201)


async def get_meeting(request: Request, _: None) -> Response:
    meeting_id = request.path_params["meeting_id"]
    meeting = await service_of(request).store.get_meeting(meeting_id) if len(meeting_id) <= 128 else None
    if meeting is None:
        raise ApiError(404, "not_found", "no meeting has this id")
    return reply(meeting_json(request, meeting))


_FILTERS = {
    "user_email_cont": ("user_email", "cont"),
    **{f"{field}_{op}": (field, op) for field in ("status", "starts_at") for op in ("eq", "gt", "lt")},
}
_SPACE_OFFSET = re.compile(r" (\d\d:\d\d)$")  # "+02:00" sent unencoded in a query reads " 02:00"


def _filters(request: Request) -> list[MeetingFilter]:
    """The ``q[...]`` predicates; 400 naming the unknown ones, or the one whose value does not fit."""
    given = [(k, v) for k, v in request.query_params.multi_items() if k == "q" or k.startswith("q[")]
    unknown = sorted({k for k, _ in given if k[2:-1] not in _FILTERS or not k.endswith("]")})
    if unknown:
        known = ", ".join(f"q[{name}]" for name in _FILTERS)
        raise ApiError(400, "unknown_filter", f"unknown filter {', '.join(unknown)}; known: {known}", field=unknown[0])
    out = []
    for k, v in given:
        field, op = _FILTERS[k[2:-1]]
        value: str | float = v
        if field == "starts_at":
            try:
                value = msgspec.convert(_SPACE_OFFSET.sub(r"+\1", v.strip()), StartsAt).timestamp()
            except msgspec.ValidationError:
                message = f"{k} takes a date and time with an offset (2021-10-30T14:29:33.000+02:00)"
                raise ApiError(400, "invalid_filter", message, field=k) from None
        elif field == "status" and v not in MEETING_STATUSES:
            raise ApiError(400, "invalid_filter", f"{k} takes one of {', '.join(MEETING_STATUSES)}", field=k)
        elif len(v) > 254:
            raise ApiError(400, "invalid_filter", f"{k} is over 254 characters", field=k)
        out.append(MeetingFilter(field, op, value))  # type: ignore[arg-type]  # checked against _FILTERS
    return out


def _header_int(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.headers.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", raw.strip()) or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
        top = f" and {maximum}" if maximum is not None else ""
        raise ApiError(400, "invalid_header", f"{name} takes a whole number from 1{top}", field=name)
    return int(raw)


async def list_meetings(request: Request, _: None) -> Response:
    filters = _filters(request)
    page = _header_int(request, "X-Page", 1, PAGE_MAX)
    per = min(_header_int(request, "X-Per", PER_DEFAULT), MEETINGS_PER_MAX)
    meetings, total = await service_of(request).store.list_meetings(filters, page, per)
    items = [
        CoClickMeetingItem(id=m.id, user=m.user, status=m.status, starts_at=_iso(m.starts_at))  # type: ignore[arg-type]
        for m in meetings
    ]
    headers = {
        "X-Page": str(page),
        "X-Per": str(per),
        "X-Total": str(total),
        "X-Total-Pages": str(math.ceil(total / per)),
    }
    return reply(items, headers=headers)


# --- the surface: auth is async (the key is looked up), so it is this surface's own endpoint ---
Decoder = Callable[[bytes], Any]
_DECODERS: Mapping[type[Any], Decoder] = {CoClickMeetingIn: decode_meeting}


def _endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if not op.public:
            await _authenticated(request)
        body = None
        if op.body is not None:
            raw = await read_body(request, op.body_limit)
            kind = op.body
            try:
                body = _DECODERS[kind](raw) if kind in _DECODERS else decode(raw, kind)
            except _Invalid as e:
                return reply(CoClickMeetingErrors(errors=e.errors), 400)
        return await op.handler(request, body)

    return endpoint


@dataclass(frozen=True)
class _BearerSurface(Surface):
    """A surface whose guard checks a bearer token against the store (so awaits)."""

    def routes(self) -> list[Route]:
        return [
            Route(self.mount + op.path, _endpoint(op), methods=[op.method], name=op.operation_id(self.mount))
            for op in self.operations
        ]


_PAGE = Param(
    "X-Page", "header", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "page number (from 1; default 1)"
)
_PER = Param(
    "X-Per",
    "header",
    {"type": "integer", "minimum": 1},
    f"page size (default {PER_DEFAULT}; more than {MEETINGS_PER_MAX} counts as {MEETINGS_PER_MAX})",
)
_DATE_TIME = {"type": "string", "format": "date-time"}
_STATUS = {"type": "string", "enum": list(MEETING_STATUSES)}
_Q = [
    Param("q[user_email_cont]", "query", {"type": "string", "maxLength": 254}, "the owner's email contains (any case)"),
    *(
        Param(f"q[status_{op}]", "query", _STATUS, f"status {word} (in the order {', '.join(MEETING_STATUSES)})")
        for op, word in (("eq", "is"), ("gt", "comes after"), ("lt", "comes before"))
    ),
    *(
        Param(f"q[starts_at_{op}]", "query", _DATE_TIME, f"starts {word} (ISO 8601 with an offset)")
        for op, word in (("eq", "exactly at"), ("gt", "after"), ("lt", "before"))
    ),
]
_MEETING_ID = Param("meeting_id", "path", {"type": "string", "minLength": 1}, "the meeting's id (its token)")

surface = _BearerSurface(
    name="coclick",
    mount="/api/v1",
    description=(
        "The CoClick meetings API (seed 003). POST /api/v1/authenticate with an API key's secret_id and secret_key "
        "(`cobrowse-relay keys create --kind coclick`) for a bearer token valid API_TOKEN_TTL seconds; every other "
        "call carries `Authorization: Bearer <token>`. A revoked key's tokens stop working at once."
    ),
    security=Security("coclickBearer", {"type": "http", "scheme": "bearer"}),
    errors={
        401: "`invalid_token` or `token_expired`: no bearer token, a wrong or expired one, or its key was revoked",
        503: "`unavailable`: the store did not answer (cluster mode); retry",
    },
    operations=[
        Operation(
            "POST",
            "/authenticate",
            authenticate,
            "A bearer token for an API key (valid API_TOKEN_TTL seconds)",
            {
                200: (CoClickToken, "the token, when it expires, and the key's company"),
                400: (ErrorBody, "`missing_field`, `invalid_field` or `invalid_json`"),
                401: (ErrorBody, "`invalid_credentials`: not an active CoClick API key"),
                503: (ErrorBody, "`unavailable`: the store did not answer (cluster mode); retry"),
            },
            body=CoClickCredentials,
            body_limit=4096,
            public=True,
        ),
        Operation(
            "GET",
            "/meetings",
            list_meetings,
            "Meetings, newest first: q[...] filters, X-Page / X-Per pages",
            {
                200: (list[CoClickMeetingItem], "a page of meetings (X-Page, X-Per, X-Total, X-Total-Pages headers)"),
                400: (ErrorBody, "`unknown_filter`, `invalid_filter` or `invalid_header` (`field` names it)"),
            },
            params=[*_Q, _PAGE, _PER],
            description=(
                "Filters are and-ed; status compares in the order scheduled < in_progress < closed < cancelled. "
                "The answer's headers: X-Page, X-Per (the page size used), X-Total (meetings passing the filters), "
                "X-Total-Pages."
            ),
        ),
        Operation(
            "GET",
            "/meetings/{meeting_id}",
            get_meeting,
            "One meeting",
            {200: (CoClickMeeting, "the meeting"), 404: (ErrorBody, "`not_found`: no meeting has this id")},
            params=[_MEETING_ID],
        ),
        Operation(
            "POST",
            "/meetings",
            create_meeting,
            "Create a meeting (status scheduled)",
            {
                201: (CoClickMeeting, "the meeting made"),
                400: (CoClickMeetingErrors, "the body is invalid: `errors` has each field's messages"),
            },
            body=CoClickMeetingIn,
            body_limit=MEETING_BODY_LIMIT,
        ),
    ],
)
