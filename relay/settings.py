"""Settings: read once from the environment, frozen, passed explicitly.

:meth:`Settings.from_env` is the only place that reads ``os.environ``. A bad
value raises :class:`SettingsError` whose message is one line naming the
variable; ``python -m relay`` prints it and exits with status 2.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from protocol import Limits

__all__ = ["Settings", "SettingsError", "VARIABLES"]

log = logging.getLogger("relay.settings")
N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """One line, naming the variable."""


# name: (default shown in docs, meaning). The README's table follows this.
VARIABLES: dict[str, tuple[str, str]] = {
    "PORT": ("5002", "TCP port to listen on; 0 for any free port (the banner names the one bound)"),
    "HOST": ("127.0.0.1", "address to bind; 0.0.0.0 to listen on every interface"),
    "BASE_ENDPOINT": ("http://HOST:PORT", "public base URL; its path is the mount point of every route"),
    "SECRET_KEY": ("generated", "key that signs watch grants (>= 16 chars); kept in DATA_DIR/secret_key when unset"),
    "REST_KEY": ("unset", "enables the REST API; clients send it in the Authorization header"),
    "DATA_DIR": ("./data", "where the embedded SQLite store and the generated secret live"),
    "REDIS_URL": (
        "unset",
        "turns cluster mode on: redis://, rediss://, unix://, redis+sentinel://h:26379,h2:26379/mymaster"
        " or redis+cluster://h:p,h2:p (README, Running several nodes)",
    ),
    "ALLOWED_ORIGINS": (
        "BASE_ENDPOINT's origin",
        "comma-separated origins whose pages may open visitor sockets; * for any",
    ),
    "NODE_NAME": (
        "hostname",
        "this node's name (unique per node; letters, digits, . _ -): WELCOME, the live-session API, routing",
    ),
    "NODE_URL": ("unset", "this node's own public base URL, for URL-based stickiness (sessionServerUrl)"),
    "OWNERSHIP_TTL": ("5", "cluster mode: seconds a node's claim on a session lives unless refreshed"),
    "DRAIN_DELAY": (
        "0 (3 with REDIS_URL)",
        "seconds /health answers 503 on SIGTERM before sockets are closed with 1001",
    ),
    "GRANT_TTL": ("600", "seconds a watch URL stays valid"),
    "RESUME_WINDOW": ("60", "seconds a session's state is kept for a dropped visitor or viewer"),
    "MAX_FRAME": ("65536", "bytes: largest frame of any kind but keyframes"),
    "MAX_KEYFRAME": ("8388608", "bytes: largest DOM keyframe or screen frame"),
    "QUEUE_MAX_BYTES": ("1048576", "bytes of ordered frames queued for one viewer before it is resynchronised"),
    "SLOW_TIMEOUT": ("10", "seconds a peer may stay undrained before it is closed as slow (4001)"),
    "PING_INTERVAL": ("20", "seconds between keepalive pings"),
    "PING_TIMEOUT": ("20", "seconds without a pong before a socket is dead"),
    "HANDSHAKE_TIMEOUT": (
        "10",
        "seconds a connection may take to send its request head, and a websocket its upgrade and HELLO",
    ),
    "MAX_REQUEST_HEAD": ("16384", "bytes: largest HTTP request head (request line and headers)"),
    "MAX_HEADERS": ("64", "most header lines in one HTTP request"),
    "MAX_BODY": ("1048576", "bytes: largest HTTP request body"),
    "MIN_RECV_RATE": (
        "16384",
        "bytes/s: a websocket message, once begun, must arrive at least this fast (after a 2 s grace)",
    ),
    "MAX_INFLIGHT_BYTES": (
        "67108864",
        "bytes: relay-wide cap on unfinished inbound messages; past it large messages are refused (4005)",
    ),
    "MAX_SOCKETS_PER_IP": ("200", "websockets (visitors, viewers, devices) one client address may hold open"),
    "NEW_VISITORS_PER_IP": ("120", "new visitor ids one client address may create per minute"),
    "RATE_CONTROL": ("50", "frames/s per socket of session-class kinds (HELLO, PING, PRESENCE, ...); 4004 past it"),
    "RATE_CONTENT": ("1000", "frames/s per socket of DOM, pointer, scroll and control kinds; 4004 past it"),
    "RATE_BYTES": ("4194304", "bytes/s per socket, all kinds (the bucket holds at least two keyframes); 4004 past it"),
    "RATE_BURST": ("5", "seconds of the per-socket rates a socket may spend at once"),
    "REST_RATE": ("600", "REST calls per minute per key (429 past it)"),
    "MAX_CONCURRENT_SESSIONS": (
        "0",
        "sessions live or requested at once before a new watch URL is refused (cloud API: 402); 0 for no limit",
    ),
    "API_TOKEN_TTL": ("3600", "seconds a CoClick API bearer token (POST /api/v1/authenticate) stays valid"),
    "TRUSTED_PROXIES": (
        "unset",
        "comma-separated proxy addresses whose X-Forwarded-For names the client; * for any",
    ),
    "VISITOR_RETENTION_DAYS": ("30", "days a visitor that never had a session is kept after it was last seen"),
    "LOG_LEVEL": ("info", "debug, info, warning or error"),
    "LOG_FORMAT": ("text", "text or json (one object per line); uvicorn's lines follow it too"),
}


def _number(env: Mapping[str, str], name: str, default: N, lo: N, hi: N, kind: type[N]) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name}: expected {what}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}: {value} is out of range {lo}..{hi}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return _number(env, name, default, lo, hi, int)


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    return _number(env, name, default, lo, hi, float)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5002
    base_url: str = "http://127.0.0.1:5002"  # no trailing slash
    base_path: str = ""  # "" or "/mount", no trailing slash
    secret_key: bytes = b""
    rest_key: str | None = None
    data_dir: Path = Path("data")
    redis_url: str | None = None
    node_url: str = ""  # this node's own public base URL, "" when unset
    ownership_ttl: float = 5.0
    drain_delay: float = 0.0
    allowed_origins: frozenset[str] = frozenset()  # lower-case origins; "*" admits any
    node_name: str = "relay"
    grant_ttl: float = 600.0
    resume_window: float = 60.0
    max_frame: int = 64 * 1024
    max_keyframe: int = 8 * 1024 * 1024
    queue_max_bytes: int = 1024 * 1024
    slow_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    log_level: str = "info"
    handshake_timeout: float = 10.0
    log_max_bytes: int = 16 * 1024 * 1024  # session log size that asks the visitor for a new keyframe
    log_format: str = "text"
    # Limits on what a client can make the relay hold (README "Security").
    max_request_head: int = 16 * 1024
    max_headers: int = 64
    max_body: int = 1024 * 1024
    min_recv_rate: int = 16 * 1024
    max_inflight_bytes: int = 64 * 1024 * 1024
    max_sockets_per_ip: int = 200
    new_visitors_per_ip: int = 120
    rate_control: float = 50.0
    rate_content: float = 1000.0
    rate_bytes: float = 4.0 * 1024 * 1024
    rate_burst: float = 5.0
    rest_rate: int = 600
    max_concurrent_sessions: int = 0
    api_token_ttl: float = 3600.0
    trusted_proxies: tuple[str, ...] = ()
    visitor_retention_days: float = 30.0

    @property
    def cluster(self) -> bool:
        """Cluster mode: REDIS_URL is set."""
        return self.redis_url is not None

    @property
    def limits(self) -> Limits:
        return Limits(max_frame=self.max_frame, max_keyframe=self.max_keyframe)

    def origin_allowed(self, origin: str | None) -> bool:
        """May a page of ``origin`` open a visitor socket? The relay's own pages (the
        demo) always may, and with a loopback HOST under any loopback name
        (``http://localhost:PORT`` and ``http://127.0.0.1:PORT`` alike); other sites
        when listed in ALLOWED_ORIGINS, or with ``*``."""
        if "*" in self.allowed_origins:
            return True
        if origin is None:
            return False
        origin = origin.lower()
        if origin in self.allowed_origins or origin == _origin(self.base_url):
            return True
        return self.host.lower() in _LOOPBACK and origin in _loopback_origins(self.port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        port = _int(env, "PORT", 5002, 0, 65535)
        host = env.get("HOST", "").strip() or "127.0.0.1"
        base_url, base_path = cls._base(env, host, port)
        data_dir = Path(env.get("DATA_DIR", "").strip() or "data")
        rest_key = env.get("REST_KEY") or None
        if rest_key is not None and len(rest_key) < 4:
            raise SettingsError("REST_KEY: must be at least 4 characters")
        redis_url = env.get("REDIS_URL", "").strip() or None
        node_name = env.get("NODE_NAME", "").strip() or _hostname()
        if redis_url is not None:
            _cluster_checks(env, redis_url, node_name)
        node_url = _node_url(env)
        level = (env.get("LOG_LEVEL", "").strip() or "info").lower()
        if level not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"LOG_LEVEL: expected debug, info, warning or error, got {level!r}")
        log_format = (env.get("LOG_FORMAT", "").strip() or "text").lower()
        if log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT: expected text or json, got {log_format!r}")
        max_frame = _int(env, "MAX_FRAME", 64 * 1024, 1024, 16 * 1024 * 1024)
        max_keyframe = _int(env, "MAX_KEYFRAME", 8 * 1024 * 1024, max_frame, 256 * 1024 * 1024)
        return cls(
            host=host,
            port=port,
            base_url=base_url,
            base_path=base_path,
            secret_key=_secret(env, data_dir),
            rest_key=rest_key,
            data_dir=data_dir,
            redis_url=redis_url,
            allowed_origins=_origins(env, base_url),
            node_name=node_name,
            node_url=node_url,
            ownership_ttl=_float(env, "OWNERSHIP_TTL", 5.0, 1.0, 300.0),
            drain_delay=_float(env, "DRAIN_DELAY", 3.0 if redis_url else 0.0, 0.0, 600.0),
            grant_ttl=_float(env, "GRANT_TTL", 600.0, 1.0, 30 * 86400.0),
            resume_window=_float(env, "RESUME_WINDOW", 60.0, 0.0, 86400.0),
            max_frame=max_frame,
            max_keyframe=max_keyframe,
            queue_max_bytes=_int(env, "QUEUE_MAX_BYTES", 1024 * 1024, 64 * 1024, 1024 * 1024 * 1024),
            slow_timeout=_float(env, "SLOW_TIMEOUT", 10.0, 0.1, 3600.0),
            ping_interval=_float(env, "PING_INTERVAL", 20.0, 0.1, 3600.0),
            ping_timeout=_float(env, "PING_TIMEOUT", 20.0, 0.1, 3600.0),
            log_level=level,
            log_format=log_format,
            handshake_timeout=_float(env, "HANDSHAKE_TIMEOUT", 10.0, 0.1, 3600.0),
            max_request_head=_int(env, "MAX_REQUEST_HEAD", 16 * 1024, 1024, 1024 * 1024),
            max_headers=_int(env, "MAX_HEADERS", 64, 8, 1000),
            max_body=_int(env, "MAX_BODY", 1024 * 1024, 1024, 1024 * 1024 * 1024),
            min_recv_rate=_int(env, "MIN_RECV_RATE", 16 * 1024, 1, 1024 * 1024 * 1024),
            max_inflight_bytes=_int(env, "MAX_INFLIGHT_BYTES", 64 * 1024 * 1024, max_keyframe, 64 * 1024**3),
            max_sockets_per_ip=_int(env, "MAX_SOCKETS_PER_IP", 200, 1, 10_000_000),
            new_visitors_per_ip=_int(env, "NEW_VISITORS_PER_IP", 120, 1, 10_000_000),
            rate_control=_float(env, "RATE_CONTROL", 50.0, 1.0, 1e9),
            rate_content=_float(env, "RATE_CONTENT", 1000.0, 1.0, 1e9),
            rate_bytes=_float(env, "RATE_BYTES", 4.0 * 1024 * 1024, 1024.0, 1e12),
            rate_burst=_float(env, "RATE_BURST", 5.0, 1.0, 3600.0),
            rest_rate=_int(env, "REST_RATE", 600, 1, 10_000_000),
            max_concurrent_sessions=_int(env, "MAX_CONCURRENT_SESSIONS", 0, 0, 10_000_000),
            api_token_ttl=_float(env, "API_TOKEN_TTL", 3600.0, 60.0, 30 * 86400.0),
            trusted_proxies=_proxies(env),
            visitor_retention_days=_float(env, "VISITOR_RETENTION_DAYS", 30.0, 0.0, 36500.0),
        )

    def bound_to(self, env: Mapping[str, str], port: int) -> Settings:
        """These settings for the port actually bound (PORT=0): the default
        BASE_ENDPOINT and ALLOWED_ORIGINS follow it; an explicit BASE_ENDPOINT is kept."""
        env = {**env, "PORT": str(port)}
        base_url, base_path = self._base(env, self.host, port)
        origins = _origins(env, base_url)
        return replace(self, port=port, base_url=base_url, base_path=base_path, allowed_origins=origins)

    @staticmethod
    def _base(env: Mapping[str, str], host: str, port: int) -> tuple[str, str]:
        raw = env.get("BASE_ENDPOINT", "").strip()
        if not raw:
            shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            return f"http://{shown}:{port}", ""
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise SettingsError(f"BASE_ENDPOINT: expected http(s)://host[:port][/path], got {raw!r}")
        path = parts.path.rstrip("/")
        return f"{parts.scheme}://{parts.netloc}{path}", path


_NODE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _cluster_checks(env: Mapping[str, str], redis_url: str, node_name: str) -> None:
    """What cluster mode needs: a REDIS_URL that parses, a routable NODE_NAME, an explicit
    SECRET_KEY (every node must sign and check grants with the same one)."""
    from .cluster.redisconn import parse_redis_url

    try:
        parse_redis_url(redis_url)
    except ValueError as e:
        raise SettingsError(f"REDIS_URL: {e}") from None
    if not _NODE_NAME.match(node_name):
        raise SettingsError(f"NODE_NAME: {node_name!r}: use 1-64 letters, digits, '.', '_' or '-' (unique per node)")
    if not env.get("SECRET_KEY", ""):
        raise SettingsError("SECRET_KEY: must be set, the same on every node, when REDIS_URL is set")


def _node_url(env: Mapping[str, str]) -> str:
    raw = env.get("NODE_URL", "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError(f"NODE_URL: expected http(s)://host[:port][/path], got {raw!r}")
    return raw.rstrip("/")


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _loopback_origins(port: int) -> frozenset[str]:
    return frozenset(f"http://{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]"))


def _origins(env: Mapping[str, str], base_url: str) -> frozenset[str]:
    """ALLOWED_ORIGINS as lower-case origins; unset: BASE_ENDPOINT's origin alone."""
    raw = env.get("ALLOWED_ORIGINS", "").strip()
    if not raw:
        return frozenset({_origin(base_url)})
    out = set()
    for item in (s.strip() for s in raw.split(",")):
        if not item:
            continue
        if item == "*":
            out.add("*")
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise SettingsError(f"ALLOWED_ORIGINS: {item!r} is not an origin like https://shop.example.com")
        out.add(_origin(item))
    return frozenset(out)


def _proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    import ipaddress

    out: list[str] = []
    for item in (s.strip() for s in env.get("TRUSTED_PROXIES", "").split(",")):
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise SettingsError(f"TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
        out.append(item)
    return tuple(out)


def _secret(env: Mapping[str, str], data_dir: Path) -> bytes:
    """SECRET_KEY, or the generated key kept in ``DATA_DIR/secret_key``.

    A generated key is written to a private temporary file (0600 from its
    creation) and linked into place, so it is never readable by others nor seen
    half-written; of two relays starting at once on one DATA_DIR, the first
    link wins and both use its key. DATA_DIR is created 0700.
    """
    raw = env.get("SECRET_KEY", "")
    if raw:
        if len(raw) < 16:
            raise SettingsError("SECRET_KEY: must be at least 16 characters")
        return raw.encode()
    path = data_dir / "secret_key"
    try:
        kept = _read_secret(path)
        if kept is not None:
            return kept
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = secrets.token_urlsafe(32)
        kept = _keep_secret(path, fresh)
    except OSError as e:
        raise SettingsError(f"DATA_DIR: cannot keep the generated secret in {path}: {e.strerror}") from None
    if kept == fresh.encode():
        log.warning("SECRET_KEY is unset: using a generated key kept in %s", path)
    return kept


def _read_secret(path: Path) -> bytes | None:
    """The kept key, or None when there is none (or it is too short to use)."""
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        return None
    return kept.encode() if len(kept) >= 16 else None


def _keep_secret(path: Path, fresh: str) -> bytes:
    """Write ``fresh`` beside ``path`` with mode 0600, then put it in place; the key now kept."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(fresh + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another relay kept its key first
        except FileExistsError:
            kept = _read_secret(path)
            if kept is not None:
                return kept
            os.replace(tmp, path)  # a stale, unusable file: ours replaces it
    finally:
        tmp.unlink(missing_ok=True)
    return fresh.encode()


def _hostname() -> str:
    import socket

    return socket.gethostname() or "relay"
