"""Frames: a fixed 16-byte header, then one msgpack map.

Byte layout (big-endian)::

    offset size field
    0      1    version    WIRE_VERSION (1); anything else: "bad_version"
    1      1    kind       a :class:`~protocol.kinds.Kind` code
    2      2    reserved   zero; anything else: "reserved_bits"
    4      4    epoch      u32, stamped by the relay on ordered frames
    8      8    seq        u64, stamped by the relay on ordered frames
    16     ...  payload    msgpack map {field name: value}

:func:`peek` reads the header alone: O(1) in the frame size, and no
payload byte can change what it reports. :func:`stamp` rewrites epoch and
seq without touching the payload. :func:`decode` validates everything and
raises only :class:`~protocol.errors.ProtocolError`.
"""

from __future__ import annotations

import math
import struct
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import msgpack  # type: ignore[import-untyped]  # no stubs, no py.typed

from .errors import ProtocolError
from .kinds import KIND_INFO, Kind, KindInfo, Role, Routing
from .messages import MESSAGE_TYPES, Hello, Message

__all__ = [
    "WIRE_VERSION",
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "Limits",
    "DEFAULT_LIMITS",
    "Header",
    "peek",
    "stamp",
    "encode",
    "decode",
]

WIRE_VERSION = 1  # header byte 0; changes only with an incompatible layout
PROTOCOL_VERSION = 1  # Hello.version; major version of the message catalog
HEADER_SIZE = 16
_HEADER = struct.Struct(">BBHIQ")
_EPOCH_SEQ = struct.Struct(">IQ")
_SAFE_INT = 2**53


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits, as data. The relay builds its own from its settings."""

    max_frame: int = 64 * 1024  # every kind but the big ones
    max_keyframe: int = 8 * 1024 * 1024  # DOM_KEYFRAME, SCREEN_FRAME
    max_string: int = 32 * 1024  # characters in one string field
    max_list: int = 4096  # items in one array field
    coord_max: float = 1e7  # |coordinate| and sizes

    def frame_limit(self, info: KindInfo) -> int:
        return self.max_keyframe if info.big else self.max_frame


DEFAULT_LIMITS = Limits()


class Header(NamedTuple):
    kind: Kind
    routing: Routing
    epoch: int
    seq: int
    info: KindInfo


def peek(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Read a frame's header without looking at its payload.

    Checks the version byte, the reserved bytes, that the kind is known and
    that the whole frame is within its kind's size limit.
    """
    n = len(data)
    if n < HEADER_SIZE:
        raise ProtocolError("short_header", f"{n} bytes")
    if n > limits.max_keyframe:
        raise ProtocolError("too_big", f"{n} bytes")
    version, code, reserved, epoch, seq = _HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise ProtocolError("bad_version", f"wire version {version}")
    if reserved:
        raise ProtocolError("reserved_bits")
    info = KIND_INFO[code]
    if info is None:
        raise ProtocolError("unknown_kind", f"0x{code:02x}")
    if n > limits.frame_limit(info):
        raise ProtocolError("too_big", f"{n} bytes for {info.kind.name}")
    return Header(info.kind, info.routing, epoch, seq, info)


def stamp(data: bytes, epoch: int, seq: int) -> bytes:
    """Return ``data`` with its epoch and seq replaced; one copy, no decode."""
    return b"".join((data[:4], _EPOCH_SEQ.pack(epoch, seq), memoryview(data)[HEADER_SIZE:]))


# --- field checks ----------------------------------------------------------------
Check = Callable[[Any, Limits], Any]


def _wrong(v: Any) -> ProtocolError:
    if isinstance(v, msgpack.Timestamp):
        return ProtocolError("ext_type", "timestamp")
    return ProtocolError("wrong_type", type(v).__name__)


def _check_str(v: Any, lim: Limits) -> str:
    if type(v) is not str:
        raise _wrong(v)
    if len(v) > lim.max_string:
        raise ProtocolError("too_long", f"string of {len(v)}")
    return v


def _check_int(v: Any, lim: Limits) -> int:
    if type(v) is not int:
        raise _wrong(v)
    if not -_SAFE_INT < v < _SAFE_INT:
        raise ProtocolError("out_of_range", str(v))
    return v


def _check_float(v: Any, lim: Limits) -> float:
    t = type(v)
    if t is not float and t is not int:
        raise _wrong(v)
    if t is float and not math.isfinite(v):
        raise ProtocolError("not_finite", repr(v))
    if not -lim.coord_max <= v <= lim.coord_max:
        raise ProtocolError("out_of_range", repr(v))
    return float(v)


def _check_bool(v: Any, lim: Limits) -> bool:
    if type(v) is not bool:
        raise _wrong(v)
    return v


def _check_bytes(v: Any, lim: Limits) -> bytes:
    if type(v) is not bytes:
        raise _wrong(v)
    return v


