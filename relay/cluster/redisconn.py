"""``REDIS_URL``: its forms, parsed once, and the redis-py client each one needs.

The forms (ports default to 6379, and 26379 for a sentinel)::

    redis://[user:pass@]host[:port][/db]        one server
    rediss://...                                the same over TLS
    unix://[user:pass@]/path/to/sock[?db=N]     one server on a Unix socket
    redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[/db]
    rediss+sentinel://...                       Sentinel; TLS to the sentinels and the servers
    redis+cluster://[user:pass@]host:port[,host:port...]
    rediss+cluster://...                        Redis Cluster (database 0 only)

User and password are percent-decoded; they are the servers' (with Sentinel:
the master's and its replicas', never sent to the sentinels, whose own
password this URL cannot carry). :func:`parse_redis_url` raises
:class:`ValueError` with a short message that never repeats a password; the
caller names the variable (``REDIS_URL: ...``).

:func:`connect` builds the client and connects lazily (on its first command).
A Sentinel client asks the sentinels for the master's address on every new
connection, so after a failover a command that failed on the old master
(connection refused, ``READONLY``) is retried by redis-py on the new one.

redis-py gives a plain client a retry policy (10 retries, exponential
backoff with jitter from 10 ms to 1 s: a dead server fails a command after
about 3 to 4 s) but a Sentinel master's client, built by
``Sentinel.master_for``, none at all: every command issued during a
failover would fail at once. :func:`connect` gives it the plain client's
policy (unless ``retry`` is among the options), so the three kinds hold a
command alike, and a command issued as a master dies usually completes on
the promoted replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

__all__ = ["RedisTarget", "connect", "parse_redis_url", "pubsub_client"]

Kind = Literal["redis", "sentinel", "cluster"]

# scheme -> (kind, tls)
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT = {"redis": 6379, "sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What connecting to one ``REDIS_URL`` needs.

    ``hosts`` are (host, port) pairs: one server, the sentinels or the
    cluster's startup nodes; empty for a Unix socket (``unix_path``).
    ``service_name`` is the Sentinel master's name (None for other kinds).
    ``url`` is the URL as given (with its password: log :attr:`redacted`).
    """

    kind: Kind
    hosts: tuple[tuple[str, int], ...]
    url: str = field(repr=False)
    unix_path: str | None = None
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def redacted(self) -> str:
        """The URL with its password replaced by ``***`` (fit for logs)."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        userinfo, _, host = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))


def parse_redis_url(url: str) -> RedisTarget:
    """The :class:`RedisTarget` that ``url`` names; :class:`ValueError` if it is malformed."""
    scheme, sep, _ = url.strip().partition("://")
    if not sep:
        raise ValueError("expected a URL such as redis://127.0.0.1:6379/0")
    if scheme.lower() not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unknown scheme {scheme + '://'!r}; expected one of {known}")
    kind, tls = _SCHEMES[scheme.lower()]
    try:
        parts = urlsplit(url.strip())
    except ValueError as e:  # e.g. an unbalanced IPv6 bracket
        raise ValueError(f"not a valid URL ({e})") from None
    if parts.fragment:
        raise ValueError("a Redis URL has no #fragment")
    userinfo, _, hostpart = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    common: dict[str, Any] = {"url": url, "username": username, "password": password, "tls": tls}
    if scheme.lower() == "unix":
        return _unix(hostpart, parts.path, parts.query, common)
    if parts.query:
        raise ValueError("options in the query (?...) are only read from unix:// URLs (?db=N)")
    hosts = tuple(_host(h, _DEFAULT_PORT[kind]) for h in hostpart.split(","))
    if kind == "redis":
        if len(hosts) != 1:
            raise ValueError(f"{scheme}:// names one server; several are for redis+sentinel:// or redis+cluster://")
        return RedisTarget("redis", hosts, db=_db(parts.path.removeprefix("/")), **common)
    if kind == "cluster":
        if parts.path not in ("", "/", "/0"):
            raise ValueError("Redis Cluster has only database 0; drop the path")
        return RedisTarget("cluster", hosts, **common)
    service, _, db = parts.path.removeprefix("/").partition("/")
    if not service:
        raise ValueError("a Sentinel URL names the master's service: redis+sentinel://host:26379/mymaster")
    return RedisTarget("sentinel", hosts, service_name=unquote(service), db=_db(db), **common)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(username, password) of ``user:pass`` (both percent-decoded; absent parts None)."""
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host, port)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad host {text!r}: an IPv6 address is written [::1]:6379")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        port = port_text if colon else None
    if not host:
        raise ValueError("a host is missing" + (f" (before {text!r})" if text else ""))
    if port is None:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r} for host {host!r}: expected 1 to 65535")
    return host, int(port)


