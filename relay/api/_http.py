"""Shared HTTP helpers: JSON responses, the seed's error shape, REST key auth."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..core.service import Service

__all__ = ["JSON", "error", "ok", "service_of", "check_rest_key", "ApiError", "read_json"]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """A 4xx in the Upscope error shape: ``{"status": "error", "error": code, ...}``."""

    def __init__(self, status: int, code: str, message: str = "", **extra: Any) -> None:
        super().__init__(message or code)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> JSON:
        body: dict[str, Any] = {"status": "error", "error": self.code}
        if self.message:
            body["message"] = self.message
        body.update(self.extra)
        return JSON(body, status_code=self.status)


def error(status: int, code: str, message: str = "", **extra: Any) -> JSON:
    return ApiError(status, code, message, **extra).response()


def ok(**fields: Any) -> JSON:
    return JSON({"status": "ok", **fields})


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def check_rest_key(request: Request) -> None:
    """The REST API exists only with REST_KEY set; then every call must carry it."""
    key = service_of(request).settings.rest_key
    if key is None:
        raise ApiError(404, "api_not_enabled", "set REST_KEY to enable the REST API")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "invalid_api_key")


async def read_json(request: Request, limit: int = 64 * 1024) -> Any:
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "request_too_large", f"body over {limit} bytes")
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
