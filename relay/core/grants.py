"""Watch grants and resume tokens: HMAC-SHA256-signed, expiring claims.

A token is ``base64url(json claims) "." base64url(hmac_sha256(key, kind + claims))``.
The claims are readable by anyone holding the token (the viewer page reads
its branding from them) and trusted only after :meth:`Signer.verify`.

Kinds keep tokens apart: a resume token (``"r"``) never verifies as a watch
grant (``"g"``), and the other way round; a CoClick API bearer token (``"a"``,
:class:`ApiTokenClaim`) is neither, and is written with an ``api.`` prefix so
it cannot be mistaken for one at a glance either. Single use is not decided here: a
grant's ``nonce`` is recorded by the store when first used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .errors import TokenExpired, TokenInvalid

__all__ = ["API_TOKEN_PREFIX", "ApiTokenClaim", "Grant", "ResumeClaim", "Signer"]

TokenKind = Literal["g", "r", "a"]
API_TOKEN_PREFIX = "api."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Grant:
    """What a watch URL allows: who may watch whom, with which permissions."""

    visitor: str
    agent_id: str
    agent_name: str
    permissions: tuple[str, ...]
    expires: float
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    observer_id: str = ""
    observer_name: str = ""
    branding: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def claims(self) -> dict[str, Any]:
        return {
            "v": self.visitor,
            "a": self.agent_id,
            "an": self.agent_name,
            "p": list(self.permissions),
            "e": int(self.expires),
            "j": self.nonce,
            "o": self.observer_id,
            "on": self.observer_name,
            "b": self.branding,
            "m": self.metadata,
        }

    @classmethod
    def from_claims(cls, c: dict[str, Any]) -> Grant:
        try:
            return cls(
                visitor=str(c["v"]),
                agent_id=str(c["a"]),
                agent_name=str(c["an"]),
                permissions=tuple(str(p) for p in c["p"]),
                expires=float(c["e"]),
                nonce=str(c["j"]),
                observer_id=str(c.get("o", "")),
                observer_name=str(c.get("on", "")),
                branding=dict(c.get("b") or {}),
                metadata=dict(c.get("m") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TokenInvalid("claims") from e


@dataclass(frozen=True, slots=True)
class ResumeClaim:
    """Re-admits one viewer to one session until the session ends."""

    visitor: str
    session: str
    viewer: str
    agent_id: str
    agent_name: str
    permissions: tuple[str, ...]
    expires: float

    def claims(self) -> dict[str, Any]:
        return {
            "v": self.visitor,
            "s": self.session,
            "w": self.viewer,
            "a": self.agent_id,
            "an": self.agent_name,
            "p": list(self.permissions),
            "e": int(self.expires),
        }

    @classmethod
    def from_claims(cls, c: dict[str, Any]) -> ResumeClaim:
        try:
            return cls(
                visitor=str(c["v"]),
                session=str(c["s"]),
                viewer=str(c["w"]),
                agent_id=str(c["a"]),
                agent_name=str(c["an"]),
                permissions=tuple(str(p) for p in c["p"]),
                expires=float(c["e"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TokenInvalid("claims") from e


@dataclass(frozen=True, slots=True)
class ApiTokenClaim:
    """A CoClick API bearer token: which API key it was issued for, until when.

    The key is checked again on every use (a revoked key's tokens stop working).
    ``expires`` keeps milliseconds (the API answers ``expires_at`` with them).
    """

    key: str
    expires: float

    def claims(self) -> dict[str, Any]:
        return {"k": self.key, "e": round(self.expires, 3)}

    @classmethod
    def from_claims(cls, c: dict[str, Any]) -> ApiTokenClaim:
        try:
            return cls(key=str(c["k"]), expires=float(c["e"]))
        except (KeyError, TypeError, ValueError) as e:
            raise TokenInvalid("claims") from e


class Signer:
    """Signs and verifies tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("secret key must be at least 16 bytes")
        self._key = key

    def _mac(self, kind: TokenKind, body: str) -> bytes:
        return hmac.new(self._key, kind.encode() + b"." + body.encode("ascii"), hashlib.sha256).digest()

    def sign(self, kind: TokenKind, claims: dict[str, Any]) -> str:
        body = _b64(orjson.dumps(claims))
        return f"{body}.{_b64(self._mac(kind, body))}"

    def verify(self, kind: TokenKind, token: str, now: float | None = None) -> dict[str, Any]:
        """Return the claims of a genuine, unexpired token; raise otherwise."""
        body, dot, sig = token.partition(".")
        if not dot or not body or not sig or len(token) > 16384:
            raise TokenInvalid("shape")
        try:
            given = _unb64(sig)
            raw = _unb64(body)
        except (ValueError, UnicodeEncodeError) as e:
            raise TokenInvalid("encoding") from e
        if not hmac.compare_digest(given, self._mac(kind, body)):
            raise TokenInvalid("signature")
        try:
            claims = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise TokenInvalid("claims") from e
        if not isinstance(claims, dict):
            raise TokenInvalid("claims")
        exp = claims.get("e")
        if not isinstance(exp, int | float) or (time.time() if now is None else now) >= exp:
            raise TokenExpired()
        return claims

    def grant(self, grant: Grant) -> str:
        return self.sign("g", grant.claims())

    def read_grant(self, token: str, now: float | None = None) -> Grant:
        return Grant.from_claims(self.verify("g", token, now))

    def resume(self, claim: ResumeClaim) -> str:
        return self.sign("r", claim.claims())

    def read_resume(self, token: str, now: float | None = None) -> ResumeClaim:
        return ResumeClaim.from_claims(self.verify("r", token, now))

    def api_token(self, claim: ApiTokenClaim) -> str:
        return API_TOKEN_PREFIX + self.sign("a", claim.claims())

    def read_api_token(self, token: str, now: float | None = None) -> ApiTokenClaim:
        if not token.startswith(API_TOKEN_PREFIX):
            raise TokenInvalid("shape")
        return ApiTokenClaim.from_claims(self.verify("a", token.removeprefix(API_TOKEN_PREFIX), now))
