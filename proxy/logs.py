"""Logging: plain text or one JSON object per line, with the context of each line
(`account`, `carrier`, `session`, `message_id`) as fields of its own.

The context comes from two places. `bind()` sets it for the task that calls it and the
tasks that task starts later (a session's reader binds its name and account, a
carrier link its carrier name), so every line logged while handling that session or
link carries them. A log call may also name its own: `log.info(..., extra=context(
message_id=mid))`. JSON lines get each as a field (python-json-logger renders them);
plain lines keep their text as it was.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import json
import logging
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

CONTEXT_FIELDS = ("account", "carrier", "session", "message_id")

_NONE: Mapping[str, str] = MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "bounceback_log_context", default=_NONE
)


def bind(**fields: str) -> None:
    """Add `fields` to the log context of this task (and of the tasks it starts from
    now on). An empty value removes the field."""
    merged = {**_CONTEXT.get(), **fields}
    _CONTEXT.set({k: v for k, v in merged.items() if v})


def current() -> Mapping[str, str]:
    """The log context of this task."""
    return _CONTEXT.get()


def context(**fields: str) -> dict[str, str]:
    """`extra=` for one log call: fields of its own, on top of the task's."""
    return {k: v for k, v in fields.items() if v}


class ContextFilter(logging.Filter):
    """Puts the task's log context on each record (fields a call names win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(_JsonFormatter):
    """One compact JSON object per line: `at` (UTC, ISO 8601), `level`, `logger`,
    `message`, the context fields present, and `exception` for a failure."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={
                "asctime": "at",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
            },
            json_serializer=functools.partial(json.dumps, separators=(",", ":")),
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat()

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key in list(log_data):  # only the context fields among the extras
            if key not in ("at", "level", "logger", "message", "exception", *CONTEXT_FIELDS):
                del log_data[key]


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
        handler.addFilter(ContextFilter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
