"""The storage port: what the core needs kept, nothing about how.

Adapters (``sqlite.py``, and ``redis.py`` for clusters) implement
:class:`Store`; one contract suite in ``tests/relay/test_store_contract.py``
runs against each. All times are Unix seconds (float).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, get_args

__all__ = [
    "HISTORY_MAX",
    "MEETINGS_PER_MAX",
    "MEETING_STATUSES",
    "PAGEVIEW_TITLE_MAX",
    "PAGEVIEW_URL_MAX",
    "ApiKey",
    "Meeting",
    "MeetingFilter",
    "Pageview",
    "SearchQuery",
    "SessionRecord",
    "Store",
    "Usage",
    "ViewerRecord",
    "Visitor",
    "parse_search",
]


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


# --- visitors' history (the cloud API's ``with_history``) ----------------------------------
HISTORY_MAX = 200  # pageviews kept per visitor; older ones are dropped as new ones come
PAGEVIEW_URL_MAX = 2048  # characters of a pageview's URL kept (the rest is cut off)
PAGEVIEW_TITLE_MAX = 256  # characters of a pageview's title kept


@dataclass(frozen=True, slots=True)
class Pageview:
    """One page a visitor opened: at most :data:`HISTORY_MAX` kept per visitor."""

    url: str
    title: str
    at: float


def clip_pageview(url: str, title: str) -> tuple[str, str]:
    """``url`` and ``title`` cut to what the store keeps (:data:`PAGEVIEW_URL_MAX`, :data:`PAGEVIEW_TITLE_MAX`)."""
    return url[:PAGEVIEW_URL_MAX], title[:PAGEVIEW_TITLE_MAX]


# --- usage (the cloud API's usage.json) ------------------------------------------------------
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Usage:
    """The figures of the cloud API's ``usage.json``, one field per figure, named ``<group>_<figure>``.

    Windows run from their start to the present (``now`` is the present:
    nothing is dated after it). ``visitors_*``: visitors seen in the window
    (``last_seen`` in it) or online now. ``agents_*``: distinct agent ids
    (``SessionRecord.agents``, not the observer) of sessions started in the
    window; an agent's activity is kept apart from the sessions, so it still
    counts after its sessions' visitor was deleted. ``session_counts_*`` and
    ``session_seconds_*``: the sessions the store holds that started in the
    window (requested ones that never went live included), seconds being
    ``ended - started``, or ``now - started`` while open;
    ``session_counts_now``: the sessions not yet ended. "today" starts at the
    ``day_start`` given to :meth:`Store.usage` (UTC midnight by default).
    """

    visitors_online_now: int = 0
    visitors_last_24_hrs: int = 0
    visitors_last_30_days: int = 0
    agents_today: int = 0
    agents_last_30_days: int = 0
    session_counts_now: int = 0
    session_counts_today: int = 0
    session_counts_last_30_days: int = 0
    session_seconds_today: int = 0
    session_seconds_last_30_days: int = 0

    def as_json(self) -> dict[str, dict[str, int]]:
        """The ``usage`` object of ``usage.json``, nested as the API has it."""
        return {
            "visitors": {
                "online_now": self.visitors_online_now,
                "last_24_hrs": self.visitors_last_24_hrs,
                "last_30_days": self.visitors_last_30_days,
            },
            "agents": {"today": self.agents_today, "last_30_days": self.agents_last_30_days},
            "session_counts": {
                "now": self.session_counts_now,
                "today": self.session_counts_today,
                "last_30_days": self.session_counts_last_30_days,
            },
            "session_seconds": {
                "today": self.session_seconds_today,
                "last_30_days": self.session_seconds_last_30_days,
            },
        }


class UsageWindows(TypedDict):
    """Where each window of :meth:`Store.usage` starts (Unix seconds)."""

    day: float  # "last_24_hrs"
    today: float  # "today"
    month: float  # "last_30_days"


def usage_windows(now: float, day_start: float | None) -> UsageWindows:
    """The starts of the usage windows ending at ``now``; "today" from ``day_start`` (UTC midnight if None)."""
    return {
        "day": now - DAY,
        "today": now - now % DAY if day_start is None else day_start,
        "month": now - 30 * DAY,
    }


# --- meetings (the CoClick meetings API) -----------------------------------------------------
# The statuses in the API's order, which ``status_gt`` / ``status_lt`` compare by (an enum
# declared in this order: scheduled < in_progress < closed < cancelled).
MeetingStatus = Literal["scheduled", "in_progress", "closed", "cancelled"]
MEETING_STATUSES: tuple[str, ...] = get_args(MeetingStatus)
MEETINGS_PER_MAX = 100  # the largest page list_meetings returns
MeetingField = Literal["user_email", "status", "starts_at"]
MeetingOp = Literal["cont", "eq", "gt", "lt"]


@dataclass(slots=True)
class Meeting:
    """One CoClick meeting: every field of the API's meeting object but the two room URLs.

    ``id`` is the API's ``id`` (``token`` in the one-meeting answers), 64
    hex digits there; the store takes any string the caller makes.
    ``presenter_room_url`` and ``prospect_room_url`` are derived from the id
    by the HTTP layer, so not stored. ``user`` is the owner's email (the
    API's ``user``; ``q[user_email_cont]`` filters on it). ``duration`` is
    kept as given (the API documents no unit and shows only null).
    ``created_at`` orders lists; ``updated_at`` is the caller's.
    """

    id: str
    user: str
    starts_at: float
    cobrowsing_url: str
    status: str = "scheduled"  # one of MEETING_STATUSES
    duration: int | None = None
    cobrowsing_cookies_data: list[dict[str, str]] = field(default_factory=list)  # [{"domain", "name", "value"}]
    custom_data: dict[str, Any] | None = None
    presenter_waiting_room_iframe_url: str | None = None
    prospect_waiting_room_iframe_url: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class MeetingFilter:
    """One ``q[FIELD_OP]=VALUE`` predicate of the meetings list; a list's predicates are and-ed.

    ``user_email`` takes ``cont`` (case-insensitive substring, ``str``);
    ``status`` takes ``eq``, ``gt``, ``lt`` with one of
    :data:`MEETING_STATUSES` (compared in that order); ``starts_at`` takes
    ``eq``, ``gt``, ``lt`` with Unix seconds. Anything else raises
    :class:`ValueError` naming the predicate.
    """

    field: MeetingField
    op: MeetingOp
    value: str | float

    def __post_init__(self) -> None:
        name = f"{self.field}_{self.op}"
        if self.field == "user_email":
            ok = self.op == "cont" and isinstance(self.value, str)
        elif self.field == "status":
            ok = self.op in ("eq", "gt", "lt") and self.value in MEETING_STATUSES
        elif self.field == "starts_at":
            ok = (
                self.op in ("eq", "gt", "lt")
                and isinstance(self.value, int | float)
                and not isinstance(self.value, bool)
            )
        else:
            ok = False
        if not ok:
            raise ValueError(f"{name}: not a meetings filter, or {self.value!r} is not its kind of value")

    def matches(self, m: Meeting) -> bool:
        """Whether ``m`` passes this predicate (what each adapter's query does)."""
        if self.field == "user_email":
            return str(self.value).lower() in m.user.lower()
        have: float
        want: float
        if self.field == "status":
            if m.status not in MEETING_STATUSES:
                return False  # as SQL's NULL: no predicate holds
            have, want = MEETING_STATUSES.index(m.status), MEETING_STATUSES.index(str(self.value))
        else:
            have, want = m.starts_at, float(self.value)
        return {"eq": have == want, "gt": have > want, "lt": have < want}[self.op]


def meeting_page(page: int, per: int) -> tuple[int, int]:
    """(meetings to skip, page size) for ``page`` (from 1) of ``per``, capped at :data:`MEETINGS_PER_MAX`.

    ValueError if ``page`` or ``per`` is below 1.
    """
    if page < 1 or per < 1:
        raise ValueError(f"page {page}, per {per}: both start at 1")
    per = min(per, MEETINGS_PER_MAX)
    return (page - 1) * per, per


# --- API keys --------------------------------------------------------------------------------
@dataclass(slots=True)
class ApiKey:
    """A key an operator made: CoClick's ``secret_id`` / ``secret_key`` pair, or a device registration key.

    ``id`` is the public part (``secret_id``); ``secret_hash`` is what the
    HTTP or CLI layer derived from the secret (the store never sees the
    secret). ``revoked_at`` is None while the key is valid.
    """

    id: str
    kind: str  # "coclick" | "registration"
    secret_hash: str
    name: str = ""
    company: str = ""
    created_at: float = 0.0
    revoked_at: float | None = None


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

    # --- the cloud API: deleting visitors, usage, history ------------------------------
    # A visitor's data is its row, its sessions, its live-session code and its history.

    async def delete_visitor(self, short_id: str) -> bool:
        """Delete the visitor and all its data; False if there was no such visitor.

        Online or not: ending what it has open is the caller's business (a
        visitor saved again afterwards is a new row). Its sessions and
        history go even when the visitor row itself was already gone.
        """
        ...

    async def delete_offline_visitors(self, batch: int) -> int:
        """Delete up to ``batch`` offline visitors (least recently seen first) with all their data.

        Returns how many; the caller calls again until 0. An online visitor
        is never deleted (checked atomically with its deletion).
        """
        ...

    async def usage(self, now: float, day_start: float | None = None) -> Usage:
        """The usage figures at ``now`` (:class:`Usage`); "today" starts at ``day_start``, UTC midnight if None."""
        ...

    async def add_pageview(self, short_id: str, url: str, title: str, at: float) -> bool:
        """Append a pageview to the visitor's history; False (nothing kept) for an unknown visitor.

        Bounded: the most recent :data:`HISTORY_MAX` are kept, older ones
        dropped in the same write; ``url`` and ``title`` are cut to
        :data:`PAGEVIEW_URL_MAX` and :data:`PAGEVIEW_TITLE_MAX` characters.
        A visitor's history goes with it (deletion, retention expiry).
        """
        ...

    async def history(self, short_id: str, limit: int) -> list[Pageview]:
        """The visitor's most recent pageviews, newest (last added) first, ``limit`` at most."""
        ...

    # --- meetings (CoClick) -----------------------------------------------------------------
    async def save_meeting(self, m: Meeting) -> None:
        """Upsert ``m`` whole. ValueError if its status is not one of :data:`MEETING_STATUSES`.

        Meetings are made by authenticated API clients only; the store does
        not cap their number.
        """
        ...

    async def get_meeting(self, meeting_id: str) -> Meeting | None: ...

    async def list_meetings(self, filters: Sequence[MeetingFilter], page: int, per: int) -> tuple[list[Meeting], int]:
        """Page ``page`` (from 1) of ``per`` meetings passing every filter, newest ``created_at`` first; and the total.

        Ties in ``created_at`` go by id, descending. ``per`` is capped at
        :data:`MEETINGS_PER_MAX`; ValueError if ``page`` or ``per`` is below
        1. A page past the end is empty (the total still counts).
        """
        ...

    # --- API keys ---------------------------------------------------------------------------
    async def save_api_key(self, k: ApiKey) -> None:
        """Upsert ``k`` whole (saving a revoked key with ``revoked_at`` None restores it).

        Keys are made by operators only (the CLI, an authenticated API).
        """
        ...

    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    async def list_api_keys(self, kind: str) -> list[ApiKey]:
        """Every key of ``kind``, revoked ones included, newest ``created_at`` first (ties by id, descending)."""
        ...

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Mark the key revoked at ``at``; False if unknown or already revoked (its first revocation stays)."""
        ...
