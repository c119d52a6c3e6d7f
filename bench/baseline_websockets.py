"""The pure-Python ceiling: a minimal `websockets` forwarder.

Routes by URL path ``/ws/<session>/<role>`` (role ``visitor`` or ``viewer``)
and forwards every message the visitor sends, undecoded, to the session's
viewers with :func:`websockets.asyncio.server.broadcast`. No protocol, no
stamping, no log, no backpressure policy: what is left when a relay does
nothing but move bytes. Viewers' messages are read and dropped.

    python -m bench.baseline_websockets --port 8001 [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

MAX_SIZE = 8 * 1024 * 1024  # the relay's keyframe limit


class Room:
    __slots__ = ("viewers", "visitors")

    def __init__(self) -> None:
        self.viewers: set[ServerConnection] = set()
        self.visitors = 0


ROOMS: dict[str, Room] = {}


def _route(path: str) -> tuple[str, str] | None:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) != 3 or parts[0] != "ws" or parts[2] not in ("visitor", "viewer"):
        return None
    return parts[1], parts[2]


async def handler(ws: ServerConnection) -> None:
    route = _route(ws.request.path if ws.request else "")
    if route is None:
        await ws.close(4511, "not found")
        return
    session, role = route
    room = ROOMS.get(session)
    if room is None:
        room = ROOMS[session] = Room()
    try:
        if role == "viewer":
            room.viewers.add(ws)
            async for _ in ws:
                pass
        else:
            room.visitors += 1
            viewers = room.viewers
            async for message in ws:
                broadcast(viewers, message)
    finally:
        if role == "viewer":
            room.viewers.discard(ws)
        else:
            room.visitors -= 1
        if not room.viewers and not room.visitors:
            ROOMS.pop(session, None)


async def amain(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        host,
        port,
        compression=None,
        max_size=MAX_SIZE,
        ping_interval=20,
        ping_timeout=20,
        backlog=4096,
    ):
        print(f"websockets baseline on {host}:{port}", flush=True)
        await stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args(argv)
    from bench.proc import raise_nofile

    raise_nofile()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(amain(args.host, args.port))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(amain(args.host, args.port))


if __name__ == "__main__":
    main()
