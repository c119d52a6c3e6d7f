"""The frames the load generator sends: real protocol frames, built once, stamped cheaply.

Every delta is ``protocol.encode(DomDelta(data=...))`` whose ``data`` starts with
a u64 sequence number and a u64 send time (``time.perf_counter_ns()``, the
system-wide monotonic clock). A frame is built from a template by writing
those 16 bytes in place, so the load generator never re-encodes msgpack.

The relay rewrites header bytes 4-15 (epoch, seq) and nothing else; the
baselines forward the bytes untouched. Either way the stamp inside ``data``
arrives intact, so one parser serves every target.
"""

from __future__ import annotations

import struct

import protocol
from protocol import DomDelta, DomKeyframe

__all__ = [
    "STAMP",
    "FrameTemplate",
    "data_offset",
    "read_stamp",
    "KIND_DELTA",
    "KIND_KEYFRAME",
]

STAMP = struct.Struct(">QQ")  # seq, send time (ns)
KIND_KEYFRAME = int(protocol.Kind.DOM_KEYFRAME)
KIND_DELTA = int(protocol.Kind.DOM_DELTA)

# Payload of DomDelta / DomKeyframe: 0x81 (map of 1), 0xa4 "data", then a bin header.
_MAP_PREFIX = bytes([0x81, 0xA4]) + b"data"
_BIN_OFFSET = protocol.HEADER_SIZE + len(_MAP_PREFIX)  # 22: the bin type byte
_BIN_HEADER = {0xC4: 2, 0xC5: 3, 0xC6: 5}  # bin8, bin16, bin32: type byte + length


def data_offset(frame: bytes | bytearray | memoryview) -> int:
    """Offset of ``data``'s first byte in a DomDelta/DomKeyframe frame."""
    return _BIN_OFFSET + _BIN_HEADER[frame[_BIN_OFFSET]]


def read_stamp(frame: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(seq, send_ns) carried at the start of a frame's ``data``."""
    return STAMP.unpack_from(frame, _BIN_OFFSET + _BIN_HEADER[frame[_BIN_OFFSET]])


class FrameTemplate:
    """A DomDelta (or DomKeyframe) frame of exactly ``size`` bytes on the wire."""

    def __init__(self, size: int, keyframe: bool = False) -> None:
        cls = DomKeyframe if keyframe else DomDelta
        overhead = len(protocol.encode(cls(data=b"")))
        # The bin header grows with the data length: solve for the exact size.
        n = max(STAMP.size, size - overhead)
        while True:
            frame = protocol.encode(cls(data=bytes(n)))
            if len(frame) <= size or n == STAMP.size:
                break
            n -= 1
        self.size = len(frame)
        self.data_len = n
        self.buf = bytearray(frame)
        self.offset = data_offset(self.buf)
        # A recognisable filler so a corrupted forward is visible in tests.
        for i in range(self.offset + STAMP.size, len(self.buf)):
            self.buf[i] = i & 0xFF

    def stamp(self, seq: int, send_ns: int) -> bytearray:
        """Write seq and time into the template and return it (reused: send or copy at once)."""
        STAMP.pack_into(self.buf, self.offset, seq, send_ns)
        return self.buf

    def make(self, seq: int, send_ns: int) -> bytes:
        """A fresh immutable frame with the given stamp."""
        return bytes(self.stamp(seq, send_ns))
