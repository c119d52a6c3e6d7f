"""What the transport enforces before the app sees a byte, as data.

:class:`WireLimits` is built once from the settings; :class:`Budget` is the
relay-wide count of inbound bytes held in unfinished websocket messages. Both
live on the app's state and are found by the protocol objects through
uvicorn's config (``config.app.state``), so nothing here is a module global.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..settings import Settings

__all__ = ["WireLimits", "Budget", "wire_of"]


@dataclass(frozen=True, slots=True)
class WireLimits:
    handshake_timeout: float = 10.0  # connection made -> request head -> upgrade -> HELLO admitted
    max_request_head: int = 16 * 1024
    max_headers: int = 64
    max_body: int = 1024 * 1024
    min_recv_rate: int = 16 * 1024  # bytes/s a begun websocket message must keep up, after the grace
    recv_grace: float = 2.0
    max_inflight: int = 64 * 1024 * 1024
    max_frame: int = 64 * 1024  # a message under this is never refused for the budget
    linger: float = 2.0  # after failing a socket: read and discard this long for the peer's close

    @classmethod
    def from_settings(cls, s: Settings) -> WireLimits:
        return cls(
            handshake_timeout=s.handshake_timeout,
            max_request_head=s.max_request_head,
            max_headers=s.max_headers,
            max_body=s.max_body,
            min_recv_rate=s.min_recv_rate,
            max_inflight=s.max_inflight_bytes,
            max_frame=s.max_frame,
        )


class Budget:
    """Inbound bytes held in unfinished messages, summed over every socket of the process."""

    __slots__ = ("inflight", "peak", "refused", "slow")

    def __init__(self) -> None:
        self.inflight = 0
        self.peak = 0
        self.refused = 0  # large messages refused because the budget was spent (4005)
        self.slow = 0  # messages that arrived under MIN_RECV_RATE (4007)


def wire_of(config: Any) -> tuple[WireLimits, Budget]:
    """The limits and budget of the app a uvicorn ``config`` serves (built on first use)."""
    cached = getattr(config, "_cobrowse_wire", None)
    if cached is None:
        state = config.app.state
        budget = getattr(state, "wire_budget", None)
        if budget is None:
            budget = state.wire_budget = Budget()
        cached = (WireLimits.from_settings(state.settings), budget)
        config._cobrowse_wire = cached
    return cached
