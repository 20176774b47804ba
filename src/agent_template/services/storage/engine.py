"""Connecting to the database: URLs, SQLite pragmas, and who holds a task's lease."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_template.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CONNECT_FAILURES",
    "UNAVAILABLE",
    "async_url",
    "create_engine",
    "describe",
    "owner_is_dead",
    "process_owner",
    "safe_url",
]

SQLITE_BUSY_TIMEOUT_S = 30  # writers of other processes wait this long for the lock


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (OSError, TimeoutError, OperationalError, InterfaceError)


def _connect_failures() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import DBAPIError

    return (OSError, TimeoutError, DBAPIError)


# What "the database is not there" looks like, whichever driver says it.
UNAVAILABLE: tuple[type[BaseException], ...] = _unavailable_errors()
# While connecting, any driver error means the same (unknown database, user, password).
CONNECT_FAILURES: tuple[type[BaseException], ...] = _connect_failures()


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"


def describe(exc: BaseException) -> str:
    """One line about a driver error, without SQLAlchemy's SQL and background links."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return f"{type(cause).__name__}: {text}"


def async_url(url: str) -> str:
    """The SQLAlchemy async URL for a ``DATABASE_URL`` (``sqlite:///`` or ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"DATABASE_URL {url!r} is not a URL; use sqlite:///./data/agent_template.db "
            "or postgresql+asyncpg://user@host/db."
        )
    base = scheme.split("+")[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ConfigurationError(
        f"DATABASE_URL scheme {scheme!r} is not supported; use sqlite:/// or postgresql+asyncpg://."
    )


def process_owner() -> str:
    """This process's lease-owner name: host, pid and a nonce against pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True only when the owner is a process on this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def create_engine(url: str, connect_args: dict[str, Any]) -> AsyncEngine:
    """An async engine for ``url`` (already an async URL); SQLite gets WAL and foreign keys."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    kwargs: dict[str, Any] = {"connect_args": dict(connect_args)}
    sqlite = url.startswith("sqlite")
    if sqlite:
        path = url.partition(":///")[2]
        if path and path != ":memory:":
            await asyncio.to_thread(_make_parent, path)
        kwargs["connect_args"].setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
    engine = create_async_engine(url, **kwargs)
    if sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode keeps every commit across a crash of the process.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            cursor.close()

    return engine


def _make_parent(path: str) -> None:
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
