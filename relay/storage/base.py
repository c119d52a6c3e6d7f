"""The storage port: what the core needs kept, nothing about how.

Adapters (``sqlite.py``, and ``redis.py`` for clusters) implement
:class:`Store`; one contract suite in ``tests/relay/test_store_contract.py``
runs against each. All times are Unix seconds (float).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

__all__ = ["Visitor", "SessionRecord", "ViewerRecord", "Store", "SearchQuery", "parse_search"]


@dataclass(slots=True)
class Visitor:
    short_id: str
    unique_id: str = ""
    identities: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lookup_code: str = ""
    device_type: str = ""
    browser: str = ""
    ip: str = ""
    last_url: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0
    online: bool = False
    in_session: bool = False


class ViewerRecord(TypedDict):
    """One viewer slot of a session: what re-seats it after a restart."""

    id: str  # the slot's viewer id (the one its resume token names)
    agent_id: str
    agent_name: str
    permissions: list[str]  # its grant, before the visitor's own restriction


@dataclass(slots=True)
class SessionRecord:
    """One session's history row, and while it is open what a restart rebuilds it from.

    ``ended`` is None while the session is open. ``state`` is ``"requested"``
    or ``"live"`` while open and ``""`` once ended; ``viewers``, ``allow`` and
    ``epoch`` are the room's viewer slots, the visitor's own permission list
    (empty: the page restricts nothing) and the epoch its frames were stamped
    with (a restored room takes another one); ``left_viewers`` are the viewer
    ids that ended their part, whose resume tokens stay void. ``end_reason``
    says why it ended (``"visitor_gone"``, ``"relay_restart"``, ...), ``""``
    while open.
    """

    id: str
    visitor: str
    agents: list[dict[str, str]] = field(default_factory=list)  # [{"id", "name"}]
    observer: dict[str, str] = field(default_factory=dict)  # {"id", "name"} or {}
    started: float = 0.0
    ended: float | None = None
    went_live: bool = False
    features_used: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    state: str = ""  # "requested" | "live" while open; "" once ended
    viewers: list[ViewerRecord] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    epoch: int = 0
    left_viewers: list[str] = field(default_factory=list)
    end_reason: str = ""

    @property
    def length(self) -> float:
        return max(0.0, (self.ended or self.started) - self.started)


# --- search ----------------------------------------------------------------------
# Free text terms match (case-insensitively, as substrings) short id, unique id,
# identities, tags, lookup code and last URL; every term must match.
# ``field:value`` terms narrow to one field. ``online:true|false`` filters.
SEARCH_FIELDS = {
    "id": "short_id",
    "short_id": "short_id",
    "unique_id": "unique_id",
    "uid": "unique_id",
    "identity": "identities",
    "name": "identities",
    "email": "identities",
    "tag": "tags",
    "code": "lookup_code",
    "lookup_code": "lookup_code",
    "url": "last_url",
    "browser": "browser",
    "device": "device_type",
}


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()  # (column, value)
    online: bool | None = None


def parse_search(q: str) -> SearchQuery:
    """Parse the documented search syntax (README, "Search").

    A term is free text unless it reads ``name:value`` with ``name`` a word
    (letters and ``_``): then ``name`` must be one of :data:`SEARCH_FIELDS` or
    ``online`` (``true``/``false``/``yes``/``no``/``1``/``0``) and ``value``
    must not be empty. Anything else raises :class:`ValueError` whose message
    names the term. A bare URL (``https://...``) stays free text. At most 20
    terms are read.
    """
    text: list[str] = []
    fields_: list[tuple[str, str]] = []
    online: bool | None = None
    for term in q.split()[:20]:
        name, colon, value = term.partition(":")
        key = name.lower()
        if not colon or not name.replace("_", "a").isalpha() or value.startswith("//"):
            text.append(term)
        elif key == "online":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(f"{term!r}: online: takes true or false")
            online = value.lower() in ("true", "yes", "1")
        elif key not in SEARCH_FIELDS:
            known = ", ".join(f"{k}:" for k in (*SEARCH_FIELDS, "online"))
            raise ValueError(f"{term!r}: unknown field {name!r}; known fields are {known}")
        elif not value:
            raise ValueError(f"{term!r}: {key}: needs a value")
        else:
            fields_.append((SEARCH_FIELDS[key], value))
    return SearchQuery(tuple(text), tuple(fields_), online)


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    async def save_visitor(self, v: Visitor) -> None: ...
    async def get_visitor(self, short_id: str) -> Visitor | None: ...
    async def latest_visitors(self, limit: int) -> list[Visitor]: ...
    async def search_visitors(self, q: SearchQuery, limit: int) -> list[Visitor]: ...
    async def mark_all_offline(self) -> None: ...

    async def use_nonce(self, nonce: str, expires: float) -> bool:
        """Record ``nonce`` as used; False if it already was."""
        ...

    async def save_session(self, s: SessionRecord) -> None: ...
    async def get_session(self, session_id: str) -> SessionRecord | None: ...
    async def sessions_for(self, short_id: str, limit: int) -> list[SessionRecord]: ...

    async def open_sessions(self) -> list[SessionRecord]:
        """Every session not yet ended (``ended`` is None), oldest first."""
        ...

    async def close_sessions(self, ids: Sequence[str], ended: float, reason: str) -> int:
        """End the open sessions among ``ids`` at ``ended`` with ``reason``; return how many.

        Sessions already ended keep their own end.
        """
        ...

    async def expire_visitors(self, cutoff: float) -> int:
        """Delete visitors last seen before ``cutoff`` that are offline and never had a session.

        The ``VISITOR_RETENTION_DAYS`` rule. Returns how many were deleted.
        """
        ...

    # --- live-session codes ----------------------------------------------------------
    # The short code a visitor reads out to an agent (Genesys's 9-digit sessionToken).
    # A code names one visitor until its claim expires; a visitor holds one code at most.

    async def save_code(self, code: str, visitor: str, expires: float) -> bool:
        """Claim ``code`` for ``visitor`` until ``expires``; False if another visitor holds it unexpired.

        The visitor's previous code is released. Claiming the code it
        already holds again succeeds and moves its expiry.
        """
        ...

    async def visitor_of_code(self, code: str) -> str | None:
        """The visitor holding ``code``; None if unknown, dropped, released or expired."""
        ...

    async def code_of(self, visitor: str) -> str | None:
        """The code ``visitor`` holds unexpired, if any."""
        ...

    async def drop_code(self, code: str) -> None:
        """Release ``code`` (nothing if no one holds it)."""
        ...
