"""Shared HTTP helpers: JSON responses, the API's error shape, REST key auth and rate.

Every error under ``/api`` is ``{"status": "error", "error": code, "message": ...}``
(plus ``field`` where one field is at fault) with a 4xx status.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..core.limits import TokenBucket
from ..core.service import Service

__all__ = [
    "JSON",
    "ApiError",
    "ErrorBody",
    "RestLimiter",
    "api_http_error",
    "check_api_enabled",
    "check_rest_key",
    "error",
    "ok",
    "service_of",
]

# What a code means, for errors raised without a message of their own.
_MESSAGES = {
    "api_not_enabled": "the REST API is off: start the relay with REST_KEY set",
    "invalid_api_key": "missing or wrong Authorization header: send the REST_KEY the relay was started with",
    "not_found": "not found",
    "method_not_allowed": "method not allowed",
    "rate_limited": "too many calls with this key",
    "request_too_large": "the request body is too large",
    "bad_request": "bad request",
}


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error's body: ``status`` is always ``"error"``; ``error`` a code (``not_found``,
    ``missing_field``...); ``message`` a sentence for people; ``field`` the dotted path of
    the one field at fault, when there is one."""

    status: Literal["error"] = "error"
    error: str
    message: str
    field: str | msgspec.UnsetType = msgspec.UNSET


class ApiError(Exception):
    """A 4xx in the API's error shape: ``{"status": "error", "error": code, "message": ...}``.

    ``message`` defaults to a sentence for the code, so no error goes out without one;
    ``field`` (the one field at fault) is added to the body, ``headers`` to the response.
    The body is an :class:`ErrorBody`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        headers: dict[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        message = message or _MESSAGES.get(code, code.replace("_", " "))
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def response(self) -> Response:
        field = msgspec.UNSET if self.field is None else self.field
        body = ErrorBody(error=self.code, message=self.message, field=field)
        return Response(msgspec.json.encode(body), self.status, self.headers, "application/json")


def error(
    status: int, code: str, message: str = "", headers: dict[str, str] | None = None, field: str | None = None
) -> Response:
    return ApiError(status, code, message, headers, field).response()


def ok(**fields: Any) -> JSON:
    return JSON({"status": "ok", **fields})


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


class RestLimiter:
    """Token buckets, one per REST key: ``per_minute`` calls a minute, refilled
    continuously (``per_minute / 60`` a second), bursts of up to ``per_minute``."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """Spend one call of ``key``: 0.0 when allowed, else the seconds until one would be."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.per_minute / 60.0, float(self.per_minute), now)
        if bucket.take(1.0, now):
            return 0.0
        return (1.0 - bucket.tokens) / bucket.rate


def _limiter(request: Request) -> RestLimiter:
    """The app's limiter, made on first use (REST_RATE is fixed for the process)."""
    state = request.app.state
    limiter: RestLimiter | None = getattr(state, "rest_limiter", None)
    if limiter is None:
        limiter = state.rest_limiter = RestLimiter(service_of(request).settings.rest_rate)
    return limiter


def check_api_enabled(request: Request) -> str:
    """The REST key; 404 ``api_not_enabled`` when REST_KEY is unset."""
    key = service_of(request).settings.rest_key
    if key is None:
        raise ApiError(404, "api_not_enabled")
    return key


def check_rest_key(request: Request, header: str = "authorization", message: str = "") -> None:
    """The REST API exists only with REST_KEY set; then every call must carry it in ``header``
    (401 ``invalid_api_key`` with ``message``, compared in constant time) and stay within
    REST_RATE calls a minute (429 ``rate_limited`` with Retry-After)."""
    key = check_api_enabled(request)
    given = request.headers.get(header, "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "invalid_api_key", message)
    wait = _limiter(request).take(key)
    if wait > 0.0:
        retry = max(1, math.ceil(wait))
        rate = service_of(request).settings.rest_rate
        message = f"over REST_RATE ({rate} calls a minute for this key): retry in {retry} s"
        raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(retry)})


def api_http_error(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    """Starlette's own errors (no route, wrong method...) under /api, in the API's shape."""
    if service_of(request).settings.rest_key is None:
        return error(404, "api_not_enabled")
    path = request.url.path
    if status == 404:
        document = f"{service_of(request).settings.base_path}/api/openapi.json"
        return error(404, "not_found", f"no API endpoint at {path}; every endpoint is listed in {document}")
    if status == 405:
        allow = (headers or {}).get("Allow") or (headers or {}).get("allow", "")
        message = f"{request.method} is not allowed on {path}" + (f"; use {allow}" if allow else "")
        return error(405, "method_not_allowed", message, headers={"Allow": allow} if allow else None)
    code = {400: "bad_request", 413: "request_too_large", 429: "rate_limited"}.get(status, "bad_request")
    return error(status, code)
