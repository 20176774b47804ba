"""Logging: JSON or text lines to LOG_FILE (rotated), and short lines on stderr.

Every record may carry context through ``extra=``: ``request_id``, ``user_id``, ``session_id``
and ``task_id`` come first in a line, and any other extra attribute with a simple value
(``status``, ``duration_ms``...) follows. Secrets never reach a handler: values of keys named
like a credential (``authorization``, ``token``, ``api_key``, ``password``...), bearer tokens,
API tokens, provider keys and passwords in URLs are replaced by ``[REDACTED]``, in the message,
the extras and the traceback alike.

Tracebacks go to the log file only; the terminal gets one line naming the problem. This module
imports nothing from the rest of the package.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_BACKUPS",
    "LOG_MAX_BYTES",
    "REDACTED",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "redact",
]

LOG_MAX_BYTES = 10 * 1024 * 1024  # a log file is rotated when it would grow past this
LOG_BACKUPS = 5  # rotated files kept: agent.log.1 ... agent.log.5
CONTEXT_FIELDS = ("request_id", "user_id", "session_id", "task_id")
REDACTED = "[REDACTED]"

ConsoleFormat = Literal["brief", "text", "json"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_SIMPLE = (str, int, float, bool)
# A key whose value is a credential: it ends in one of these words (``max_tokens`` does not).
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:authorization|token|api[_\-]?key|secret|secret[_\-]?key|private[_\-]?key"
    r"|password|passwd|cookie|set[_\-]cookie|credentials?)$",
    re.IGNORECASE,
)
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # key=value, key: value, "key": "value", with a credential's key name
    (
        re.compile(
            r"""(?ix)
            (\b[\w\-]*(?:authorization|token|api[_\-]?key|secret|password|passwd|cookie)
             ["']?\s*[:=]\s*["']?)
            (?:bearer\s+|basic\s+)?[^\s"',;&}\]]+
            """
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), rf"\1 {REDACTED}"),
    # this project's API tokens: the id is public, the secret is not
    (re.compile(r"\b(at_[0-9a-f]{16}_)[A-Za-z0-9_\-]{43}"), rf"\1{REDACTED}"),
    # provider keys (sk-..., sk-ant-...)
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), f"sk-{REDACTED}"),
    # passwords in URLs: scheme://user:password@host
    (re.compile(r"(://[^/\s:@]*:)[^/\s@]+@"), rf"\1{REDACTED}@"),
)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``[REDACTED]`` (see the module docstring)."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret(value: object) -> bool:
    return hasattr(value, "get_secret_value")  # pydantic's SecretStr and SecretBytes


def _clean(key: str, value: Any) -> Any:
    """An extra's value as logged: redacted when its key or type says it is a secret."""
    if _is_secret(value) or (value is not None and _SECRET_KEY.search(key)):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    return value


def _extras(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The record's context fields, then its other simple extras, redacted."""
    attrs = record.__dict__
    for key in CONTEXT_FIELDS:
        value = attrs.get(key)
        if value is not None:
            yield key, _clean(key, value)
    for key, value in attrs.items():
        if key in _STANDARD_ATTRS or key in CONTEXT_FIELDS or key.startswith("_"):
            continue
        if value is None or isinstance(value, _SIMPLE) or _is_secret(value):
            yield key, _clean(key, value)


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids, other simple
    extras, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _extras(record):
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2025-01-01T12:00:00.000Z INFO logger: message key=value ...`` and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record)} {record.levelname} {record.name}: "
        text += redact(record.getMessage())
        pairs = [f"{key}={_text_value(value)}" for key, value in _extras(record)]
        if pairs:
            text += " " + " ".join(pairs)
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class _Brief(logging.Formatter):
    """``warning: message (cause)`` with no traceback, for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {redact(record.getMessage())}"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            cause = redact(next(iter(str(exc).splitlines()), ""))
            text += f" ({type(exc).__name__}: {cause})"
        return text


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt in ("text", "console"):
        return TextFormatter()
    if fmt == "brief":
        return _Brief()
    raise ValueError(f"Unknown log format {fmt!r}; use 'json' or 'text' (LOG_FORMAT).")


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(
            f"Unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL (LOG_LEVEL)."
        )
    return value


def configure_logging(
    level: str | int = "INFO",
    fmt: str = "json",
    log_file: Path | str | None = None,
    *,
    console_level: int = logging.WARNING,
    console_format: ConsoleFormat = "brief",
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """Set up the ``agent_template`` loggers once per process (later calls replace it).

    Args:
        level: the file's level (``LOG_LEVEL``).
        fmt: the file's format (``LOG_FORMAT``): ``json`` lines, or ``text`` (also
            ``console``).
        log_file: where to write (``LOG_FILE``; its folder is created), rotated at
            ``max_bytes`` with ``backups`` older files kept. None: no file.
        console_level: what reaches stderr; the CLI shows warnings, the server INFO too.
        console_format: ``brief`` (``warning: message``, for the CLI), ``text`` (timestamped,
            with the context ids) or ``json``.
        max_bytes: size at which the file is rotated.
        backups: rotated files kept.

    A log file that cannot be opened is reported on stderr and skipped.

    Raises:
        ValueError: an unknown level or format.
    """
    file_level = _level(level)
    file_formatter = _formatter(fmt)
    console_formatter = _formatter(console_format)
    logger = logging.getLogger("agent_template")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(min(file_level, console_level))
    logger.propagate = False
    # A plain StreamHandler: the server recognises the console handler by its type.
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(console_formatter)
    logger.addHandler(console)
    if log_file:
        path = Path(log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError as exc:
            logger.warning("cannot write the log file %s: %s", path, exc)
            return
        file_handler.setLevel(file_level)
        file_handler.setFormatter(file_formatter)
        logger.addHandler(file_handler)
