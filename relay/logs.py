"""Logging: one format (``LOG_FORMAT``) for uvicorn's lines and ours, secrets redacted.

:func:`setup` installs :func:`config` once with :func:`logging.config.dictConfig`;
``python -m relay`` hands the same dictionary to uvicorn (``log_config=``), so
the ``uvicorn``, ``uvicorn.error`` and ``uvicorn.access`` loggers write through
the same handler. Every handler carries :class:`Redact`: watch tokens, REST
keys, resume ids and Authorization values never reach a log line, at any level.

``text``: ``2026-01-02 03:04:05,678 INFO relay.events: session_started session=S1``.
``json``: one object per line, ``{"ts", "level", "logger", "msg", ...extra ids}``.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["Held", "JsonFormatter", "Redact", "TextFormatter", "config", "event", "hold", "redact", "setup"]

_events = logging.getLogger("relay.events")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}

REDACTED = "[redacted]"
# The whole query of the watch page and of every websocket path: ids, tokens, resume state.
_QUERY = re.compile(r"(/screen|/ws/[\w-]*)\?[^\s\"'<>]*")
# Any credential-like parameter, wherever it appears (URLs, forms, reprs).
_PARAM = re.compile(r"(?i)\b([\w-]*(?:token|key|secret|resume|password|signature))=([^&\s\"'<>;,]+)")
# Authorization header values: "authorization: X", ("authorization", "X"), {"authorization": "X"}.
_AUTH = re.compile(
    r"(?i)(\bauthorization\b['\"]?\s*[:=,]\s*(?:b?['\"])?)((?:bearer|basic|token)\s+)?([^'\"\s,)}\]]+)",
)

# Quoted credential fields in reprs and JSON: {"token": "X"}, token='X'.
_FIELD = re.compile(r"(?i)([\w-]*(?:token|key|secret|resume|password)['\"]?\s*[:=]\s*['\"])([^'\"]+)")
# websockets' debug dump of a frame's payload (a HELLO carries its token): only its size is kept.
_FRAME = re.compile(r"^([<>] (?:TEXT|BINARY|CONTINUATION)) .*?(\[\d+ bytes[^\]]*\])$", re.M)


def redact(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with every known secret shape, and each of ``literals``, replaced by ``[redacted]``."""
    for secret in literals:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _FRAME.sub(lambda m: f"{m.group(1)} {REDACTED} {m.group(2)}", text)
    text = _QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    text = _PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _FIELD.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _AUTH.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


class Redact(logging.Filter):
    """Rewrites a record before any handler formats it: message (args merged in),
    exception text, stack and string ``extra`` values all pass through :func:`redact`.

    ``literals`` are secrets known by value (REST_KEY, SECRET_KEY): removed verbatim
    wherever they would appear. Never drops a record; always returns True.
    """

    def __init__(self, literals: Iterable[str] = ()) -> None:
        super().__init__()
        self.literals = tuple(s for s in literals if len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the line (nor leak its args)
            message = str(record.msg)
        record.msg, record.args = redact(message, self.literals), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.literals)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.literals)
        for name, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, name, redact(value, self.literals))
        record._redacted = True
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in " \t\n\"'=\\"):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``asctime LEVEL logger: message k=v ...``, the ``extra`` ids appended as ``k=v``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = _extras(record)
        if extras:
            line += "".join(f" {k}={_text_value(v)}" for k, v in extras.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``,
    every ``extra`` id as its own field, and ``exc`` / ``stack`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        body: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            body.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body["exc"] = record.exc_text
        if record.stack_info:
            body["stack"] = record.stack_info
        return json.dumps(body, ensure_ascii=False, default=str)


def config(log_format: str, level: str, literals: Iterable[str] = (), stream: IO[str] | None = None) -> dict[str, Any]:
    """The dictConfig for ``LOG_FORMAT`` (text or json) and ``LOG_LEVEL``: one handler
    (stderr unless ``stream``) with :class:`Redact`, used by the root logger and by
    ``uvicorn`` / ``uvicorn.access`` (which do not propagate, so no line is doubled)."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format {log_format!r}: expected text or json")
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "filters": ["redact"],
        "stream": stream if stream is not None else sys.stderr,
    }
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redact, "literals": tuple(literals)}},
        "formatters": {log_format: {"()": formatter}},
        "handlers": {"console": handler},
        "root": {"level": upper, "handlers": ["console"]},
        "loggers": {
            "uvicorn": {"level": upper, "handlers": ["console"], "propagate": False},
            "uvicorn.error": {"level": upper, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


def setup(log_format: str, level: str, literals: Iterable[str] = (), stream: IO[str] | None = None) -> dict[str, Any]:
    """Install :func:`config` for the whole process; return it (for ``uvicorn.Config(log_config=...)``)."""
    cfg = config(log_format, level, literals, stream)
    logging.config.dictConfig(cfg)
    return cfg


class Held(logging.Handler):
    """Records logged before :func:`setup` (while settings are read), kept to be replayed after it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        """Detach, then hand every held record to its logger, as configured now."""
        logging.getLogger().removeHandler(self)
        records, self.records = self.records, []
        for record in records:
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)


def hold() -> Held:
    """Keep every record until :meth:`Held.replay`: nothing is printed in a format not yet chosen."""
    held = Held()
    root = logging.getLogger()
    root.addHandler(held)
    root.setLevel(logging.DEBUG)
    return held


def event(name: str, /, **ids: object) -> None:
    """Log one INFO line on ``relay.events``: text ``name k=v k=v``; json ``{"msg": name, k: v}``.

    ``ids`` are plain identifiers (session, visitor, viewer, node...). A key that
    clashes with a LogRecord attribute (``name``, ``msg``...) is logged with a
    trailing underscore. Values are redacted like any other line.
    """
    if not _events.isEnabledFor(logging.INFO):
        return
    extra = {(f"{k}_" if k in _STANDARD else k): v for k, v in ids.items()}
    _events.info(name, extra=extra)
