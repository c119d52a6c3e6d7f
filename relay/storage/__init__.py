"""Storage: one port (:mod:`.base`), adapters beside it."""

from __future__ import annotations

from ..settings import Settings
from .base import SearchQuery, SessionRecord, Store, Visitor, parse_search
from .redis import RedisStore
from .sqlite import SqliteStore

__all__ = ["SearchQuery", "SessionRecord", "Store", "Visitor", "open_storage", "parse_search"]


def open_storage(settings: Settings) -> Store:
    """The adapter the settings ask for (not yet opened): Redis when ``REDIS_URL`` is set, else SQLite."""
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    return SqliteStore(settings.data_dir / "relay.sqlite3")
