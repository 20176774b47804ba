"""Logging: JSON or text lines to LOG_FILE, and short warnings on stderr.

Tracebacks go to the log file only; the terminal gets one line naming the problem.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Brief(logging.Formatter):
    """``warning: message (cause)`` with no traceback, for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            cause = str(record.exc_info[1]).splitlines()[0]
            text += f" ({type(record.exc_info[1]).__name__}: {cause})"
        return text


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    log_file: Path | str | None = None,
    *,
    console_level: int = logging.WARNING,
) -> None:
    """Set up the ``agent_template`` loggers once per process (later calls replace it)."""
    logger = logging.getLogger("agent_template")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(min(logging.getLevelName(level), console_level))
    logger.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(_Brief())
    logger.addHandler(console)
    if log_file:
        path = Path(log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            logger.warning("cannot write the log file %s: %s", path, exc)
            return
        file_handler.setLevel(level)
        file_handler.setFormatter(
            JsonFormatter()
            if fmt == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logger.addHandler(file_handler)
