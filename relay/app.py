"""``create_app(settings)``: routes, and a lifespan that builds store, service, hub.

Nothing is global: every shared object is built here and reached through
``app.state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from protocol import CloseCode

from . import metrics
from .api import onprem, pages
from .api._http import JSON, ApiError, api_http_error
from .core.restore import RELAY_RESTART, restore
from .core.service import Service
from .logs import event
from .settings import Settings
from .storage import open_storage
from .transport.ws import device_endpoint, viewer_endpoint, visitor_endpoint

__all__ = ["create_app"]

log = logging.getLogger("relay")


async def health(request: Request) -> Response:
    """200 with an empty body when ready; 503 when starting, draining or the store is down."""
    state = request.app.state
    service: Service | None = getattr(state, "service", None)
    if service is None or service.draining or not state.ready or not await metrics.timed_ping(state, service.store):
        return Response(status_code=503)
    return Response(status_code=200)


async def stats(request: Request) -> Response:
    service: Service = request.app.state.service
    return JSON(service.stats())


def _routes() -> list[BaseRoute]:
    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/api", onprem.index, methods=["GET", "HEAD"]),
        Mount("/api", routes=onprem.routes),
        WebSocketRoute("/ws/visitor", visitor_endpoint),
        WebSocketRoute("/ws/viewer", viewer_endpoint),
        WebSocketRoute("/ws/device", device_endpoint),
        *pages.routes,
    ]


async def _api_error(request: Request, exc: Exception) -> Response:
    """An :class:`ApiError` raised by an API handler: its JSON error shape."""
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 4xx (no route, wrong method): in the API's JSON error shape
    under /api, one plain line elsewhere."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    base = request.app.state.settings.base_path
    if path.startswith(base + "/api/") or path == base + "/api":
        return api_http_error(request, exc.status_code, dict(exc.headers or {}))
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)


async def _sweeper(service: Service) -> None:
    """Every second: stuck peers and expired rooms. Every hour (and at start): old visitors."""
    passes = 0
    while True:
        try:
            service.hub.sweep()
            service.addresses.prune(time.monotonic())
            if passes % 3600 == 0:
                await _expire_visitors(service)
        except Exception:  # keep sweeping whatever one pass hit
            log.exception("sweep failed")
        passes += 1
        await asyncio.sleep(1.0)


async def _expire_visitors(service: Service) -> None:
    days = service.settings.visitor_retention_days
    if days > 0:
        gone = await service.store.expire_visitors(time.time() - days * 86400.0)
        if gone:
            log.info("deleted %d visitors that never had a session, unseen for %g days", gone, days)


async def _restore(service: Service) -> None:
    """Rebuild the rooms of sessions open when the relay stopped; close those it cannot."""
    restored = restore(service.hub, await service.store.open_sessions())
    if restored.unrestorable:
        ids = [r.id for r in restored.unrestorable]
        await service.store.close_sessions(ids, time.time(), RELAY_RESTART)
    for room in restored.rooms:
        event("session_restored", session=room.session_id, visitor=room.visitor_id, epoch=room.epoch)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_storage(settings)
        await store.open()
        await store.mark_all_offline()
        service = Service(settings, store)
        await _restore(service)
        app.state.service = service
        app.state.metrics = metrics.RelayMetrics(service, app.state)  # a registry of its own, never the global one
        sweeper = asyncio.get_running_loop().create_task(_sweeper(service))
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            drain(app)
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await service.flush()
            await store.close()

    routes = _routes()
    if settings.base_path:
        routes = [Mount(settings.base_path, routes=routes)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.settings = settings
    app.state.ready = False
    app.state.bundles = pages.BundleCache(pages.WEB_DIR / "dist")
    return app


def drain(app: Starlette) -> None:
    """Turn /health to 503, then close every socket with 1001 (going away)."""
    service: Service | None = getattr(app.state, "service", None)
    if service is None or service.draining:
        return
    service.draining = True
    service.hub.close_all(CloseCode.GOING_AWAY, "relay shutting down")
