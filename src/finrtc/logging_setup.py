"""Structured logs: one JSON object per line, with the room / participant / session in context.

Context lives in a contextvar, so it follows a request handler and every task it creates:

    with log_context(room=room.name, participant=identity):
        log.info("joined")          # {"room": "...", "participant": "...", "message": "joined"}

asyncio tasks copy the context when created; `loop.run_in_executor` does NOT, so a worker thread
(a track's hook worker) binds its own context with `log_context(...)` at the top of its loop, or
runs under `contextvars.copy_context().run(...)`.

Secrets never reach the output: fields whose name looks like a secret are replaced, and JWTs,
bearer tokens and `token=` / `secret=` query parameters are masked inside messages (aiohttp's
access log prints request lines with their query strings).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import re
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TextIO

CONTEXT_FIELDS = ("room", "participant", "role", "session", "track", "request_id")
REDACTED = "[redacted]"

# The value is never mutated, only replaced, so one shared empty default is safe.
_EMPTY: Mapping[str, str] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "finrtc_log_context", default=_EMPTY
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_SECRET_NAME = re.compile(
    r"secret|password|passwd|token|authorization|credential|api_key|apikey|private|signature",
    re.IGNORECASE,
)
_SECRET_PATTERNS = (
    # JWT: three base64url parts, the first two starting with '{"' encoded.
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (
        re.compile(r"(?i)\b([\w-]*(?:token|secret|password|passwd|api_?key|signature))=[^&\s\"']+"),
        r"\1=" + REDACTED,
    ),
    # A mapping printed into a message: {'api_secret': '...'} or {"token": "..."}.
    (
        re.compile(
            r"(?i)(['\"][\w-]*(?:token|secret|password|passwd|credential|api_?key)['\"]\s*:\s*)"
            r"(['\"])[^'\"]*\2"
        ),
        r"\1\2" + REDACTED + r"\2",
    ),
    (re.compile(r"(?i)\b(v1)=[0-9a-f]{64}"), r"\1=" + REDACTED),
)

_HANDLER_MARK = "_finrtc_handler"
# Fields of the whole process (which node and media worker wrote the line), set once at start.
_process_fields: dict[str, str] = {}


def set_process_fields(**fields: object) -> None:
    """`node=` / `worker=` on every line this process logs, from any thread."""
    _process_fields.update({key: str(value) for key, value in fields.items()})


def current_log_context() -> dict[str, str]:
    return dict(_context.get())


def bind_log_context(**fields: object) -> contextvars.Token[Mapping[str, str]]:
    """Add fields to the current context (None removes one); undo with `reset_log_context`.

    For code that cannot use a `with` block, e.g. a task that lives as long as its track.
    """
    merged = dict(_context.get())
    for key, value in fields.items():
        if key not in CONTEXT_FIELDS:
            known = ", ".join(CONTEXT_FIELDS)
            raise ValueError(f"unknown log context field {key!r}; known: {known}")
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return _context.set(merged)


def reset_log_context(token: contextvars.Token[Mapping[str, str]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Fields (room=, participant=, role=, session=, track=, request_id=) for logs in the block."""
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        reset_log_context(token)


def redact_text(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_NAME.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, context fields, `extra=` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        entry.update(_process_fields)
        entry.update(_context.get())
        for key, value in _extras(record).items():
            if key not in entry:
                entry[key] = _redact_value(key, value)
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the same context and redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact_text(super().format(record))
        fields = {**_process_fields, **_context.get()}
        for key, value in _extras(record).items():
            fields.setdefault(key, _redact_value(key, value))
        if fields:
            line += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return line


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] | str = "info",
    fmt: Literal["json", "text"] | str = "json",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install finrtc's handler on the root logger (replacing a previous one; idempotent).

    Call once at start-up with `config.logging.level` and `config.logging.format`.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; use json or text")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp's access log at info would print a line per media HTTP request; keep it to
    # warnings unless debugging.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
    )
    return handler
