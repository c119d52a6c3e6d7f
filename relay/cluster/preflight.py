"""Cluster mode, before serving: Redis answers, and no live node already has this NODE_NAME.

Run by ``python -m relay`` after the port is bound and before uvicorn starts,
so that a refusal is one line and an exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError

from ..settings import Settings
from .redisconn import connect, parse_redis_url
from .shared import BEAT

__all__ = ["preflight"]


def preflight(settings: Settings, prefix: str = "cobrowse") -> tuple[int, str] | None:
    """None when the node may start; else (exit status, one line): 2 for a NODE_NAME another
    live node uses, 1 when Redis cannot be reached."""
    return asyncio.run(_check(settings, prefix))


async def _check(settings: Settings, prefix: str) -> tuple[int, str] | None:
    assert settings.redis_url is not None
    r = connect(parse_redis_url(settings.redis_url), socket_connect_timeout=3, socket_timeout=3)
    key = f"{prefix}:node:{settings.node_name}"
    try:
        first = await r.get(key)
        if first is not None:
            # A heartbeat under our name: a live node refreshes it (a duplicate), the stale key
            # of this node's previous run does not.
            await asyncio.sleep(BEAT * 1.6)
            if (await r.get(key)) not in (None, first):
                name = settings.node_name
                return 2, f"NODE_NAME: a node named {name!r} is already running in this cluster; give each its own"
    except (RedisError, OSError) as e:
        return 1, f"REDIS_URL: cannot reach Redis: {e}"
    finally:
        with contextlib.suppress(RedisError, OSError):
            await r.aclose()
    return None
