"""``create_app(settings)``: routes, and a lifespan that builds store, service, hub.

Nothing is global: every shared object is built here and reached through
``app.state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator

import msgspec
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from protocol import CloseCode

from . import metrics
from .api import cloud, coclick, live, onprem, pages
from .api._http import JSON, ApiError, api_http_error
from .api.declare import openapi
from .core.restore import RELAY_RESTART, restore
from .core.service import Service
from .logs import event
from .settings import Settings
from .storage import open_storage
from .transport.ws import device_endpoint, viewer_endpoint, visitor_endpoint

__all__ = ["SURFACES", "create_app"]

log = logging.getLogger("relay")

# Every REST surface: its routes and its part of the OpenAPI document at {BASE}/api/openapi.json.
SURFACES = (onprem.surface, live.surface, cloud.surface, coclick.surface)


async def health(request: Request) -> Response:
    """200 with an empty body when ready; 503 when starting, draining or the store is down
    (cluster mode: also while this node's heartbeat is stale or its bus is not listening)."""
    state = request.app.state
    service: Service | None = getattr(state, "service", None)
    if service is None or service.draining or not state.ready:
        return Response(status_code=503)
    if service.cluster is not None and not service.cluster.healthy():
        return Response(status_code=503)
    if not await metrics.timed_ping(state, service.store):
        return Response(status_code=503)
    return Response(status_code=200)


async def stats(request: Request) -> Response:
    """This node's counters; in cluster mode also ``node`` and ``nodes`` (the cluster view:
    every live node with its sessions, sockets and visitors, from their heartbeats)."""
    service: Service = request.app.state.service
    body: dict[str, object] = {**service.stats(), "node": service.settings.node_name}
    if service.cluster is not None:
        try:
            nodes = await service.cluster.nodes()
        except (RedisError, OSError):
            nodes = []
        body["nodes"] = [
            {"name": n.name, "url": n.url, "sessions": n.sessions, "sockets": n.sockets, "visitors": n.visitors}
            for n in nodes
        ]
    return JSON(body)


def _routes() -> list[BaseRoute]:
    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        *(route for surface in SURFACES for route in surface.routes()),
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
    if path.startswith(base + "/rest/live/"):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})).response()
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)


async def _store_down(request: Request, exc: Exception) -> Response:
    """Cluster mode: Redis did not answer a request's read or write: 503, retryable, no traceback."""
    log.warning("%s %s: the store did not answer: %s", request.method, request.url.path, exc)
    return ApiError(503, "unavailable", "the relay's store is unreachable; retry", {"Retry-After": "1"}).response()


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


def _version() -> str:
    try:
        return importlib.metadata.version("cobrowse-relay")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_storage(settings)
        await store.open()
        service = Service(settings, store)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(_sweeper(service))]
        if settings.cluster:
            from .cluster.shared import SharedCluster

            cluster = SharedCluster(settings, store, service.cluster_counts, service.addresses)
            await cluster.start(service.on_request)
            service.cluster = cluster
            tasks.append(loop.create_task(service.keep_leases()))
        else:
            await store.mark_all_offline()
            await _restore(service)
        app.state.service = service
        app.state.metrics = metrics.RelayMetrics(service, app.state)  # a registry of its own, never the global one
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            drain(app)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await service.flush()
            if service.cluster is not None:
                await service.cluster.stop()
            await store.close()

    routes = _routes()
    if settings.base_path:
        routes = [Mount(settings.base_path, routes=routes)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, RedisError: _store_down},
    )
    app.state.settings = settings
    app.state.openapi = msgspec.json.encode(openapi(SURFACES, settings.base_path, "cobrowse-relay", _version()))
    app.state.ready = False
    app.state.bundles = pages.BundleCache(pages.WEB_DIR / "dist")
    return app


def begin_drain(app: Starlette) -> bool:
    """Turn /health to 503 (new sockets are refused); False if already draining or not started."""
    service: Service | None = getattr(app.state, "service", None)
    if service is None or service.draining:
        return False
    service.draining = True
    event("draining", node=service.settings.node_name, delay=service.settings.drain_delay)
    return True


def drain(app: Starlette) -> None:
    """Turn /health to 503, give up this node's sessions (cluster mode: others take them over at
    once) and close every socket with 1001 (going away). Once."""
    service: Service | None = getattr(app.state, "service", None)
    if service is None or getattr(app.state, "drained", False):
        return
    app.state.drained = True
    service.draining = True
    service.release_all()
    service.hub.close_all(CloseCode.GOING_AWAY, "relay shutting down")