def _db(text: str) -> int:
    """A database number (``""`` is database 0)."""
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"bad database {text!r}: expected a number such as /0")
    return int(text)


def _unix(host: str, path: str, query: str, common: dict[str, Any]) -> RedisTarget:
    if host:
        raise ValueError("a unix:// URL has no host: unix:///path/to/redis.sock")
    if not path or path == "/":
        raise ValueError("a unix:// URL names the socket: unix:///path/to/redis.sock")
    options = dict(parse_qsl(query, keep_blank_values=True))
    if set(options) - {"db"}:
        raise ValueError(f"unknown option {sorted(set(options) - {'db'})[0]!r}; a unix:// URL takes ?db=N")
    return RedisTarget("redis", (), unix_path=unquote(path), db=_db(options.get("db", "")), **common)


# --- clients -----------------------------------------------------------------------------
MAX_CONNECTIONS = 1000
"""Connections one client may open (per Redis node). redis-py's default pool fails a command
("Too many connections") rather than wait once its limit is reached; 100, its default, was
reached when 400 sockets closed at once. The relay also bounds its own background writes."""


class _SentinelMaster(aioredis.Redis):
    """The Sentinel master's client; closing it also closes its clients of the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def connect(target: RedisTarget, **options: Any) -> aioredis.Redis | aioredis.RedisCluster:
    """A client of ``target`` (not connected yet); ``options`` are redis-py's connection options.

    ``"redis"``: a :class:`redis.asyncio.Redis`. ``"sentinel"``: the master's
    client from :meth:`redis.asyncio.sentinel.Sentinel.master_for`; the
    sentinels get the ``socket_*`` options (and TLS with ``rediss+sentinel``);
    a new connection asks them where the master is, so a failover is followed:
    a command failing on the old master (refused, or ``READONLY`` from a
    demoted one, which redis-py turns into a connection error) is retried,
    with a plain client's retry policy unless ``retry`` is given, on the
    master the sentinels name then. Closing it closes the sentinel clients
    too. ``"cluster"``: a :class:`redis.asyncio.RedisCluster` started from
    every host named.
    """
    options = {"max_connections": MAX_CONNECTIONS, **options}
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        return aioredis.RedisCluster(startup_nodes=nodes, **_auth(target, options))
    if target.kind == "sentinel":
        return _sentinel_master(target, options)
    return _server(target, options)


def pubsub_client(target: RedisTarget, **options: Any) -> aioredis.Redis:
    """A plain client for ``PUBLISH`` / ``SUBSCRIBE`` (not connected yet).

    ``"redis"`` and ``"sentinel"``: the same client as :func:`connect` (with
    Sentinel, a subscriber that reconnects after a failover subscribes again
    on the new master; what was published meanwhile is lost, as pub/sub
    always loses what no one heard). ``"cluster"``: a plain client of the
    *first* host named. Classic pub/sub in Redis Cluster is broadcast to every
    node over the cluster bus, so one node hears every channel; if that node
    is down this client fails (it does not move to another node).
    """
    if target.kind == "cluster":
        host, port = target.hosts[0]
        return aioredis.Redis(host=host, port=port, **_auth(target, options))
    if target.kind == "sentinel":
        return _sentinel_master(target, options)
    return _server(target, options)


def _auth(target: RedisTarget, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the URL's credentials and TLS flag (those the URL gives win)."""
    given = {"username": target.username, "password": target.password}
    return {**options, **{k: v for k, v in given.items() if v is not None}, "ssl": target.tls}


def _server(target: RedisTarget, options: dict[str, Any]) -> aioredis.Redis:
    kw = _auth(target, options)
    if target.unix_path is not None:
        return aioredis.Redis(unix_socket_path=target.unix_path, db=target.db, **kw)
    host, port = target.hosts[0]
    return aioredis.Redis(host=host, port=port, db=target.db, **kw)


def _plain_retry() -> Retry:
    """What redis-py gives a plain ``redis.asyncio.Redis`` by default (redis/_defaults.py)."""
    return Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.01), 10)


def _sentinel_master(target: RedisTarget, options: dict[str, Any]) -> aioredis.Redis:
    assert target.service_name is not None
    options = {"retry": _plain_retry(), **options}
    sentinel_kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
    if target.tls:
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master: aioredis.Redis = sentinel.master_for(
        target.service_name, redis_class=_SentinelMaster, db=target.db, **_auth(target, options)
    )
    return master
