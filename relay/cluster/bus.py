"""Requests between nodes over Redis pub/sub: one channel per node, answers on the asker's.

A node listens on ``P:bus:NODE``. :meth:`Bus.ask` publishes a request there
and waits for the answer on its own channel; ``PUBLISH`` says how many
listeners got it, so a node whose connection to Redis is gone (killed: the
kernel closed its sockets) is known at once to be gone (``receivers == 0``)
and a frozen one (SIGSTOP: its socket is still open) by the timeout. Either
way the asker gets ``None`` and decides (take over the session).

Requests older than :data:`STALE` seconds when read are dropped unanswered:
a node waking from SIGSTOP must not act on what it was asked before its
peers gave up on it. Pub/sub delivers at most once and only to who listens
now; nothing here is durable, and nothing needs to be (a lost request is a
timeout).

Messages are orjson maps. Request: ``{"op", "id", "from", "t", "args"}``;
answer: ``{"re": id, "result": {...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["Bus", "Handler", "Reply", "STALE"]

log = logging.getLogger("relay.cluster")

STALE = 5.0  # seconds after which a request is not acted on any more
Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class Reply(NamedTuple):
    reached: bool  # a listener got the request (the node is alive, if perhaps frozen)
    answer: dict[str, Any] | None


class Bus:
    def __init__(self, client: aioredis.Redis, prefix: str, node: str, handler: Handler) -> None:
        self._r = client
        self._p = prefix
        self.node = node
        self._handler = handler
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self.listening = False  # subscribed now: part of /health
        self.asked = self.answered = self.timeouts = 0

    def channel(self, node: str) -> str:
        return f"{self._p}:bus:{node}"

    async def start(self, wait: float = 5.0) -> None:
        """Subscribe (and stay subscribed, again after every loss); returns once listening, or
        after ``wait`` seconds if Redis cannot be reached (``listening`` stays False meanwhile)."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._listen(ready))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.shield(ready)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self._jobs):
            job.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self._r.aclose()

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        pause = 0.05
        while True:
            pubsub = self._r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel(self.node))
                self.listening, pause = True, 0.05
                if not ready.done():
                    ready.set_result(None)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._received(message["data"])
            except (RedisError, OSError) as e:
                if self.listening:
                    log.warning("cluster bus: lost the subscription (%s); subscribing again", e)
                self.listening = False
            finally:
                self.listening = False
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)

    def _received(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        if "re" in msg:
            fut = self._waiting.pop(str(msg["re"]), None)
            if fut is not None and not fut.done():
                result = msg.get("result")
                fut.set_result(result if isinstance(result, dict) else {})
            return
        op, asker, sent = msg.get("op"), msg.get("from"), msg.get("t")
        if not isinstance(op, str) or not isinstance(asker, str) or not isinstance(sent, int | float):
            return
        if op == "ping" or time.time() - sent > STALE:
            return
        args = msg.get("args")
        job = asyncio.get_running_loop().create_task(
            self._answer(op, asker, str(msg.get("id", "")), args if isinstance(args, dict) else {})
        )
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _answer(self, op: str, asker: str, request_id: str, args: dict[str, Any]) -> None:
        try:
            result = await self._handler(op, args)
        except Exception:  # a bug in one request costs that request (the asker times out)
            log.exception("cluster bus: %s request failed", op)
            return
        self.answered += 1
        with contextlib.suppress(RedisError, OSError):
            await self._r.publish(self.channel(asker), orjson.dumps({"re": request_id, "result": result}))

    async def publish(self, node: str, op: str, args: dict[str, Any] | None = None, request_id: str = "") -> int:
        """Send a request without waiting: how many listeners got it (0: ``node`` is gone)."""
        body = {"op": op, "id": request_id, "from": self.node, "t": time.time(), "args": args or {}}
        return int(await self._r.publish(self.channel(node), orjson.dumps(body)))

    async def alive(self, node: str) -> bool:
        """Whether ``node`` listens on its channel now (a killed node does not; a frozen one still does)."""
        if node == self.node:
            return True
        try:
            return await self.publish(node, "ping") > 0
        except (RedisError, OSError):
            return False

    async def ask(self, node: str, op: str, args: dict[str, Any], timeout: float) -> Reply:
        """``node``'s answer to ``op`` within ``timeout``, and whether any listener got the request
        (not reached: gone, or Redis unreachable; reached with no answer: frozen or too slow)."""
        request_id = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        self.asked += 1
        reached = False
        try:
            async with asyncio.timeout(timeout):
                reached = await self.publish(node, op, args, request_id) > 0
                return Reply(reached, await fut if reached else None)
        except TimeoutError:
            self.timeouts += 1
            return Reply(reached, None)
        except (RedisError, OSError):
            return Reply(False, None)
        finally:
            self._waiting.pop(request_id, None)
