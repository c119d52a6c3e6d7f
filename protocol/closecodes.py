"""Websocket close codes, and the reconnect policy they encode.

The range is the policy (as in Centrifuge's ``disconnect.go``):

* 4000-4499: something transient went wrong: reconnect with backoff.
* 4500-4999: the client or its credentials are wrong: do not retry.

Clients never switch on individual codes to decide whether to reconnect;
they call :func:`should_reconnect`. 1000 (normal) and 1001 (going away,
used on shutdown after ``/health`` turned 503) are standard codes: 1001 and
1006 (abnormal drop) are retryable, 1000 is not.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "RETRYABLE", "TERMINAL", "should_reconnect"]


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006  # never sent; seen by clients on a dropped connection

    # 4000-4499: reconnect with backoff
    INTERNAL_ERROR = 4000
    SLOW_CONSUMER = 4001
    KEEPALIVE_TIMEOUT = 4002
    SESSION_MOVED = 4003
    RATE_LIMITED = 4004
    OVERLOADED = 4005
    HANDSHAKE_TIMEOUT = 4006
    SLOW_MESSAGE = 4007

    # 4500-4999: do not retry
    PROTOCOL_ERROR = 4500
    FRAME_TOO_BIG = 4501
    UNSUPPORTED_VERSION = 4502
    UNKNOWN_KIND = 4503
    TOKEN_INVALID = 4504
    TOKEN_EXPIRED = 4505
    TOKEN_REUSED = 4506
    FORBIDDEN = 4507
    SESSION_ENDED = 4508
    DECLINED = 4509
    REPLACED = 4510
    NOT_FOUND = 4511


RETRYABLE: frozenset[int] = frozenset(range(4000, 4500)) | {1001, 1006, 1011, 1012, 1013}
TERMINAL: frozenset[int] = frozenset(range(4500, 5000)) | {1000, 1002, 1003, 1007, 1008, 1009}


def should_reconnect(code: int) -> bool:
    """True when a client closed with ``code`` should reconnect with backoff.

    Unknown codes outside both ranges are treated as transient: a client
    that gives up on an unknown code strands its user for good.
    """
    return code not in TERMINAL
