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
    "ResyncRequest", "PermissionsUpdate", "Presence", "Pageview",
    "Inventory", "CmdReboot", "CmdWake", "CmdLogout", "CmdResult", "DeviceStatus",
    "Ping", "Pong",
    "Message", "MESSAGE_TYPES",
]  # fmt: skip

Strs = tuple[str, ...]
Points = tuple[tuple[float, float], ...]


# --- handshake ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Error:
    """Non-fatal when ``close_code`` is 0; otherwise the socket closes next.

    ``node``/``url``: with ``close_code`` 4003 (``session_moved``), the node that
    owns the session (its NODE_NAME) and that node's public base URL ("" when it
    has none: the client keeps its own base). Empty otherwise.
    """

    KIND: ClassVar[Kind] = Kind.ERROR
    code: str
    message: str = ""
    close_code: int = 0
    node: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class Bye:
    KIND: ClassVar[Kind] = Kind.BYE
    code: int = 1000
    reason: str = ""


# --- visitor -> viewers --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DomKeyframe:
    """A full snapshot: ``data`` is a msgpack array of rrweb events (Meta,
    FullSnapshot, ...), opaque to the relay."""

    KIND: ClassVar[Kind] = Kind.DOM_KEYFRAME
    data: bytes


@dataclass(frozen=True, slots=True)
class DomDelta:
    """Incremental rrweb events since the previous ordered frame."""

    KIND: ClassVar[Kind] = Kind.DOM_DELTA
    data: bytes


@dataclass(frozen=True, slots=True)
class Pointer:
    KIND: ClassVar[Kind] = Kind.POINTER
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Scroll:
    KIND: ClassVar[Kind] = Kind.SCROLL
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Viewport:
    KIND: ClassVar[Kind] = Kind.VIEWPORT
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class UrlChange:
    KIND: ClassVar[Kind] = Kind.URL_CHANGE
    url: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class ScreenFrame:
    KIND: ClassVar[Kind] = Kind.SCREEN_FRAME
    mime: str
    width: float
    height: float
    image: bytes


@dataclass(frozen=True, slots=True)
class ConsoleLines:
    KIND: ClassVar[Kind] = Kind.CONSOLE_LINES
    level: str
    lines: Strs


# --- viewer -> visitor ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Click:
    """``node`` is the rrweb mirror id of the clicked element; x/y are the
    page coordinates, used when the node is gone."""

    KIND: ClassVar[Kind] = Kind.CLICK
    node: int
    x: float
    y: float
    button: int = 0


@dataclass(frozen=True, slots=True)
class RemoteScroll:
    """Scroll ``node`` (0: the window) by dx/dy pixels."""

    KIND: ClassVar[Kind] = Kind.REMOTE_SCROLL
    node: int
    dx: float
    dy: float


@dataclass(frozen=True, slots=True)
class Type:
    """Insert ``text`` into ``node``, or press ``key`` (a KeyboardEvent.key
    such as "Backspace" or "Enter") when text is empty."""

    KIND: ClassVar[Kind] = Kind.TYPE
    node: int
    text: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class DrawStroke:
    KIND: ClassVar[Kind] = Kind.DRAW_STROKE
    points: Points
    color: str = "#e5484d"
    width: float = 3.0


@dataclass(frozen=True, slots=True)
class DrawClear:
    KIND: ClassVar[Kind] = Kind.DRAW_CLEAR


@dataclass(frozen=True, slots=True)
class Redirect:
    KIND: ClassVar[Kind] = Kind.REDIRECT
    url: str


@dataclass(frozen=True, slots=True)
class Reload:
    KIND: ClassVar[Kind] = Kind.RELOAD


@dataclass(frozen=True, slots=True)
class ConsoleEval:
    KIND: ClassVar[Kind] = Kind.CONSOLE_EVAL
    code: str


@dataclass(frozen=True, slots=True)
class ViewerPointer:
    KIND: ClassVar[Kind] = Kind.VIEWER_POINTER
    x: float
    y: float


# --- session control -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionRequest:
    """Relay -> visitor: an agent asks to watch; ``permissions`` are granted."""

    KIND: ClassVar[Kind] = Kind.SESSION_REQUEST
    session: str
    agent_id: str
    agent_name: str
    permissions: Strs = ()


@dataclass(frozen=True, slots=True)
class SessionAccept:
    KIND: ClassVar[Kind] = Kind.SESSION_ACCEPT
    session: str = ""


@dataclass(frozen=True, slots=True)
class SessionDecline:
    KIND: ClassVar[Kind] = Kind.SESSION_DECLINE
    session: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SessionEnd:
    KIND: ClassVar[Kind] = Kind.SESSION_END
    session: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ResyncRequest:
    """Ask for (viewer -> relay) or demand (relay -> visitor) a new keyframe."""

    KIND: ClassVar[Kind] = Kind.RESYNC_REQUEST
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PermissionsUpdate:
    """Visitor -> relay: what the page allows; relay -> viewer: what is in force."""

    KIND: ClassVar[Kind] = Kind.PERMISSIONS_UPDATE
    permissions: Strs


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Pageview:
    """Visitor -> relay: one page the visitor opened, kept in its history.

    ``at``: when, in milliseconds since the Unix epoch on the visitor's clock
    (0: when the relay received it). Sent only when the page asks for it
    (``saveHistory``); the relay keeps the newest ones per visitor.
    """

    KIND: ClassVar[Kind] = Kind.PAGEVIEW
    url: str
    title: str = ""
    at: int = 0


# --- device agent --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class CmdReboot:
    KIND: ClassVar[Kind] = Kind.CMD_REBOOT
    id: str
    safe: bool = False


@dataclass(frozen=True, slots=True)
class CmdWake:
    KIND: ClassVar[Kind] = Kind.CMD_WAKE
    id: str
    mac: str
    broadcast: str = "255.255.255.255"


@dataclass(frozen=True, slots=True)
class CmdLogout:
    KIND: ClassVar[Kind] = Kind.CMD_LOGOUT
    id: str


@dataclass(frozen=True, slots=True)
class CmdResult:
    KIND: ClassVar[Kind] = Kind.CMD_RESULT
    id: str
    ok: bool
    message: str = ""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    KIND: ClassVar[Kind] = Kind.DEVICE_STATUS
    status: str
    detail: str = ""


# --- keepalive -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ping:
    KIND: ClassVar[Kind] = Kind.PING
    t: int = 0


@dataclass(frozen=True, slots=True)
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
    | ResyncRequest | PermissionsUpdate | Presence | Pageview
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
        ResyncRequest, PermissionsUpdate, Presence, Pageview,
        Inventory, CmdReboot, CmdWake, CmdLogout, CmdResult, DeviceStatus,
        Ping, Pong,
    )
}  # fmt: skip
assert len(MESSAGE_TYPES) == len(Kind), "every Kind needs a message class"
