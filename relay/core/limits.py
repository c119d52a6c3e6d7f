"""Rate and connection limits: token buckets, per socket and per client address.

Pure bookkeeping: callers pass the time (``time.monotonic()``), nothing here
awaits or closes anything. What a breach costs is decided by the caller (the
service closes the socket with 4004 ``RATE_LIMITED``).

Per socket, frames are counted in two classes, because their costs differ by
two orders of magnitude: *session* kinds (HELLO, PING, PRESENCE, session and
resync requests) are decoded and may touch the store; *content* kinds (DOM,
pointer, scroll, control) are forwarded on their header alone. Bytes are
counted for every kind. A bucket holds ``rate * burst`` tokens, so a client
may spend a few seconds' worth at once (a big first snapshot) but not keep it
up.

Per address: websockets open at once (any role: a viewer socket costs as
much before its token is checked), and new visitor ids per minute
(each is a stored row). An address one of whose sockets was closed for
breaking a rate limit is *cooling down*: its new websockets are refused
before the upgrade (429) for 1 s, doubling with each repeat up to 60 s and
forgiven after a quiet minute; a flooder that reconnects at once costs an
HTTP parse, not a handshake and an admission. A new socket's buckets start
with one second's worth, not the whole burst, for the same reason. Addresses
whose buckets are full again are forgotten by :meth:`AddressLimits.prune`, so
the tables stay as small as the set of recently active clients. In cluster mode these counts are per node
(a shared store for them comes with the cluster).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["TokenBucket", "SocketRates", "RateConfig", "AddressLimits"]

COOLDOWN, COOLDOWN_MAX, FORGIVE = 1.0, 60.0, 60.0  # seconds: first cool-down, the longest, forgiveness


class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity``; starts with ``start`` (default: full)."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, capacity: float, now: float, start: float | None = None) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.last = capacity if start is None else min(start, capacity), now

    def take(self, n: float, now: float) -> bool:
        """Spend ``n`` tokens if there are that many; False (and nothing spent) otherwise."""
        tokens = self.tokens + (now - self.last) * self.rate
        self.last = now
        if tokens > self.capacity:
            tokens = self.capacity
        if tokens < n:
            self.tokens = tokens
            return False
        self.tokens = tokens - n
        return True

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.last) * self.rate >= self.capacity

    def level(self, now: float) -> float:
        """The tokens there are at ``now`` (nothing spent)."""
        return min(self.capacity, self.tokens + (now - self.last) * self.rate)


@dataclass(frozen=True, slots=True)
class RateConfig:
    control: float = 50.0  # session-class frames per second
    content: float = 1000.0  # content frames per second
    bytes: float = 4.0 * 1024 * 1024  # bytes per second, all kinds
    burst: float = 5.0  # seconds of each rate held in the bucket
    min_bytes_burst: float = 0.0  # the byte bucket holds at least this (one keyframe)
    resync: float = 0.5  # RESYNC_REQUESTs per second a viewer may make
    resync_burst: float = 3.0


class SocketRates:
    """The buckets of one socket. :meth:`admit` answers None or what was exceeded."""

    __slots__ = ("_bytes", "_content", "_control", "_resync")

    def __init__(self, cfg: RateConfig, now: float) -> None:
        b = cfg.burst
        self._control = TokenBucket(cfg.control, cfg.control * b, now, start=cfg.control)
        self._content = TokenBucket(cfg.content, cfg.content * b, now, start=cfg.content)
        # A new socket may send one keyframe at once (its first snapshot), not the whole burst.
        start = max(cfg.bytes, cfg.min_bytes_burst / 2)
        self._bytes = TokenBucket(cfg.bytes, max(cfg.bytes * b, cfg.min_bytes_burst), now, start=start)
        self._resync = TokenBucket(cfg.resync, cfg.resync_burst, now)

    def admit(self, session_class: bool, size: int, now: float) -> str | None:
        frames = self._control if session_class else self._content
        if not frames.take(1.0, now):
            return "session frames per second" if session_class else "frames per second"
        if not self._bytes.take(size, now):
            return "bytes per second"
        return None

    def resync(self, now: float) -> bool:
        return self._resync.take(1.0, now)


class AddressLimits:
    """Websockets open per address, and new visitors per address per minute."""

    def __init__(self, max_sockets: int, new_per_minute: int) -> None:
        self.max_sockets = max_sockets
        self.new_per_minute = new_per_minute
        self.sockets: dict[str, int] = {}
        self._new: dict[str, TokenBucket] = {}
        self._strikes: dict[str, tuple[int, float]] = {}  # address -> (repeats, cooling down until)
        self.refused_sockets = 0
        self.refused_new = 0
        self.refused_cooling = 0
        # Cluster mode: what the other nodes hold per address (relay/cluster/shared.py exchanges
        # :meth:`export` every second): sockets open, new visitor ids spent, cooling until.
        self.remote: dict[str, tuple[int, float, float]] = {}

    def open_socket(self, address: str) -> bool:
        """Count one more socket for ``address``; False (not counted) past the limit."""
        n = self.sockets.get(address, 0)
        other = self.remote.get(address)
        if n + (other[0] if other is not None else 0) >= self.max_sockets:
            self.refused_sockets += 1
            return False
        self.sockets[address] = n + 1
        return True

    def close_socket(self, address: str) -> None:
        n = self.sockets.get(address, 0) - 1
        if n > 0:
            self.sockets[address] = n
        else:
            self.sockets.pop(address, None)

    def new_visitor(self, address: str, now: float) -> bool:
        """May ``address`` create one more visitor id now?"""
        bucket = self._new.get(address)
        if bucket is None:
            cap = float(self.new_per_minute)
            bucket = self._new[address] = TokenBucket(cap / 60.0, cap, now)
        other = self.remote.get(address)
        spent_elsewhere = other[1] if other is not None else 0.0
        if bucket.level(now) - spent_elsewhere >= 1.0 and bucket.take(1.0, now):
            return True
        self.refused_new += 1
        return False

    def strike(self, address: str, now: float) -> float:
        """A socket of ``address`` broke a rate limit: cool it down. Returns the seconds."""
        repeats, until = self._strikes.get(address, (0, 0.0))
        if now - until > FORGIVE:
            repeats = 0
        wait = min(COOLDOWN_MAX, COOLDOWN * 2.0**repeats)
        self._strikes[address] = (repeats + 1, now + wait)
        return wait

    def cooling(self, address: str, now: float) -> bool:
        """Are new sockets of ``address`` refused now?"""
        strike = self._strikes.get(address)
        other = self.remote.get(address)
        if (strike is not None and now < strike[1]) or (other is not None and now < other[2]):
            self.refused_cooling += 1
            return True
        return False

    # --- cluster mode: the limits hold across nodes (within about a second) ------------------
    def export(self, now: float) -> dict[str, list[float]]:
        """What this node holds of the addresses that weigh (a tenth of a limit or more, or
        cooling down): ``{address: [sockets, new ids spent, seconds of cooling left]}``."""
        out: dict[str, list[float]] = {}
        floor_sockets = max(1, self.max_sockets // 10)
        floor_new = max(1.0, self.new_per_minute / 10)
        for address, n in self.sockets.items():
            if n >= floor_sockets:
                out[address] = [n, 0.0, 0.0]
        for address, bucket in self._new.items():
            spent = self.new_per_minute - bucket.level(now)
            if spent >= floor_new:
                out.setdefault(address, [0, 0.0, 0.0])[1] = spent
        for address, (_, until) in self._strikes.items():
            if until > now:
                out.setdefault(address, [0, 0.0, 0.0])[2] = until - now
        return out

    def absorb(self, others: Iterable[Mapping[str, list[float]]], now: float) -> None:
        """The other nodes' :meth:`export`: summed per address (cooling: the longest)."""
        merged: dict[str, tuple[int, float, float]] = {}
        for node in others:
            for address, values in node.items():
                try:
                    sockets, spent, left = int(values[0]), float(values[1]), float(values[2])
                except (TypeError, ValueError, IndexError):
                    continue
                s0, n0, u0 = merged.get(address, (0, 0.0, 0.0))
                merged[address] = (s0 + sockets, n0 + spent, max(u0, now + left if left > 0 else 0.0))
        self.remote = merged

    def prune(self, now: float) -> None:
        """Forget addresses whose new-visitor bucket is full again, and forgiven strikes."""
        for address in [a for a, b in self._new.items() if b.full(now)]:
            del self._new[address]
        for address in [a for a, (_, until) in self._strikes.items() if now - until > FORGIVE]:
            del self._strikes[address]
