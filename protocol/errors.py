"""Errors raised by the protocol package.

There is one root, :class:`ProtocolError`; each instance carries a stable
string ``code`` (listed in ``docs/protocol.md``) and the websocket
``close_code`` a relay or client should close the offending socket with::

    ProtocolError                      close code
    ├── code="short_header"            4500 PROTOCOL_ERROR
    ├── code="bad_version"             4502 UNSUPPORTED_VERSION
    ├── code="reserved_bits"           4500
    ├── code="unknown_kind"            4503 UNKNOWN_KIND
    ├── code="too_big"                 4501 FRAME_TOO_BIG
    ├── code="truncated"               4500
    ├── code="malformed"               4500
    ├── code="too_deep"                4500
    ├── code="too_long"                4500
    ├── code="ext_type"                4500
    ├── code="trailing_bytes"          4500
    ├── code="not_a_map"               4500
    ├── code="bad_key"                 4500
    ├── code="missing_field"           4500
    ├── code="wrong_type"              4500
    ├── code="not_finite"              4500
    ├── code="out_of_range"            4500
    └── code="bad_value"               4500

Nothing else ever escapes :func:`protocol.decode` or :func:`protocol.peek`.
"""

from __future__ import annotations

from .closecodes import CloseCode

__all__ = ["ProtocolError", "ERROR_CLOSE_CODES"]

ERROR_CLOSE_CODES: dict[str, CloseCode] = {
    "short_header": CloseCode.PROTOCOL_ERROR,
    "bad_version": CloseCode.UNSUPPORTED_VERSION,
    "reserved_bits": CloseCode.PROTOCOL_ERROR,
    "unknown_kind": CloseCode.UNKNOWN_KIND,
    "too_big": CloseCode.FRAME_TOO_BIG,
    "truncated": CloseCode.PROTOCOL_ERROR,
    "malformed": CloseCode.PROTOCOL_ERROR,
    "too_deep": CloseCode.PROTOCOL_ERROR,
    "too_long": CloseCode.PROTOCOL_ERROR,
    "ext_type": CloseCode.PROTOCOL_ERROR,
    "trailing_bytes": CloseCode.PROTOCOL_ERROR,
    "not_a_map": CloseCode.PROTOCOL_ERROR,
    "bad_key": CloseCode.PROTOCOL_ERROR,
    "missing_field": CloseCode.PROTOCOL_ERROR,
    "wrong_type": CloseCode.PROTOCOL_ERROR,
    "not_finite": CloseCode.PROTOCOL_ERROR,
    "out_of_range": CloseCode.PROTOCOL_ERROR,
    "bad_value": CloseCode.PROTOCOL_ERROR,
}


class ProtocolError(Exception):
    """A frame broke the protocol. ``code`` is stable; ``detail`` is for humans."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in ERROR_CLOSE_CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail

    @property
    def close_code(self) -> CloseCode:
        return ERROR_CLOSE_CODES[self.code]
