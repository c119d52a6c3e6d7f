"""One frozen, slotted dataclass per message kind; :data:`Message` is their union.

Field types are part of the wire contract and are checked by the codec:

* ``str``: UTF-8, at most ``Limits.max_string`` bytes of text.
* ``int``: within the JavaScript-safe range (|n| < 2**53).
* ``float``: a coordinate or size: finite and within ``Limits.coord_max``;
  integers are accepted and read as floats.
* ``bool``, ``bytes``: themselves (``bytes`` is msgpack bin).
* ``tuple[str, ...]`` and ``tuple[tuple[float, float], ...]``: arrays of at
  most ``Limits.max_list`` items.

Fields are encoded in declaration order under their names; fields with a
default may be omitted by a sender, and unknown fields are ignored (that is
how minor versions add fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .kinds import Kind

__all__ = [
    "Hello", "Welcome", "Error", "Bye",
    "DomKeyframe", "DomDelta", "Pointer", "Scroll", "Viewport", "UrlChange",
    "ScreenFrame", "ConsoleLines",
    "Click", "RemoteScroll", "Type", "DrawStroke", "DrawClear", "Redirect",
    "Reload", "ConsoleEval", "ViewerPointer",
    "SessionRequest", "SessionAccept", "SessionDecline", "SessionEnd",
    "ResyncRequest", "PermissionsUpdate", "Presence",
    "Inventory", "CmdReboot", "CmdWake", "CmdLogout", "CmdResult", "DeviceStatus",
    "Ping", "Pong",
    "Message", "MESSAGE_TYPES",
]  # fmt: skip

_msg = dataclass(frozen=True, slots=True)
Strs = tuple[str, ...]
Points = tuple[tuple[float, float], ...]


# --- handshake ---------------------------------------------------------------
@_msg
class Hello:
    """First frame of every client. ``role`` is visitor, viewer or device.

    ``token``: a watch grant or resume token (viewer), a device secret
    (device), empty for visitors. ``client_id``: the visitor's short_id or
    the device id. ``resume_epoch``/``resume_seq``: the last ordered frame a
    reconnecting viewer holds (0/0 when none).
    """

    KIND: ClassVar[Kind] = Kind.HELLO
    role: str
    version: int
    token: str = ""
    client_id: str = ""
    resume_epoch: int = 0
    resume_seq: int = 0
    capabilities: Strs = ()


@_msg
class Welcome:
    KIND: ClassVar[Kind] = Kind.WELCOME
    version: int
    session: str
    client_id: str
    epoch: int
    node: str
    heartbeat: int
    resume: str = ""
    permissions: Strs = ()


@_msg
class Error:
    """Non-fatal when ``close_code`` is 0; otherwise the socket closes next."""

    KIND: ClassVar[Kind] = Kind.ERROR
    code: str
    message: str = ""
    close_code: int = 0


@_msg
class Bye:
    KIND: ClassVar[Kind] = Kind.BYE
    code: int = 1000
    reason: str = ""


# --- visitor -> viewers --------------------------------------------------------
@_msg
class DomKeyframe:
    """A full snapshot: ``data`` is a msgpack array of rrweb events (Meta,
    FullSnapshot, ...), opaque to the relay."""

    KIND: ClassVar[Kind] = Kind.DOM_KEYFRAME
    data: bytes


@_msg
class DomDelta:
    """Incremental rrweb events since the previous ordered frame."""

    KIND: ClassVar[Kind] = Kind.DOM_DELTA
    data: bytes


@_msg
class Pointer:
    KIND: ClassVar[Kind] = Kind.POINTER
    x: float
    y: float


@_msg
class Scroll:
    KIND: ClassVar[Kind] = Kind.SCROLL
    x: float
    y: float


@_msg
class Viewport:
    KIND: ClassVar[Kind] = Kind.VIEWPORT
    width: float
    height: float


@_msg
class UrlChange:
    KIND: ClassVar[Kind] = Kind.URL_CHANGE
    url: str
    title: str = ""


@_msg
class ScreenFrame:
    KIND: ClassVar[Kind] = Kind.SCREEN_FRAME
    mime: str
    width: float
    height: float
    image: bytes


@_msg
class ConsoleLines:
    KIND: ClassVar[Kind] = Kind.CONSOLE_LINES
    level: str
    lines: Strs


# --- viewer -> visitor ---------------------------------------------------------
@_msg
class Click:
    """``node`` is the rrweb mirror id of the clicked element; x/y are the
    page coordinates, used when the node is gone."""

    KIND: ClassVar[Kind] = Kind.CLICK
    node: int
    x: float
    y: float
    button: int = 0


@_msg
class RemoteScroll:
    """Scroll ``node`` (0: the window) by dx/dy pixels."""

    KIND: ClassVar[Kind] = Kind.REMOTE_SCROLL
    node: int
    dx: float
    dy: float


@_msg
class Type:
    """Insert ``text`` into ``node``, or press ``key`` (a KeyboardEvent.key
    such as "Backspace" or "Enter") when text is empty."""

    KIND: ClassVar[Kind] = Kind.TYPE
    node: int
    text: str = ""
    key: str = ""


@_msg
class DrawStroke:
    KIND: ClassVar[Kind] = Kind.DRAW_STROKE
    points: Points
    color: str = "#e5484d"
    width: float = 3.0


@_msg
class DrawClear:
    KIND: ClassVar[Kind] = Kind.DRAW_CLEAR


@_msg
class Redirect:
    KIND: ClassVar[Kind] = Kind.REDIRECT
    url: str


@_msg
class Reload:
    KIND: ClassVar[Kind] = Kind.RELOAD


@_msg
class ConsoleEval:
    KIND: ClassVar[Kind] = Kind.CONSOLE_EVAL
    code: str


@_msg
class ViewerPointer:
    KIND: ClassVar[Kind] = Kind.VIEWER_POINTER
    x: float
    y: float


# --- session control -----------------------------------------------------------
@_msg
class SessionRequest:
    """Relay -> visitor: an agent asks to watch; ``permissions`` are granted."""

    KIND: ClassVar[Kind] = Kind.SESSION_REQUEST
    session: str
    agent_id: str
    agent_name: str
    permissions: Strs = ()


@_msg
class SessionAccept:
    KIND: ClassVar[Kind] = Kind.SESSION_ACCEPT
    session: str = ""


@_msg
class SessionDecline:
    KIND: ClassVar[Kind] = Kind.SESSION_DECLINE
    session: str = ""
    reason: str = ""


@_msg
class SessionEnd:
    KIND: ClassVar[Kind] = Kind.SESSION_END
    session: str = ""
    reason: str = ""


@_msg
class ResyncRequest:
    """Ask for (viewer -> relay) or demand (relay -> visitor) a new keyframe."""

    KIND: ClassVar[Kind] = Kind.RESYNC_REQUEST
    reason: str = ""


@_msg
class PermissionsUpdate:
    """Visitor -> relay: what the page allows; relay -> viewer: what is in force."""

    KIND: ClassVar[Kind] = Kind.PERMISSIONS_UPDATE
    permissions: Strs


@_msg
class Presence:
    """Visitor -> relay: who and where the visitor is. No page content."""

    KIND: ClassVar[Kind] = Kind.PRESENCE
    url: str = ""
    title: str = ""
    unique_id: str = ""
    identities: Strs = ()
    tags: Strs = ()
    lookup_code: str = ""
    browser: str = ""
    device_type: str = ""
    allow: Strs = ()


# --- device agent --------------------------------------------------------------
@_msg
class Inventory:
    KIND: ClassVar[Kind] = Kind.INVENTORY
    hostname: str
    os: str
    os_version: str = ""
    cpu: str = ""
    cores: int = 0
    memory: int = 0
    disk: int = 0
    macs: Strs = ()
    ips: Strs = ()
    agent_version: str = ""


@_msg
class CmdReboot:
    KIND: ClassVar[Kind] = Kind.CMD_REBOOT
    id: str
    safe: bool = False


@_msg
class CmdWake:
    KIND: ClassVar[Kind] = Kind.CMD_WAKE
    id: str
    mac: str
    broadcast: str = "255.255.255.255"


@_msg
class CmdLogout:
    KIND: ClassVar[Kind] = Kind.CMD_LOGOUT
    id: str


@_msg
class CmdResult:
    KIND: ClassVar[Kind] = Kind.CMD_RESULT
    id: str
    ok: bool
    message: str = ""


@_msg
class DeviceStatus:
    KIND: ClassVar[Kind] = Kind.DEVICE_STATUS
    status: str
    detail: str = ""


# --- keepalive -----------------------------------------------------------------
@_msg
class Ping:
    KIND: ClassVar[Kind] = Kind.PING
    t: int = 0


@_msg
class Pong:
    KIND: ClassVar[Kind] = Kind.PONG
    t: int = 0


Message = (
    Hello | Welcome | Error | Bye
    | DomKeyframe | DomDelta | Pointer | Scroll | Viewport | UrlChange
    | ScreenFrame | ConsoleLines
    | Click | RemoteScroll | Type | DrawStroke | DrawClear | Redirect | Reload
    | ConsoleEval | ViewerPointer
    | SessionRequest | SessionAccept | SessionDecline | SessionEnd
    | ResyncRequest | PermissionsUpdate | Presence
    | Inventory | CmdReboot | CmdWake | CmdLogout | CmdResult | DeviceStatus
    | Ping | Pong
)  # fmt: skip

MESSAGE_TYPES: dict[Kind, type[Message]] = {
    cls.KIND: cls
    for cls in (
        Hello, Welcome, Error, Bye,
        DomKeyframe, DomDelta, Pointer, Scroll, Viewport, UrlChange,
        ScreenFrame, ConsoleLines,
        Click, RemoteScroll, Type, DrawStroke, DrawClear, Redirect, Reload,
        ConsoleEval, ViewerPointer,
        SessionRequest, SessionAccept, SessionDecline, SessionEnd,
        ResyncRequest, PermissionsUpdate, Presence,
        Inventory, CmdReboot, CmdWake, CmdLogout, CmdResult, DeviceStatus,
        Ping, Pong,
    )
}  # fmt: skip
assert len(MESSAGE_TYPES) == len(Kind), "every Kind needs a message class"
