"""uvicorn's sans-I/O websocket protocol with a direct path below ASGI.

Starlette still routes, checks the handshake and accepts. After the relay's
endpoint has admitted a peer it calls :meth:`RelayWebSocketProtocol.attach`:
from then on each received binary message is handed to the hub straight from
``data_received`` (no asyncio queue, no ASGI message dict, no task switch),
and the hub writes frames straight to the transport. PERFORMANCE-NOTES.md
measured this path at about 10 µs per delivered 1 KiB frame against 12.5-14
for the ASGI path. The object is the hub's :class:`~relay.core.hub.Link`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode as WsCloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from protocol import CloseCode

from .limits import wire_of

__all__ = ["RelayWebSocketProtocol", "LINK_KEY"]

LINK_KEY = "cobrowse.link"
_HIGH, _LOW = 256 * 1024, 64 * 1024  # the transport's write-buffer marks, and the hub's high water
log = logging.getLogger("relay.transport")


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol, closing oversize messages with our 4501."""

    def fail(self, code: WsCloseCode | int, reason: str = "") -> None:
        if code == WsCloseCode.MESSAGE_TOO_BIG:
            code, reason = CloseCode.FRAME_TOO_BIG, "too_big"
        super().fail(code, reason)


def _header(n: int) -> bytes:
    # FIN + binary opcode; server frames are unmasked (RFC 6455 5.1).
    if n < 126:
        return bytes((0x82, n))
    if n < 65536:
        return b"\x82\x7e" + n.to_bytes(2, "big")
    return b"\x82\x7f" + n.to_bytes(8, "big")


class _NoQueue:
    """Stands in for uvicorn's per-connection asyncio.Queue once no endpoint reads it."""

    __slots__ = ()

    def put_nowait(self, item: object) -> None:
        pass

    def empty(self) -> bool:
        return True


