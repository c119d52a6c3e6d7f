"""The cobrowse-relay wire protocol: sans-I/O, msgpack, one definition.

Everything that crosses a websocket between the relay, visitor SDKs,
viewers and device agents is defined here. No sockets, no asyncio; nothing
from ``relay`` or ``agent`` is imported. See ``docs/protocol.md``.
"""

from .closecodes import RETRYABLE, TERMINAL, CloseCode, should_reconnect
from .codec import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    WIRE_VERSION,
    Header,
    Limits,
    decode,
    encode,
    peek,
    stamp,
)
from .errors import ERROR_CLOSE_CODES, ProtocolError
from .kinds import KIND_INFO, PERMISSION_FLAGS, Kind, KindInfo, Permission, Role, Routing, kind_info
from .messages import *  # noqa: F403
from .messages import MESSAGE_TYPES, Message
from .messages import __all__ as _message_names

__all__ = [
    "encode",
    "decode",
    "peek",
    "stamp",
    "ProtocolError",
    "ERROR_CLOSE_CODES",
    "CloseCode",
    "RETRYABLE",
    "TERMINAL",
    "should_reconnect",
    "Header",
    "Limits",
    "DEFAULT_LIMITS",
    "HEADER_SIZE",
    "WIRE_VERSION",
    "PROTOCOL_VERSION",
    "Kind",
    "KindInfo",
    "KIND_INFO",
    "kind_info",
    "Routing",
    "Permission",
    "PERMISSION_FLAGS",
    "Role",
    "Message",
    "MESSAGE_TYPES",
    *[n for n in _message_names if n not in ("Message", "MESSAGE_TYPES")],
]
