"""The SQL repository: sessions, messages, tasks, todos on SQLite or PostgreSQL.

:class:`SQLStore` is assembled here from its parts in ``messages.py`` (message rows),
``leases.py`` (tasks and leases) and ``tokens.py`` (bearer tokens); with ``checks.py``, the
only modules with SQL in them. Every write is one transaction committed before the call
returns, so whatever a caller acknowledges afterwards survives a crash of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import delete, insert, select, update

from agent_template.errors import StorageError
from agent_template.models import Session
from agent_template.services.storage import schema as s
from agent_template.services.storage import statements as q
from agent_template.services.storage.approvals import Approvals
from agent_template.services.storage.codec import COMPRESS_ABOVE_BYTES
from agent_template.services.storage.engine import (
    CONNECT_FAILURES,
    UNAVAILABLE,
    async_url,
    create_engine,
    migration_error,
    process_owner,
    sqlite_worker,
    unavailable_error,
)
from agent_template.services.storage.leases import TaskLeases
from agent_template.services.storage.messages import MessageLog
from agent_template.services.storage.records import MessageRecord, TaskRecord, TodoRecord
from agent_template.services.storage.tokens import ApiTokens
from agent_template.services.storage.upsert import upsert

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from agent_template.services.storage.sqlite_worker import SQLiteWorker

__all__ = ["MessageRecord", "SQLStore", "TaskRecord", "TodoRecord", "async_url"]


T = TypeVar("T")


async def _finish(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even when the caller is cancelled meanwhile (the
    cancellation is raised once it has ended), so a connection is never left half-used."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise
        with contextlib.suppress(Exception):
            await asyncio.gather(task, return_exceptions=True)
        raise


class _Guarded:
    """A connection whose statements run to their end even when the caller is cancelled.

    A statement interrupted in the driver leaves SQLAlchemy no choice but to discard its
    connection, and SQLite's connection (with the write lock of its open transaction) then
    lingers until it is collected. Finishing the statement first lets the transaction be
    rolled back and the connection returned as usual.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await _finish(self._conn.execute(*args, **kwargs))

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await _finish(self._conn.scalar(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class SQLStore(MessageLog, TaskLeases, ApiTokens, Approvals):
    """Sessions, messages, tasks and todos in a SQL database.

    Args:
        url: ``DATABASE_URL``: ``sqlite:///path`` (the folder is created) or
            ``postgresql+asyncpg://...``.
        compress_above: message bodies larger than this many bytes are stored LZ4-compressed.
        connect_args: passed to the driver (for example a PostgreSQL ``search_path``).

    Nothing happens until :meth:`open` (called by the first operation), which applies the
    migrations. Messages come from :class:`MessageLog`; tasks, their leases and the session
    run lease from :class:`TaskLeases`; the server's bearer tokens from :class:`ApiTokens`;
    approval requests from :class:`Approvals`.
    """

    def __init__(
        self,
        url: str,
        *,
        compress_above: int = COMPRESS_ABOVE_BYTES,
        connect_args: dict[str, Any] | None = None,
        migrate: bool = True,
    ) -> None:
        self.url = async_url(url)
        self.compress_above = compress_above
        self._connect_args = connect_args or {}
        self._migrate = migrate
        self._engine: AsyncEngine | None = None
        self._worker: SQLiteWorker | None = None
        self._opening = asyncio.Lock()
        # SQLite has one writer at a time: this process's writers queue here, in order,
        # instead of polling the file lock against each other (busy_timeout still covers
        # writers of other processes).
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.owner = process_owner()

    @property
    def dialect(self) -> str:
        return self.url.split("+")[0]

    async def open(self) -> AsyncEngine:
        """Connect lazily and apply the migrations (other processes may do so at once).

        Raises:
            StorageUnavailableError: when the database cannot be reached, refuses the
                connection (unknown database, user or password), or goes away meanwhile.
            StoragePermissionError: when the SQLite file or its folder cannot be created or
                written.
            StorageMigrationError: when the database answered but a migration failed.
        """
        if self._engine is not None:
            return self._engine
        async with self._opening:  # concurrent first calls share one engine
            if self._engine is None:
                self._engine = await self._connect_and_migrate()
            return self._engine

    async def _connect_and_migrate(self) -> AsyncEngine:
        engine = await create_engine(self.url, self._connect_args)
        try:
            try:
                async with engine.connect():
                    pass  # a failure here is about reaching the database, not its schema
            except CONNECT_FAILURES as exc:
                raise unavailable_error(self.url, exc) from exc
            if self._migrate:
                from agent_template.services.storage.migrate import upgrade

                try:
                    await upgrade(engine)
                except StorageError:
                    raise
                except Exception as exc:
                    raise migration_error(self.url, exc) from exc
            self._worker = sqlite_worker(self.url, self._connect_args)
        except BaseException:
            await engine.dispose()
            raise
        return engine

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.dispose()
            self._worker = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (in a transaction committed on exit when ``write``).

        Raises:
            StorageUnavailableError: when the database cannot be reached, refuses the
                connection, or goes away during the call.
            StoragePermissionError: when SQLite cannot write its file.
        """
        engine = self._engine or await self.open()
        lock = self._write_lock if write else None
        if lock is not None:
            await lock.acquire()
        try:
            if self._worker is not None:
                async with self._thread_tx(self._worker, write) as thread_conn:
                    yield thread_conn
                return
            conn = engine.connect()
            try:
                try:
                    await _finish(conn.start())
                except CONNECT_FAILURES as exc:
                    raise unavailable_error(self.url, exc) from exc
                guarded = cast("AsyncConnection", _Guarded(conn))
                if not write:
                    yield guarded
                else:
                    transaction = await _finish(conn.begin())
                    try:
                        yield guarded
                    except BaseException:
                        await _finish(transaction.rollback())
                        raise
                    await _finish(transaction.commit())
            except UNAVAILABLE as exc:
                raise unavailable_error(self.url, exc) from exc
            finally:
                # A caller cancelled mid-transaction must not leave the connection holding
                # the database's write lock: the rollback and the close always complete.
                if conn.sync_connection is not None:  # it started
                    await _finish(conn.close())
        finally:
            if lock is not None:
                lock.release()

    @contextlib.asynccontextmanager
    async def _thread_tx(self, worker: SQLiteWorker, write: bool) -> AsyncIterator[AsyncConnection]:
        """:meth:`_tx` on SQLite's worker threads (see ``sqlite_worker``)."""
        conn = worker.connection()
        try:
            try:
                yield cast("AsyncConnection", conn)
            except BaseException:
                await conn.end(commit=False)
                raise
            await conn.end(commit=write)
        except UNAVAILABLE as exc:
            raise unavailable_error(self.url, exc) from exc

    @property
    def statement_engine(self) -> Engine:
        """The synchronous engine whose events see every statement of this store (after
        :meth:`open`): the worker threads' on SQLite, the async engine's otherwise."""
        if self._worker is not None:
            return self._worker.engine
        if self._engine is None:
            raise RuntimeError("the store is not open yet: await store.open() first")
        return self._engine.sync_engine

    # ------------------------------------------------------------------ sessions

    async def save_session(self, session: Session) -> None:
        """Create the session, or update its title, metadata, settings and times.

        The message count, compaction state and run lease stay as stored. Concurrent saves
        of one new id never fail: the database resolves them (the last one wins).
        """
        values = _session_values(session)
        statement = upsert(self.dialect, s.sessions, update_columns=list(values))
        async with self._tx(write=True) as conn:
            await conn.execute(statement, {"id": session.session_id, "message_count": 0, **values})

    async def create_session_if_absent(self, session: Session) -> Session:
        """Store ``session`` unless a session with its id exists; return the stored one.

        Race-free across processes: of concurrent calls for one id, one inserts and the
        others get its row (whoever owns it, so check ``user_id`` before using it).
        """
        statement = upsert(self.dialect, s.sessions, update_columns=None)
        values = {"id": session.session_id, "message_count": 0, **_session_values(session)}
        async with self._tx(write=True) as conn:
            await conn.execute(statement, values)
            row = (await conn.execute(q.load_session(), {"p_sid": session.session_id})).one()
        return _session(row)

    async def load_session(self, session_id: str) -> Session | None:
        async with self._tx() as conn:
            row = (await conn.execute(q.load_session(), {"p_sid": session_id})).first()
        return _session(row) if row else None

    async def delete_session(self, session_id: str) -> bool:
        async with self._tx(write=True) as conn:
            # Children first: correct even where the database does not cascade.
            for table in (s.messages, s.todos, s.tasks):
                await conn.execute(delete(table).where(table.c.session_id == session_id))
            done = await conn.execute(delete(s.sessions).where(s.sessions.c.id == session_id))
        return bool(done.rowcount)

    async def list_sessions(self, user_id: str | None, limit: int, offset: int) -> list[Session]:
        query = select(s.sessions).order_by(s.sessions.c.last_active_at.desc(), s.sessions.c.id)
        if user_id is not None:
            query = query.where(s.sessions.c.user_id == user_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [_session(r) for r in rows]

    async def session_ids_idle_since(self, cutoff: float) -> list[str]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(s.sessions.c.id).where(s.sessions.c.last_active_at < cutoff)
            )
            return [r[0] for r in rows]

    # ------------------------------------------------------------------ todos and state

    async def save_todos(self, session_id: str, items: Sequence[TodoRecord]) -> None:
        now = time.time()
        async with self._tx(write=True) as conn:
            await conn.execute(delete(s.todos).where(s.todos.c.session_id == session_id))
            if items:
                await conn.execute(
                    insert(s.todos),
                    [
                        {
                            "session_id": session_id,
                            "position": i,
                            "content": item.content,
                            "status": item.status,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i, item in enumerate(items)
                    ],
                )

    async def load_todos(self, session_id: str) -> list[TodoRecord]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(s.todos.c.content, s.todos.c.status, s.todos.c.position)
                .where(s.todos.c.session_id == session_id)
                .order_by(s.todos.c.position)
            )
            return [TodoRecord(*row) for row in rows]

    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None:
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(s.sessions)
                .where(s.sessions.c.id == session_id)
                .values(compaction=None if state is None else json.dumps(state))
            )

    async def save_tool_settings(self, session_id: str, settings: dict[str, Any] | None) -> None:
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(s.sessions)
                .where(s.sessions.c.id == session_id)
                .values(tool_settings=None if not settings else json.dumps(settings))
            )

    async def load_tool_settings(self, session_id: str) -> dict[str, Any] | None:
        async with self._tx() as conn:
            value = await conn.scalar(q.load_tool_settings(), {"p_sid": session_id})
        return json.loads(value) if value else None

    async def integrity_check(self) -> list[str]:
        """Problems found in the stored data (empty when consistent)."""
        from agent_template.services.storage.checks import find_problems

        return await find_problems(await self.open(), self.dialect)

    async def load_compaction(self, session_id: str) -> dict[str, Any] | None:
        async with self._tx() as conn:
            value = await conn.scalar(q.load_compaction(), {"p_sid": session_id})
        return json.loads(value) if value else None


def _session_values(session: Session) -> dict[str, Any]:
    return {
        "user_id": session.user_id,
        "title": session.title,
        "metadata": json.dumps(session.metadata),
        "model_settings": json.dumps(session.model_settings),
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "last_active_at": session.last_active_at,
    }


def _session(row: Any) -> Session:
    return Session(
        session_id=row.id,
        user_id=row.user_id,
        title=row.title,
        metadata=json.loads(row.metadata or "{}"),
        model_settings=json.loads(row.model_settings or "{}"),
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_active_at=row.last_active_at,
        message_count=row.message_count,
    )