_NO_QUEUE = _NoQueue()


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module docstring. Frames written to a link are batched: they
    are handed to the transport in one ``writelines`` (one ``writev``) at the
    end of the read that produced them, or on the next loop turn when written
    from elsewhere. One read often carries dozens of frames; without batching
    each frame cost each viewer a system call."""

    close_timeout = 5.0
    _dirty: ClassVar[list[RelayWebSocketProtocol]] = []  # links with batched frames (one loop per process)
    _flush_scheduled: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Same settings as uvicorn's, minus compression (frames are forwarded
        # as they came; recompressing per viewer is what must never happen).
        self.conn = _ServerProtocol(
            extensions=[],
            max_size=self.config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )
        self.sink: Callable[[bytes], None] | None = None
        self.on_drain: Callable[[], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.release: Callable[[], None] | None = None  # called once when the socket is gone, attached or not
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.wire, self.budget = wire_of(self.config)
        self.deadline = 0.0  # loop time by which the peer must be admitted (set by the HTTP protocol)
        self._deadline_timer: asyncio.TimerHandle | None = None
        # The unfinished inbound message: bytes held, when it began, bytes read since.
        self._pending = 0
        self._msg_start = 0.0
        self._msg_read = 0
        self._rate_timer: asyncio.TimerHandle | None = None

    # --- handshake: publish the link to the endpoint -------------------------------------
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None and self.response.status_code == 101:
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[LINK_KEY] = self

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=_HIGH, low=_LOW)
        deadline = self.deadline or self.loop.time() + self.wire.handshake_timeout
        self._deadline_timer = self.loop.call_at(deadline, self._handshake_expired)

    def _handshake_expired(self) -> None:
        """Not admitted by the deadline, whatever it was doing: 4006 after the upgrade, 408 before."""
        self._deadline_timer = None
        if self.on_lost is not None or self.disconnected or self.close_sent:
            return
        if self.handshake_complete:
            self.close(CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")
            return
        self.close_sent = self.handshake_complete = True
        if self.conn.state is State.CONNECTING and not self.conn.eof_sent:
            self.conn.send_response(self.conn.reject(408, "handshake timeout\n"))
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        self.transport.close()

    def set_max_message(self, size: int) -> None:
        """The largest message this socket may send from now on (the hub raises it once a session is live)."""
        self.conn.max_message_size = size

    def attach(self, sink: Callable[[bytes], None], on_drain: Callable[[], None], on_lost: Callable[[], None]) -> None:
        """Switch to the direct path; messages already queued go to ``sink`` first.

        From here the protocol object owns the connection: the endpoint may
        return, and ``on_lost`` is called once when the connection ends. An idle
        socket then costs no ASGI task and no parked coroutine frames.
        """
        self.on_lost = on_lost
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        pending: list[dict[str, Any]] = []
        while not self.queue.empty():
            pending.append(dict(self.queue.get_nowait()))
        self.sink, self.on_drain = sink, on_drain
        for message in pending:
            data = message.get("bytes")
            if message["type"] == "websocket.receive" and isinstance(data, bytes):
                sink(data)
            else:
                self.queue.put_nowait(message)  # type: ignore[arg-type]
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()

    def release_handshake(self) -> None:
        """Drop what only the handshake and the endpoint needed (idle sockets are many)."""
        if self.queue.empty():
            self.queue = _NO_QUEUE  # type: ignore[assignment]
        self.scope = {}  # type: ignore[typeddict-item]
        self.request = self.response = None  # type: ignore[assignment]

    # --- batching -------------------------------------------------------------------------
    @classmethod
    def flush_all(cls) -> None:
        cls._flush_scheduled = False
        dirty, cls._dirty = cls._dirty, []
        for link in dirty:
            link.flush()

    def flush(self) -> None:
        out = self._out
        if out:
            batched = self._out_bytes
            self._out = []
            self._out_bytes = 0
            if not (self.disconnected or self.close_sent or self.transport.is_closing()):
                transport = self.transport
                full = transport.get_write_buffer_size() + batched >= _HIGH
                transport.writelines(out)
                if full and self.on_drain is not None and transport.get_write_buffer_size() <= _HIGH:
                    # The hub saw this link full and held frames back, but the kernel took
                    # enough that the transport did not pause: it will never resume.
                    self.loop.call_soon(self._drained)

    def _drained(self) -> None:
        if self.on_drain is not None and not self.close_sent:
            self.on_drain()

    # uvicorn's own closing paths write the close frame themselves: batched
    # frames go first, and nothing may follow a close frame.
    def handle_close(self, event: Any) -> None:
        self.flush()
        super().handle_close(event)

    def handle_parser_exception(self) -> None:
        """websockets failed the connection (too big, bad framing): its close frame is
        written, then the socket lingers so the peer reads the code, not a reset."""
        if self.close_sent:
            return
        sent = self.conn.close_sent
        self._failed(sent.code if sent is not None else 1006, "")

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` and stop reading messages: what is still in flight is discarded."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.fail(code, reason[:120])  # queued in conn: _failed writes batched frames first
        self._failed(code, reason)

    def _failed(self, code: int, reason: str) -> None:
        """websockets has failed the connection: write its close frame, then linger.

        Half-close, then read and discard until the peer closes or ``linger``
        passes. Closing a socket with unread bytes makes the kernel send a
        reset, which can overtake the close frame: the peer would read 1006
        ("retry") where the relay said 4501 ("do not retry")."""
        self.flush()
        self.sink = self.on_drain = None
        if self.on_lost is None:  # an endpoint is still waiting on the queue
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._settle(0)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(self.wire.linger, self.transport.abort)

    def shutdown(self) -> None:
        """uvicorn's, but a socket past its upgrade (admitted or not) is told 1001 like the others,
        through the closing handshake, not uvicorn's 1012."""
        self.flush()
        if self.handshake_complete and not (self.close_sent or self.disconnected):
            self.stop_keepalive()
            self.close(CloseCode.GOING_AWAY, "relay shutting down")
            return
        super().shutdown()

    def send_500_response(self) -> None:
        if self.conn.state is not State.CONNECTING or self.conn.eof_sent:
            return  # a response (a 4xx from the handshake parser) was already sent
        super().send_500_response()

    def data_received(self, data: bytes) -> None:
        if self.close_sent and self.conn.eof_sent:
            return  # failed: what is still in flight is dropped unparsed; the linger waits for EOF
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets refused the request head (too long, too many headers) and
            # queued its 4xx: uvicorn would never write it.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = self.handshake_complete = True
            self.transport.close()
            return
        if self._pending or self.frames or self.conn.reader.buffer:
            self._account(len(data))
        if RelayWebSocketProtocol._dirty:
            RelayWebSocketProtocol.flush_all()

    # --- the memory budget ------------------------------------------------------------
    def _account(self, n: int) -> None:
        """Count the bytes held in an unfinished message against the relay-wide budget."""
        if self.close_sent:
            self._settle(0)
            return
        held = len(self.conn.reader.buffer)
        if self.frames:
            held += sum(map(len, self.frames))
        if not held:
            self._settle(0)
            return
        if not self._pending:
            self._msg_start = self.loop.time()
            self._msg_read = 0
            self._rate_timer = self.loop.call_later(self.wire.recv_grace, self._check_rate)
        self._msg_read += n
        self._settle(held)
        budget = self.budget
        if held > self.wire.max_frame and budget.inflight > self.wire.max_inflight:
            budget.refused += 1
            self.fail(CloseCode.OVERLOADED, "relay busy: inbound budget spent")

    def _settle(self, held: int) -> None:
        budget = self.budget
        budget.inflight += held - self._pending
        budget.peak = max(budget.peak, budget.inflight)
        self._pending = held
        if not held and self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None

    def _check_rate(self) -> None:
        """A begun message must keep up MIN_RECV_RATE (time we paused reading does not count)."""
        self._rate_timer = None
        if not self._pending or self.close_sent or self.disconnected:
            return
        now = self.loop.time()
        if self.read_paused:
            self._msg_start, self._msg_read = now, 0
        elif self._msg_read < self.wire.min_recv_rate * (now - self._msg_start - self.wire.recv_grace):
            self.budget.slow += 1
            self.fail(CloseCode.SLOW_MESSAGE, "message arrived too slowly")
            return
        self._rate_timer = self.loop.call_later(1.0, self._check_rate)

    async def send(self, message: Any) -> None:
        """uvicorn's, except that nothing is sent once the relay closed the socket itself
        (e.g. its handshake deadline passed before a loaded loop ran the endpoint): the
        endpoint then ends quietly instead of tripping on a finished handshake."""
        if self.close_sent:
            raise ClientDisconnected()
        await super().send(message)

    # --- receiving ---------------------------------------------------------------------
    def send_receive_event_to_app(self) -> None:
        sink = self.sink
        if sink is None:
            super().send_receive_event_to_app()
            return
        if self.curr_msg_data_type != "bytes":
            self.frames = []
            self.close(CloseCode.PROTOCOL_ERROR, "wrong_type")  # binary frames only
            return
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.frames = []
        if not self.close_sent:
            sink(data)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_drain is not None and not self.close_sent:
            self.on_drain()

    def connection_lost(self, exc: Exception | None) -> None:
        lost, self.on_lost = self.on_lost, None
        release, self.release = self.release, None
        self.sink = self.on_drain = None
        self._out = []
        self._out_bytes = 0
        self._settle(0)
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        super().connection_lost(exc)
        if release is not None:
            release()
        if lost is not None:
            lost()

    async def run_asgi(self) -> None:
        """uvicorn's, except that an attached connection outlives the endpoint."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete and self.initial_response is None and not self.close_sent:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
        if self.close_timer is None and self.on_lost is None:
            self.transport.close()

    def keepalive_timeout(self) -> None:
        """No pong within PING_TIMEOUT: close with 4002 (uvicorn's own says 1011)."""
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.flush()
        self.sink = self.on_drain = None
        self.conn.fail(CloseCode.KEEPALIVE_TIMEOUT, "keepalive timeout")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    # --- the hub's Link -----------------------------------------------------------------
    def write(self, frame: bytes) -> None:
        if self.close_sent or self.disconnected:
            return
        out = self._out
        if not out:
            cls = RelayWebSocketProtocol
            cls._dirty.append(self)
            if not cls._flush_scheduled:
                cls._flush_scheduled = True
                self.loop.call_soon(cls.flush_all)
        out.append(_header(len(frame)))
        out.append(frame)
        self._out_bytes += len(frame)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel, batched ones included."""
        if self.disconnected:
            return 0
        return int(self.transport.get_write_buffer_size()) + self._out_bytes

    def close(self, code: int, reason: str = "") -> None:
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.flush()
        self.sink = self.on_drain = None
        if self.on_lost is None:  # an endpoint is still waiting on the queue
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.conn.state is not State.OPEN:
            # The peer's close frame came in the same read as its last message:
            # websockets has queued the echo; the closing handshake is done.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()
            return
        self.conn.send_close(code, reason[:120])
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # A peer that never reads would hold its buffer forever: abort after the timeout.
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
