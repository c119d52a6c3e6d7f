"""Websocket endpoints: handshake, admission, then the direct path.

Each endpoint checks what must be refused before the upgrade (origin,
draining), reads ``HELLO``, asks the service to admit the peer, attaches the
link to the hub and waits for the socket to close.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.websockets import WebSocket

from protocol import PROTOCOL_VERSION, CloseCode, Error, Hello, ProtocolError, decode, encode

from ..core.errors import Moved, RelayError
from ..core.service import ClientInfo, Service
from ..logs import event
from .direct import LINK_KEY, RelayWebSocketProtocol

__all__ = ["visitor_endpoint", "viewer_endpoint", "device_endpoint"]

log = logging.getLogger("relay.ws")


async def visitor_endpoint(ws: WebSocket) -> None:
    await _serve(ws, "visitor")


async def viewer_endpoint(ws: WebSocket) -> None:
    await _serve(ws, "viewer")


async def device_endpoint(ws: WebSocket) -> None:
    await _serve(ws, "device")


async def _serve(ws: WebSocket, role: str) -> None:
    service: Service = ws.app.state.service
    settings = service.settings
    origin = ws.headers.get("origin")
    if service.draining:
        await ws.send_denial_response(PlainTextResponse("draining", status_code=503))
        return
    if role == "visitor" and not settings.origin_allowed(origin):
        event("origin_refused", origin=origin or "")
        await ws.send_denial_response(PlainTextResponse("origin not allowed", status_code=403))
        return
    link = ws.scope.get("extensions", {}).get(LINK_KEY)
    if not isinstance(link, RelayWebSocketProtocol):
        await ws.send_denial_response(PlainTextResponse("unsupported server", status_code=500))
        return
    # Keyframe-sized messages only once a session is live (the hub raises it).
    link.set_max_message(settings.max_frame)
    ip = ws.client.host if ws.client else ""
    addresses = service.addresses
    if addresses.cooling(ip, time.monotonic()):
        await ws.send_denial_response(_cooling())
        return
    if not addresses.open_socket(ip):
        event("limit_hit", limit="MAX_SOCKETS_PER_IP", ip=ip, role=role)
        await ws.accept()
        _refuse(link, "rate_limited", "too many sockets from this address", CloseCode.RATE_LIMITED)
        await _closed(ws)
        return
    link.release = lambda: addresses.close_socket(ip)
    await ws.accept()
    try:
        hello = await asyncio.wait_for(_hello(ws, service), settings.handshake_timeout)
    except TimeoutError:
        link.close(CloseCode.HANDSHAKE_TIMEOUT, "no hello")
        await _closed(ws)
        return
    except ProtocolError as e:
        link.close(e.close_code, e.code)
        await _closed(ws)
        return
    except _Gone:
        return
    if hello.version != PROTOCOL_VERSION:
        message = f"relay speaks protocol {PROTOCOL_VERSION}, client {hello.version}"
        _refuse(link, "version_mismatch", message, CloseCode.UNSUPPORTED_VERSION)
        await _closed(ws)
        return
    client = ClientInfo(
        ip=ip,
        user_agent=ws.headers.get("user-agent", ""),
        origin=origin or "",
    )
    try:
        peer = await service.admit(role, hello, link, client)
    except Moved as e:  # cluster mode: the owner is another node; the client follows the hint
        link.write(service.moved_frame(e.node, e.url))
        link.close(e.close_code, "moved")
        await _closed(ws)
        return
    except RelayError as e:
        _refuse(link, e.code, str(e) or e.code, e.close_code)
        await _closed(ws)
        return
    except ProtocolError as e:
        _refuse(link, e.code, str(e), e.close_code)
        await _closed(ws)
        return
    except (RedisError, OSError) as e:  # cluster mode: Redis unreachable mid-admission; the client retries
        log.warning("admission of a %s failed: the store did not answer (%s)", role, e)
        _refuse(link, "unavailable", "the relay's store is unreachable; retry", CloseCode.INTERNAL_ERROR)
        await _closed(ws)
        return
    if link.disconnected:
        service.on_disconnect(peer)
        return
    # From here the link owns the connection; this coroutine ends.
    link.attach(
        lambda data: service.on_frame(peer, data),
        lambda: service.hub.drained(peer),
        lambda: service.on_disconnect(peer),
    )
    link.release_handshake()


def _cooling() -> JSONResponse:
    body = {"status": "error", "error": "rate_limited", "message": "this address broke a rate limit: retry later"}
    return JSONResponse(body, status_code=429, headers={"Retry-After": "1"})


class _Gone(Exception):
    pass


async def _hello(ws: WebSocket, service: Service) -> Hello:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise _Gone()
    data = message.get("bytes")
    if data is None:
        raise ProtocolError("wrong_type", "text frames are not accepted")
    msg = decode(data, service.settings.limits)
    if not isinstance(msg, Hello):
        raise ProtocolError("bad_value", f"expected HELLO, got {type(msg).__name__}")
    return msg


def _refuse(link: RelayWebSocketProtocol, code: str, message: str, close_code: int) -> None:
    link.write(encode(Error(code=code, message=message, close_code=close_code)))
    link.close(close_code, code)


async def _closed(ws: WebSocket) -> None:
    """Wait for a refused socket's closing handshake to finish."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass
