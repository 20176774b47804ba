"""Schema migrations with Alembic, applied programmatically at start-up.

Several processes may start at once on a new database (server replicas, two CLI runs), so
the upgrade runs under a lock that every one of them takes first: a transaction-scoped
advisory lock on PostgreSQL, an exclusive lock on a sibling file on SQLite. The second process
then finds the schema already at head and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent_template.errors import StoragePermissionError
from agent_template.services.storage.engine import sqlite_file

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "MIGRATION_LOCK_KEY", "current_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any fixed bigint works; it only has to differ from advisory-lock keys other programs use on
# the same database. These are the bytes of "agtmplmg" (agent-template migrations).
MIGRATION_LOCK_KEY = 0x6167_746D_706C_6D67
LOCK_SUFFIX = ".migrate.lock"
# The newest revision under migrations/versions (a test keeps the two in step). A database
# already there is opened without importing Alembic, which takes a third of a second.
HEAD_REVISION = "0005"


def _config(connection: Connection, schema: str | None) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head", schema: str | None = None) -> None:
    """Bring the database to ``revision`` (the newest by default); safe to run every start.

    Safe to run from many processes at once: they take turns (see the module docstring).

    Raises:
        StoragePermissionError: when the SQLite lock file beside the database cannot be
            created (the folder is not writable).
        Exception: whatever the driver or Alembic raised; :class:`SQLStore` translates it.
    """
    from sqlalchemy import text

    if revision == "head" and await _at_head(engine):
        return
    from alembic import command

    def run(connection: Connection) -> None:
        command.upgrade(_config(connection, schema), revision)  # type: ignore[arg-type]

    # The file lock first: the transaction must not begin before it is our turn.
    db_file = sqlite_file(engine.url.database) if engine.dialect.name == "sqlite" else None
    async with _sqlite_file_lock(db_file), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Transaction-scoped: held until Alembic's DDL commits (PostgreSQL DDL is
            # transactional), released by the commit or by the connection dying.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await connection.run_sync(run)


async def _at_head(engine: AsyncEngine) -> bool:
    """Whether the database is at :data:`HEAD_REVISION` already (False when unsure)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        async with engine.connect() as connection:
            found = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:  # no version table yet: a new database
        return False
    return bool(found == HEAD_REVISION)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


@contextlib.asynccontextmanager
async def _sqlite_file_lock(db_path: str | None) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``<db_path>.migrate.lock`` (nothing for other databases).

    SQLite runs Alembic's DDL outside a transaction, so without it two first starts both
    see an empty database and both ``CREATE TABLE``. The lock is an OS file lock, released
    when the process dies, so a crash mid-migration never leaves it stuck.
    """
    if db_path is None:
        yield
        return
    acquiring = asyncio.ensure_future(asyncio.to_thread(_acquire, db_path + LOCK_SUFFIX))
    try:
        # Blocking flock in a worker thread: the event loop keeps serving while we wait.
        fd = await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        # The thread cannot be stopped; release the lock whenever it gets it.
        acquiring.add_done_callback(_release_when_acquired)
        raise
    try:
        yield
    finally:
        _release(fd)


def _acquire(lock_path: str) -> int | None:
    if sys.platform == "win32":
        # No fcntl on Windows: migrations run unlocked there, so do not start several
        # processes at once on a new SQLite database on Windows.
        return None
    import fcntl

    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        db_path = lock_path.removesuffix(LOCK_SUFFIX)
        detail = f"cannot create the lock file {lock_path} ({type(exc).__name__}: {exc.strerror})"
        raise StoragePermissionError(db_path, detail) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _release_when_acquired(future: asyncio.Future[int | None]) -> None:
    if not future.cancelled() and future.exception() is None:
        _release(future.result())
