"""The Cython ceiling: a minimal picows forwarder on uvloop.

Same contract as :mod:`bench.baseline_websockets`: routes by URL path
``/ws/<session>/<role>``, forwards every binary message of the visitor,
undecoded, to the session's viewers; viewers' messages are dropped.

    python -m bench.baseline_picows --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX_SIZE = 8 * 1024 * 1024


class Room:
    __slots__ = ("viewers", "visitors")

    def __init__(self) -> None:
        self.viewers: list[WSTransport] = []
        self.visitors = 0


ROOMS: dict[str, Room] = {}


class Peer(WSListener):
    __slots__ = ("buf", "room", "session", "transport", "visitor")

    def __init__(self, session: str, visitor: bool) -> None:
        self.session = session
        self.visitor = visitor
        room = ROOMS.get(session)
        if room is None:
            room = ROOMS[session] = Room()
        self.room = room
        self.transport: WSTransport | None = None
        self.buf: bytearray | None = None  # a fragmented message being assembled

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.visitor:
            self.room.visitors += 1
        else:
            self.room.viewers.append(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        if t is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if not self.visitor:
            return
        if t is WSMsgType.BINARY or t is WSMsgType.CONTINUATION:
            if not frame.fin:  # rare: assemble fragments, then forward one message
                if self.buf is None:
                    self.buf = bytearray()
                self.buf += frame.get_payload_as_memoryview()
                return
            if self.buf is not None:
                self.buf += frame.get_payload_as_memoryview()
                payload: bytes | bytearray | memoryview = self.buf
                self.buf = None
            else:
                payload = frame.get_payload_as_memoryview()
            for viewer in self.room.viewers:
                viewer.send(WSMsgType.BINARY, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        room = self.room
        if self.visitor:
            room.visitors -= 1
        else:
            with contextlib.suppress(ValueError):
                room.viewers.remove(transport)
        if not room.viewers and not room.visitors:
            ROOMS.pop(self.session, None)


def factory(request: WSUpgradeRequest) -> WSListener | None:
    parts = request.path.decode("latin-1").split("?", 1)[0].strip("/").split("/")
    if len(parts) != 3 or parts[0] != "ws" or parts[2] not in ("visitor", "viewer"):
        return None
    return Peer(parts[1], parts[2] == "visitor")


async def amain(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await ws_create_server(
        factory,
        host,
        port,
        max_frame_size=MAX_SIZE,
        enable_auto_pong=True,
        backlog=4096,
    )
    print(f"picows baseline on {host}:{port}", flush=True)
    async with server:
        await stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8002)
    args = ap.parse_args(argv)
    from bench.proc import raise_nofile

    raise_nofile()
    import uvloop

    uvloop.run(amain(args.host, args.port))


if __name__ == "__main__":
    main()
