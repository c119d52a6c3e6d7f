"""The on-premise REST API (seed 000): ``{BASE}/api/visitors/...``.

Off (404 ``api_not_enabled``) unless ``REST_KEY`` is set; ``Authorization:
<REST_KEY>`` on every call, at most ``REST_RATE`` calls a minute. Errors:
``{"status": "error", "error": <code>, "message": ...}`` with a 4xx status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from protocol import PERMISSION_FLAGS

from ..core.errors import NotFound
from ..core.service import WatchRequest
from ..storage.base import SessionRecord, Visitor, parse_search
from ._http import JSON, ApiError, check_api_enabled, check_rest_key, ok, read_json, service_of

__all__ = ["routes", "index", "visitor_json", "session_json", "parse_watch_request"]

_ENDPOINTS = (
    "GET /api/visitors/list/latest, GET /api/visitors/list/search?search=, "
    "GET /api/visitors/{id}, POST /api/visitors/{id}/watch_url"
)


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def visitor_json(v: Visitor) -> dict[str, Any]:
    return {
        "short_id": v.short_id,
        "unique_id": v.unique_id or None,
        "identities": v.identities or None,
        "tags": v.tags,
        "lookup_code": v.lookup_code or None,
        "device_type": v.device_type or None,
        "device_name": None,
        "browser_name": v.browser or None,
        "ip_address": v.ip or None,
        "last_url": v.last_url or None,
        "location_city": None,
        "location_country": None,
        "first_seen_at": _iso(v.first_seen),
        "last_seen_at": _iso(v.last_seen),
        "is_online": v.online,
        "is_in_session": v.in_session,
        "_type": "visitor",
    }


def session_json(s: SessionRecord) -> dict[str, Any]:
    length = int(s.length)
    return {
        "id": s.id,
        "length_seconds": length,
        "formatted_length": _formatted(length),
        "started_at": _iso(s.started),
        "ended_at": _iso(s.ended),
        "went_live": s.went_live,
        "features_used": s.features_used,
        "visitor_id": s.visitor,
        "agents": [{"id": a.get("id"), "name": a.get("name"), "_type": "external_agent"} for a in s.agents],
        "observer": s.observer or None,
        "metadata": s.metadata,
        "_type": "session",
    }


def _formatted(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}" if seconds else "-"
    minutes = seconds // 60
    return f"{minutes} minute{'s' * (minutes != 1)}"


async def index(request: Request) -> JSON:
    """``GET /api``: nothing lives here; a 404 in the error shape naming the endpoints."""
    check_api_enabled(request)
    raise ApiError(404, "not_found", f"no endpoint at /api itself; the API is {_ENDPOINTS}")


async def latest(request: Request) -> JSON:
    check_rest_key(request)
    visitors = await service_of(request).latest_visitors()
    return ok(visitors=[visitor_json(v) for v in visitors])


async def search(request: Request) -> JSON:
    check_rest_key(request)
    service = service_of(request)
    query = request.query_params.get("search", "").strip()
    if len(query) > 512:
        raise ApiError(400, "invalid_search", "search is over 512 characters", field="search")
    if not query:
        visitors = await service.latest_visitors()
    else:
        try:
            parsed = parse_search(query)
        except ValueError as e:
            raise ApiError(400, "invalid_search", str(e), field="search") from None
        visitors = await service.search_visitors(parsed)
    return ok(visitors=[visitor_json(v) for v in visitors])


async def get_visitor(request: Request) -> JSON:
    check_rest_key(request)
    service = service_of(request)
    short_id = request.path_params["visitor_id"]
    try:
        visitor = await service.get_visitor(short_id)
    except NotFound:
        raise ApiError(404, "not_found", "visitor not found") from None
    body = visitor_json(visitor)
    body["sessions"] = [session_json(s) for s in await service.sessions_for(short_id)]
    return ok(visitor=body)


async def live_session(request: Request) -> JSON:
    """``GET /api/live_sessions/{code}``: the visitor holding a 9-digit session token (what the
    visitor read out to the agent: the console's "Join by code")."""
    check_rest_key(request)
    service = service_of(request)
    code = request.path_params["code"]
    short_id = await service.store.visitor_of_code(code) if code.isdigit() and len(code) == 9 else None
    if short_id is None:
        raise ApiError(404, "not_found", "no live session has this code (it may have expired)")
    try:
        visitor = await service.get_visitor(short_id)
    except NotFound:
        raise ApiError(404, "not_found", "the visitor of this code is gone") from None
    return ok(visitor=visitor_json(visitor))


async def watch_url(request: Request) -> JSON:
    check_rest_key(request)
    service = service_of(request)
    short_id = request.path_params["visitor_id"]
    req = parse_watch_request(short_id, await read_json(request))
    try:
        url = await service.watch_url(req)
    except NotFound:
        raise ApiError(404, "not_found", "visitor not found") from None
    return ok(watch_url=url)


# --- request validation ----------------------------------------------------------
def _obj(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_field", f"{name} must be an object", field=name)
    return value


def _text(obj: dict[str, Any], key: str, field: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, "missing_field", f"{field} is required", field=field)
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ApiError(400, "invalid_field", f"{field} must be a string", field=field)
    text = str(value)
    if len(text) > 256:
        raise ApiError(400, "invalid_field", f"{field} is over 256 characters", field=field)
    return text


def _url(obj: dict[str, Any], key: str, field: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://", "/")) or len(value) > 2048:
        raise ApiError(400, "invalid_field", f"{field} must be an http(s) URL", field=field)
    return value


def _flag(obj: dict[str, Any], key: str, field: str, default: bool | None) -> bool | None:
    value = obj.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"{field} must be a boolean", field=field)
    return value


def parse_watch_request(short_id: str, body: Any) -> WatchRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    license_token = body.get("licenseToken")
    if license_token is not None and not isinstance(license_token, str):
        raise ApiError(400, "invalid_field", "licenseToken must be a string", field="licenseToken")
    agent = _obj(body, "agent")
    agent_id = _text(agent, "id", "agent.id", required=True)
    agent_name = _text(agent, "name", "agent.name", required=True)
    branding_in = _obj(body, "branding")
    unknown = set(branding_in) - {"naked", "no_bottom_bar", "on_end_url", "retry_url", "metadata"}
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError(400, "unknown_field", f"branding.{name} is not an option", field=f"branding.{name}")
    branding = {
        "naked": bool(_flag(branding_in, "naked", "branding.naked", False)),
        "no_bottom_bar": _flag(branding_in, "no_bottom_bar", "branding.no_bottom_bar", None),
        "on_end_url": _url(branding_in, "on_end_url", "branding.on_end_url"),
        "retry_url": _url(branding_in, "retry_url", "branding.retry_url"),
    }
    perms_in = _obj(body, "permissions")
    for key in perms_in:
        if key not in PERMISSION_FLAGS:
            raise ApiError(400, "unknown_field", f"permissions.{key} is not a permission", field=f"permissions.{key}")
    granted = []
    for flag, (perm, default) in PERMISSION_FLAGS.items():
        if _flag(perms_in, flag, f"permissions.{flag}", default):
            granted.append(perm.value)
    observer = _obj(body, "observer")
    # The seed puts metadata at the top level; the cloud seed also under branding.
    metadata = {**_metadata(branding_in, "branding.metadata"), **_metadata(body, "metadata")}
    return WatchRequest(
        visitor=short_id,
        agent_id=agent_id,
        agent_name=agent_name,
        permissions=tuple(sorted(granted)),
        branding=branding,
        observer_id=_text(observer, "id", "observer.id"),
        observer_name=_text(observer, "name", "observer.name"),
        metadata=metadata,
    )


def _metadata(body: dict[str, Any], field: str) -> dict[str, Any]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_field", f"{field} must be a flat object", field=field)
    if len(value) > 50:
        raise ApiError(400, "invalid_field", f"{field} has over 50 keys", field=field)
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) or (isinstance(item, str) and len(item) > 1024):
            raise ApiError(
                400,
                "invalid_field",
                f"{field}.{key} must be a string, number or boolean",
                field=f"{field}.{key}",
            )
        if len(key) > 128:
            raise ApiError(400, "invalid_field", f"{field} has a key over 128 characters", field=field)
    return dict(value)


routes = [
    Route("/visitors/list/latest", latest, methods=["GET"]),
    Route("/visitors/list/search", search, methods=["GET"]),
    Route("/visitors/{visitor_id}", get_visitor, methods=["GET"]),
    Route("/visitors/{visitor_id}/watch_url", watch_url, methods=["POST"]),
    Route("/live_sessions/{code}", live_session, methods=["GET"]),
]
