"""Domain errors. One root; each knows its websocket close code and HTTP status.

::

    RelayError                 close  http
    ├── TokenInvalid           4504   401
    ├── TokenExpired           4505   401
    ├── TokenReused            4506   401
    ├── Forbidden              4507   403
    ├── NotFound               4511   404
    ├── SessionEnded           4508   410
    ├── RateLimited            4004   429
    ├── Moved                  4003   409  (cluster: the session is served by another node)
    └── Unavailable            4000   503
"""

from __future__ import annotations

from protocol import CloseCode

__all__ = [
    "RelayError",
    "TokenInvalid",
    "TokenExpired",
    "TokenReused",
    "Forbidden",
    "NotFound",
    "SessionEnded",
    "RateLimited",
    "Moved",
    "Unavailable",
]


class RelayError(Exception):
    close_code: CloseCode = CloseCode.INTERNAL_ERROR
    status: int = 500
    code: str = "internal_error"


class TokenInvalid(RelayError):
    close_code, status, code = CloseCode.TOKEN_INVALID, 401, "token_invalid"


class TokenExpired(RelayError):
    close_code, status, code = CloseCode.TOKEN_EXPIRED, 401, "token_expired"


class TokenReused(RelayError):
    close_code, status, code = CloseCode.TOKEN_REUSED, 401, "token_reused"


class Forbidden(RelayError):
    close_code, status, code = CloseCode.FORBIDDEN, 403, "forbidden"


class NotFound(RelayError):
    close_code, status, code = CloseCode.NOT_FOUND, 404, "not_found"


class SessionEnded(RelayError):
    close_code, status, code = CloseCode.SESSION_ENDED, 410, "session_ended"


class RateLimited(RelayError):
    close_code, status, code = CloseCode.RATE_LIMITED, 429, "rate_limited"


class Unavailable(RelayError):
    close_code, status, code = CloseCode.INTERNAL_ERROR, 503, "unavailable"


class Moved(RelayError):
    """Cluster mode: the session (or the visitor's socket) is on node ``node``; go there."""

    close_code, status, code = CloseCode.SESSION_MOVED, 409, "session_moved"

    def __init__(self, node: str, url: str = "") -> None:
        super().__init__(f"the session is served by node {node}")
        self.node, self.url = node, url
