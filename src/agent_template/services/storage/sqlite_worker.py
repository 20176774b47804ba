"""SQLite statements on worker threads, one thread hop each.

The async driver (aiosqlite under SQLAlchemy's async layer) costs several hops between the
event loop and its thread per statement (cursor, execute, fetch, close) and per transaction
(begin, commit, reset), each paying for a future and a wake-up of the loop. Here a statement
and the fetch of all its rows are one call on a worker thread through SQLAlchemy's synchronous
engine, and the end of a transaction (commit or rollback, and the return of the connection) is
one more. A transaction with one statement costs two hops instead of about ten.

Statements are the same SQLAlchemy Core constructs as on PostgreSQL; only where they run
differs. A call that has started always runs to its end, even when its caller is cancelled,
so a connection is never left mid-statement holding SQLite's write lock.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine

__all__ = ["Rows", "SQLiteWorker", "ThreadConnection"]

T = TypeVar("T")

KEPT_CONNECTIONS = 16  # connections the pool keeps open between transactions


class Rows:
    """A statement's result, fetched whole on the worker thread: the part of SQLAlchemy's
    ``Result`` the store uses (``all``, ``first``, ``one``, ``scalar``, iteration,
    ``rowcount``)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            from sqlalchemy.exc import MultipleResultsFound, NoResultFound

            if not self._rows:
                raise NoResultFound("No row was found when one was required")
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def __iter__(self) -> Any:
        return iter(self._rows)


class SQLiteWorker:
    """Worker threads running a SQLite file's statements through a synchronous engine.

    Args:
        url: a SQLAlchemy SQLite URL of a file (``sqlite:///path``).
        connect_args: passed to ``sqlite3.connect``.
        on_connect: called with each new DBAPI connection (the store's pragmas).
        threads: how many statements may run at once (this process's writers queue before
            they get here, so the others are reads).
    """

    def __init__(
        self,
        url: str,
        connect_args: dict[str, Any],
        on_connect: Callable[[Any, Any], None],
        *,
        threads: int = 2,
    ) -> None:
        from sqlalchemy import create_engine, event

        args = {**connect_args, "check_same_thread": False}
        # A transaction keeps its connection between its calls, and the worker threads take
        # connections from the pool: a bounded pool would leave them blocked in checkout,
        # waiting for returns that only they can run. So the pool never refuses; connections
        # beyond the ones it keeps are closed when given back.
        self.engine: Engine = create_engine(
            url, connect_args=args, pool_size=KEPT_CONNECTIONS, max_overflow=-1
        )
        event.listen(self.engine, "connect", on_connect)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="sqlite")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread; once started it finishes even if the caller is
        cancelled (the cancellation is raised after it)."""
        future: Future[T] = self._executor.submit(fn, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.done():  # running: let it end so its connection is left whole
                await asyncio.wait([asyncio.wrap_future(future)])
            raise

    def connection(self) -> ThreadConnection:
        """A connection taken from the pool by its first statement."""
        return ThreadConnection(self)

    async def dispose(self) -> None:
        await asyncio.to_thread(self.engine.dispose)
        self._executor.shutdown(wait=False)


class ThreadConnection:
    """One transaction's connection: ``execute`` and ``scalar`` as on SQLAlchemy's
    ``AsyncConnection``, then :meth:`end` (commit or roll back, and return it to the pool)."""

    __slots__ = ("_conn", "_worker")

    def __init__(self, worker: SQLiteWorker) -> None:
        self._worker = worker
        self._conn: Connection | None = None

    async def execute(self, statement: Any, parameters: Any = None) -> Rows:
        return await self._worker.call(self._execute, statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def end(self, *, commit: bool) -> None:
        if self._conn is not None:
            await self._worker.call(self._end, commit)

    def _execute(self, statement: Any, parameters: Any) -> Rows:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._worker.engine.connect()
        result = conn.execute(statement, parameters)
        rows = list(result.all()) if result.returns_rows else []
        return Rows(rows, result.rowcount)

    def _end(self, commit: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if commit:
                conn.commit()
        finally:
            conn.close()  # rolls back what was not committed