def _check_strs(v: Any, lim: Limits) -> tuple[str, ...]:
    if type(v) is not tuple:
        raise _wrong(v)
    return tuple(_check_str(s, lim) for s in v)


def _check_point(v: Any, lim: Limits) -> tuple[float, float]:
    if type(v) is not tuple:
        raise _wrong(v)
    if len(v) != 2:
        raise ProtocolError("bad_value", f"point of {len(v)}")
    return (_check_float(v[0], lim), _check_float(v[1], lim))


def _check_points(v: Any, lim: Limits) -> tuple[tuple[float, float], ...]:
    if type(v) is not tuple:
        raise _wrong(v)
    return tuple(_check_point(p, lim) for p in v)


_CHECKS: dict[object, Check] = {
    str: _check_str,
    int: _check_int,
    float: _check_float,
    bool: _check_bool,
    bytes: _check_bytes,
    tuple[str, ...]: _check_strs,
    tuple[tuple[float, float], ...]: _check_points,
}


class _Field(NamedTuple):
    name: str
    check: Check
    required: bool
    is_float: bool
    is_points: bool


def _spec(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        t = hints[f.name]
        required = f.default is f.default_factory  # both MISSING
        out.append(_Field(f.name, _CHECKS[t], required, t is float, t == tuple[tuple[float, float], ...]))
    return tuple(out)


_SPECS: dict[Kind, tuple[_Field, ...]] = {k: _spec(c) for k, c in MESSAGE_TYPES.items()}
_CLIENT_ROLES = frozenset(r.value for r in (Role.VISITOR, Role.VIEWER, Role.DEVICE))


def _check_message(msg: Message) -> None:
    if isinstance(msg, Hello) and msg.role not in _CLIENT_ROLES:
        raise ProtocolError("bad_value", f"role {msg.role!r}")


# --- encode ----------------------------------------------------------------------
def _canon(v: float) -> float | int:
    # Integral floats travel as integers, as JavaScript encoders write them,
    # so both sides produce the same bytes for the same message.
    if type(v) is float and v.is_integer() and -_SAFE_INT < v < _SAFE_INT:
        return int(v)
    return v


def encode(msg: Message, *, epoch: int = 0, seq: int = 0) -> bytes:
    """Encode ``msg`` as one frame. Fields go in declaration order."""
    kind = msg.KIND
    body: dict[str, Any] = {}
    for f in _SPECS[kind]:
        v = getattr(msg, f.name)
        if f.is_float:
            v = _canon(v)
        elif f.is_points:
            v = [(_canon(x), _canon(y)) for x, y in v]
        body[f.name] = v
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    return _HEADER.pack(WIRE_VERSION, kind, 0, epoch, seq) + payload


# --- decode ----------------------------------------------------------------------
def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError("ext_type", f"ext type {code}")


_UNPACK_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (msgpack.ExtraData, "trailing_bytes"),
    (msgpack.StackError, "too_deep"),
    (msgpack.FormatError, "malformed"),
    (UnicodeDecodeError, "malformed"),
)


def _unpack(payload: memoryview, limits: Limits, size_limit: int) -> Any:
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_str_len=limits.max_string * 4,
            max_bin_len=size_limit,
            max_array_len=limits.max_list,
            max_map_len=64,
            # 0: every ext with a body fails the length check, before msgpack's
            # built-in timestamp (-1) handling, which bypasses ext_hook.
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except Exception as e:
        for cls, code in _UNPACK_ERRORS:
            if isinstance(e, cls):
                raise ProtocolError(code, str(e)) from None
        text = str(e)
        if "max_ext_len" in text or "timestamp" in text:
            raise ProtocolError("ext_type", text) from None
        if "incomplete input" in text:
            raise ProtocolError("truncated") from None
        if "exceeds max_" in text:
            raise ProtocolError("too_long", text) from None
        if "map key" in text:
            raise ProtocolError("bad_key", text) from None
        raise ProtocolError("malformed", text) from None


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and validate one frame. Raises only :class:`ProtocolError`."""
    header = peek(data, limits)
    body = _unpack(memoryview(data)[HEADER_SIZE:], limits, limits.frame_limit(header.info))
    if type(body) is not dict:
        raise ProtocolError("not_a_map", type(body).__name__)
    for key in body:  # strict_map_key admits bytes keys too
        if type(key) is not str:
            raise ProtocolError("bad_key", type(key).__name__)
    kwargs: dict[str, Any] = {}
    for f in _SPECS[header.kind]:
        if f.name in body:
            try:
                kwargs[f.name] = f.check(body[f.name], limits)
            except ProtocolError as e:
                raise ProtocolError(e.code, f"{f.name}: {e.detail}") from None
        elif f.required:
            raise ProtocolError("missing_field", f.name)
    msg: Message = MESSAGE_TYPES[header.kind](**kwargs)
    _check_message(msg)
    return msg
