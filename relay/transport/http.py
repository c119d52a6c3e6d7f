"""uvicorn's httptools protocol with limits and deadlines below the app.

What an anonymous client can make the relay hold before any route runs:

* a request head: at most ``MAX_REQUEST_HEAD`` bytes and ``MAX_HEADERS``
  lines (431 otherwise), complete within ``HANDSHAKE_TIMEOUT`` of its first
  byte, or of the connection when nothing came (408);
* a request body: at most ``MAX_BODY`` bytes (413, refused from the
  ``Content-Length`` before a byte of it is buffered), complete within
  ``HANDSHAKE_TIMEOUT`` plus its size at ``MIN_RECV_RATE`` (408);
* a websocket upgrade: handed to :mod:`relay.transport.direct` with the same
  deadline, which then covers the upgrade and ``HELLO`` too.

Each refusal is written as a JSON error (the seeds' shape) with
``Connection: close`` and the socket is closed: never a silent hang.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .direct import RelayWebSocketProtocol
from .limits import wire_of

__all__ = ["RelayHttpProtocol"]


class RelayHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire, _ = wire_of(self.config)
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._in_head = True
        self._head_bytes = 0  # bytes read while the head is incomplete
        self._head_size = 0  # the completed head: URL and header lines
        self._body_left = 0
        self._refusal: tuple[int, str, str] | None = None

    # --- deadlines -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.wire.handshake_timeout, self._head_expired)

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.time() + delay
        self._timer = self.loop.call_at(self._deadline, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        self._refuse(408, "request_timeout", "the request head did not arrive in time")

    def _body_expired(self) -> None:
        self._timer = None
        self._refuse(408, "request_timeout", "the request body did not arrive in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_head = True  # the next request's head; uvicorn's keep-alive timer covers the idle wait
        self._head_bytes = 0

    # --- parsing -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_head:
            if self._timer is None:
                self._arm(self.wire.handshake_timeout, self._head_expired)
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            elif self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._refuse(400, "bad_request", "unsupported upgrade")
            return
        except httptools.HttpParserError:
            self._refuse(*(self._refusal or (400, "bad_request", "invalid HTTP request")))
            return
        if self._refusal is not None:
            self._refuse(*self._refusal)
        elif self._in_head and self._head_bytes > self.wire.max_request_head:
            self._refuse(431, "request_header_fields_too_large", "the request head is too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._body_left = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4
        if len(self.headers) > self.wire.max_headers:
            self._refusal = (431, "request_header_fields_too_large", "too many header lines")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        if self._head_size > self.wire.max_request_head:
            self._refusal = (431, "request_header_fields_too_large", "the request head is too large")
        if self._refusal is not None:
            return  # no app runs for a refused request
        if self.parser.should_upgrade() and self._should_upgrade():
            super().on_headers_complete()  # sets the method; starts nothing for an upgrade
            return  # the websocket keeps the head's deadline
        length = self._content_length()
        if length > self.wire.max_body:
            self._refusal = (413, "request_too_large", f"the body is over {self.wire.max_body} bytes")
            return
        super().on_headers_complete()
        if length or self._chunked():
            self._body_left = length or self.wire.max_body
            grace = self.wire.handshake_timeout + self._body_left / self.wire.min_recv_rate
            self._arm(grace, self._body_expired)

    def on_body(self, body: bytes) -> None:
        if self._refusal is not None or self.cycle is None:
            return
        self._body_left -= len(body)
        if self._body_left < 0:
            self._refusal = (413, "request_too_large", f"the body is over {self.wire.max_body} bytes")
            self.cycle.disconnected = True
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None or self.cycle is None:
            return
        self._disarm()
        super().on_message_complete()

    def _content_length(self) -> int:
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    return max(0, int(value))
                except ValueError:
                    return 0
        return 0

    def _chunked(self) -> bool:
        return any(n == b"transfer-encoding" and b"chunked" in v.lower() for n, v in self.headers)

    def _cooling(self) -> bool:
        app: Any = self.config.app
        service = getattr(app.state, "service", None)
        if service is None or service.settings.trusted_proxies or self.client is None:
            return False
        return bool(service.addresses.cooling(self.client[0], time.monotonic()))

    # --- refusing --------------------------------------------------------------------
    def _refuse(self, status: int, code: str, message: str) -> None:
        """Write one JSON error and close; nothing more is read from this socket."""
        self._disarm()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            if cycle.response_started:
                transport.close()
                return
        body = orjson.dumps({"status": "error", "error": code, "message": message})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
        transport.write(b"".join(head))
        transport.close()

    # --- upgrade ---------------------------------------------------------------------
    def handle_websocket_upgrade(self) -> None:
        """uvicorn's, with the head's deadline handed to the websocket protocol.

        An address cooling down after breaking a rate limit is refused here,
        before Starlette, when the peer is the client (no trusted proxy)."""
        self._disarm()
        if self._cooling():
            self._refuse(429, "rate_limited", "this address broke a rate limit: retry later")
            return
        self.connections.discard(self)
        output = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.scope["headers"]:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        cls: Any = self.config.ws_protocol_class
        protocol = cls(config=self.config, server_state=self.server_state, app_state=self.app_state)
        if isinstance(protocol, RelayWebSocketProtocol):
            protocol.deadline = self._deadline or self.loop.time() + self.wire.handshake_timeout
        protocol.connection_made(self.transport)
        protocol.data_received(b"".join(output))
        self.transport.set_protocol(protocol)
