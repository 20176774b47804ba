"""Connecting to the database: URLs, SQLite pragmas, errors, and who holds a lease."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_template.errors import (
    ConfigurationError,
    StorageError,
    StorageMigrationError,
    StoragePermissionError,
    StorageUnavailableError,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from agent_template.services.storage.sqlite_worker import SQLiteWorker

__all__ = [
    "CONNECT_FAILURES",
    "UNAVAILABLE",
    "async_url",
    "create_engine",
    "describe",
    "migration_error",
    "owner_is_dead",
    "process_owner",
    "safe_url",
    "sqlite_file",
    "sqlite_path",
    "sqlite_pragmas",
    "sqlite_worker",
    "unavailable_error",
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


# What SQLite says when the file or its folder cannot be created or written: a permission
# problem on this machine, not a database that is down.
_SQLITE_DENIED = (
    "attempt to write a readonly database",
    "unable to open database file",
    "readonly database",
)
# Driver errors that mean the connection itself went away (asyncpg's class 08 errors, and the
# "connection is closed" it raises afterwards), whichever wrapper SQLAlchemy put around them.
_CONNECTION_LOST = ("PostgresConnectionError", "ConnectionDoesNotExistError")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wraps, and their causes."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is e for e in seen):
            continue
        seen.append(current)
        todo += [getattr(current, "orig", None), current.__cause__]
    return seen


def _denied(exc: BaseException) -> bool:
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return any(phrase in text for phrase in _SQLITE_DENIED)


def _connection_lost(exc: BaseException) -> bool:
    for error in _chain(exc):
        if getattr(error, "connection_invalidated", False):
            return True
        if isinstance(error, OSError | TimeoutError):
            return True
        if any(cls.__name__ in _CONNECTION_LOST for cls in type(error).__mro__):
            return True
    return False


def unavailable_error(url: str, exc: BaseException) -> StorageError:
    """The error for a database that cannot be reached (or a SQLite file that cannot be written)."""
    path = sqlite_path(url)
    if path is not None and _denied(exc):
        return StoragePermissionError(path, describe(exc))
    return StorageUnavailableError(safe_url(url), describe(exc))


def migration_error(url: str, exc: BaseException) -> StorageError:
    """The error for a failure while migrating a database that did answer.

    Only a lost connection is reported as unavailable; anything else (a revision this code
    does not know, a failed DDL statement) is a :class:`StorageMigrationError`.
    """
    path = sqlite_path(url)
    if path is not None and _denied(exc):
        return StoragePermissionError(path, describe(exc))
    if _connection_lost(exc):
        return StorageUnavailableError(safe_url(url), describe(exc))
    return StorageMigrationError(safe_url(url), describe(exc))


def sqlite_path(url: str) -> str | None:
    """The database file of a SQLite URL; None for other databases and in-memory ones."""
    if not url.startswith("sqlite"):
        return None
    return sqlite_file(url.partition(":///")[2].partition("?")[0])


def sqlite_file(database: str | None) -> str | None:
    """The file of a SQLite database name (a URL's path part); None for an in-memory one."""
    path = (database or "").removeprefix("file:")  # a URI filename (``?uri=true``)
    if not path or path == ":memory:":
        return None
    return str(Path(path).expanduser())


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
        path = sqlite_path(url)
        if path is not None:
            await asyncio.to_thread(_make_parent, path)
        kwargs["connect_args"].setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
    engine = create_async_engine(url, **kwargs)
    if sqlite:
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Set up a new SQLite connection: WAL, foreign keys, and the busy timeout."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode keeps every commit across a crash of the process.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.close()


def sqlite_worker(url: str, connect_args: dict[str, Any]) -> SQLiteWorker | None:
    """Worker threads for the statements of a SQLite file (``url`` an async URL); None for
    other databases and in-memory SQLite, whose statements go through the async engine."""
    if sqlite_path(url) is None:
        return None
    from agent_template.services.storage.sqlite_worker import SQLiteWorker

    sync_url = "sqlite+pysqlite" + url[url.index(":") :]
    args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **connect_args}
    return SQLiteWorker(sync_url, args, sqlite_pragmas)


def _make_parent(path: str) -> None:
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only, a file in the way, no such drive...
        detail = f"cannot create the folder {folder} ({type(exc).__name__}: {exc.strerror or exc})"
        raise StoragePermissionError(path, detail) from exc
