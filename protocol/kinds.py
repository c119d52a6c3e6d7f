"""The catalog of message kinds: code, routing class, senders, permission.

This table is the single place that says what the relay does with a frame.
The relay reads byte 1 of a frame, indexes :data:`KIND_INFO` and acts on the
routing class without decoding the payload.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import NamedTuple

__all__ = [
    "Kind",
    "Routing",
    "Permission",
    "Role",
    "KindInfo",
    "KIND_INFO",
    "kind_info",
    "PERMISSION_FLAGS",
]


class Kind(IntEnum):
    # handshake
    HELLO = 0x01
    WELCOME = 0x02
    ERROR = 0x03
    BYE = 0x04
    # visitor -> viewers: content
    DOM_KEYFRAME = 0x10
    DOM_DELTA = 0x11
    POINTER = 0x12
    SCROLL = 0x13
    VIEWPORT = 0x14
    URL_CHANGE = 0x15
    SCREEN_FRAME = 0x16
    CONSOLE_LINES = 0x17
    # viewer -> visitor: control
    CLICK = 0x30
    REMOTE_SCROLL = 0x31
    TYPE = 0x32
    DRAW_STROKE = 0x33
    DRAW_CLEAR = 0x34
    REDIRECT = 0x35
    RELOAD = 0x36
    CONSOLE_EVAL = 0x37
    VIEWER_POINTER = 0x38
    # session control
    SESSION_REQUEST = 0x50
    SESSION_ACCEPT = 0x51
    SESSION_DECLINE = 0x52
    SESSION_END = 0x53
    RESYNC_REQUEST = 0x54
    PERMISSIONS_UPDATE = 0x55
    PRESENCE = 0x56
    PAGEVIEW = 0x57
    # device agent
    INVENTORY = 0x60
    CMD_REBOOT = 0x61
    CMD_WAKE = 0x62
    CMD_LOGOUT = 0x63
    CMD_RESULT = 0x64
    DEVICE_STATUS = 0x65
    # keepalive
    PING = 0x70
    PONG = 0x71


class Routing(Enum):
    """What the relay does with a frame of this kind."""

    ORDERED = "ordered"  # lossless, sequenced, kept in the session log
    LATEST = "latest"  # only the newest queued frame of the kind matters
    CONTROL = "control"  # viewer -> visitor, gated by a grant permission
    SESSION = "session"  # handled by the relay itself


class Permission(Enum):
    """Grant permissions; values are the names used on the wire and in grants."""

    CLICK = "click"
    SCROLL = "scroll"
    TYPE = "type"
    DRAW = "draw"
    AGENT_REDIRECT = "agent_redirect"
    CONSOLE = "console"
    AUDIO = "audio"


# The REST API's allow_* flags, in the seed's order, and their defaults.
PERMISSION_FLAGS: dict[str, tuple[Permission, bool]] = {
    "allow_agent_redirect": (Permission.AGENT_REDIRECT, True),
    "allow_audio": (Permission.AUDIO, True),
    "allow_click": (Permission.CLICK, True),
    "allow_console": (Permission.CONSOLE, False),
    "allow_draw": (Permission.DRAW, True),
    "allow_scroll": (Permission.SCROLL, True),
    "allow_type": (Permission.TYPE, True),
}


class Role(Enum):
    VISITOR = "visitor"
    VIEWER = "viewer"
    DEVICE = "device"
    RELAY = "relay"


class KindInfo(NamedTuple):
    kind: Kind
    routing: Routing
    senders: frozenset[Role]
    permission: Permission | None
    big: bool  # may use the keyframe size limit instead of the frame limit


_V, _W, _D, _R = Role.VISITOR, Role.VIEWER, Role.DEVICE, Role.RELAY
_CLIENTS = frozenset({_V, _W, _D})
_ALL = frozenset({_V, _W, _D, _R})


def _k(
    kind: Kind,
    routing: Routing,
    senders: frozenset[Role] | set[Role],
    permission: Permission | None = None,
    big: bool = False,
) -> KindInfo:
    return KindInfo(kind, routing, frozenset(senders), permission, big)


_TABLE = [
    _k(Kind.HELLO, Routing.SESSION, _CLIENTS),
    _k(Kind.WELCOME, Routing.SESSION, {_R}),
    _k(Kind.ERROR, Routing.SESSION, _ALL),
    _k(Kind.BYE, Routing.SESSION, _ALL),
    _k(Kind.DOM_KEYFRAME, Routing.ORDERED, {_V}, big=True),
    _k(Kind.DOM_DELTA, Routing.ORDERED, {_V}),
    _k(Kind.POINTER, Routing.LATEST, {_V}),
    _k(Kind.SCROLL, Routing.LATEST, {_V}),
    _k(Kind.VIEWPORT, Routing.LATEST, {_V}),
    _k(Kind.URL_CHANGE, Routing.LATEST, {_V}),
    _k(Kind.SCREEN_FRAME, Routing.LATEST, {_V}, big=True),
    _k(Kind.CONSOLE_LINES, Routing.ORDERED, {_V}),
    _k(Kind.CLICK, Routing.CONTROL, {_W}, Permission.CLICK),
    _k(Kind.REMOTE_SCROLL, Routing.CONTROL, {_W}, Permission.SCROLL),
    _k(Kind.TYPE, Routing.CONTROL, {_W}, Permission.TYPE),
    _k(Kind.DRAW_STROKE, Routing.CONTROL, {_W}, Permission.DRAW),
    _k(Kind.DRAW_CLEAR, Routing.CONTROL, {_W}, Permission.DRAW),
    _k(Kind.REDIRECT, Routing.CONTROL, {_W}, Permission.AGENT_REDIRECT),
    _k(Kind.RELOAD, Routing.CONTROL, {_W}, Permission.AGENT_REDIRECT),
    _k(Kind.CONSOLE_EVAL, Routing.CONTROL, {_W}, Permission.CONSOLE),
    _k(Kind.VIEWER_POINTER, Routing.CONTROL, {_W}),
    _k(Kind.SESSION_REQUEST, Routing.SESSION, {_R}),
    _k(Kind.SESSION_ACCEPT, Routing.SESSION, {_V, _R}),
    _k(Kind.SESSION_DECLINE, Routing.SESSION, {_V, _R}),
    _k(Kind.SESSION_END, Routing.SESSION, {_V, _W, _R}),
    _k(Kind.RESYNC_REQUEST, Routing.SESSION, {_W, _R}),
    _k(Kind.PERMISSIONS_UPDATE, Routing.SESSION, {_V, _R}),
    _k(Kind.PRESENCE, Routing.SESSION, {_V}),
    _k(Kind.PAGEVIEW, Routing.SESSION, {_V}),
    _k(Kind.INVENTORY, Routing.SESSION, {_D}),
    _k(Kind.CMD_REBOOT, Routing.SESSION, {_R}),
    _k(Kind.CMD_WAKE, Routing.SESSION, {_R}),
    _k(Kind.CMD_LOGOUT, Routing.SESSION, {_R}),
    _k(Kind.CMD_RESULT, Routing.SESSION, {_D}),
    _k(Kind.DEVICE_STATUS, Routing.SESSION, {_D}),
    _k(Kind.PING, Routing.SESSION, _ALL),
    _k(Kind.PONG, Routing.SESSION, _ALL),
]

#: Indexed by the kind byte; ``None`` for unassigned codes. O(1) lookup.
KIND_INFO: tuple[KindInfo | None, ...] = tuple(next((i for i in _TABLE if i.kind == code), None) for code in range(256))
assert len(_TABLE) == len(Kind), "every Kind needs a row"


def kind_info(kind: Kind) -> KindInfo:
    info = KIND_INFO[kind]
    assert info is not None
    return info
