"""A StateCache in one SQLite file, shareable between processes (WAL, busy timeout)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from agent_template.services.state_cache._backend import BackendStateCache
from agent_template.services.state_cache.base import (
    DEFAULT_NAMESPACE,
    CacheUnavailableError,
    StateCacheError,
    not_an_integer,
)

__all__ = ["SQLiteStateCache"]

DEFAULT_BUSY_TIMEOUT_S = 5.0
_PURGE_EVERY_WRITES = 500  # expired rows are ignored on read; this bounds how many pile up
_CHUNK = 300  # rows per statement: 3 parameters each stays under SQLITE_MAX_VARIABLE_NUMBER

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE INDEX IF NOT EXISTS cache_expires_at ON cache (expires_at) WHERE expires_at IS NOT NULL;
"""
_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_LIVE_POSITIONAL = "(expires_at IS NULL OR expires_at > ?)"
_UPSERT = (
    "INSERT INTO cache (key, value, expires_at) VALUES {rows} ON CONFLICT (key) DO UPDATE"
    " SET value = excluded.value, expires_at = excluded.expires_at"
)
# One statement, so it is atomic across connections and processes. An expired row counts as
# absent; a row that is not a canonical integer leaves the WHERE false and returns no row.
_INCR = """
INSERT INTO cache (key, value, expires_at) VALUES (:key, :amount, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN cache.expires_at <= :now THEN excluded.value
                 ELSE CAST(CAST(cache.value AS INTEGER) + :amount AS TEXT) END,
    expires_at = CASE WHEN cache.expires_at <= :now THEN excluded.expires_at
                      ELSE cache.expires_at END
WHERE cache.expires_at <= :now OR CAST(CAST(cache.value AS INTEGER) AS TEXT) = cache.value
RETURNING value
"""
_INSERT_IF_ABSENT = (
    "INSERT INTO cache (key, value, expires_at) VALUES (:key, :value, :expires_at)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
    " WHERE cache.expires_at <= :now RETURNING 1"
)
_REPLACE_IF_EQUAL = (
    "UPDATE cache SET value = :value, expires_at = :expires_at"
    f" WHERE key = :key AND value = :expected AND {_LIVE}"
)


_Params = Mapping[str, Any] | Sequence[Any]


def _expiry(ttl: float | None, now: float) -> float | None:
    return None if ttl is None else now + ttl


class _Connection:
    """One aiosqlite connection, opened on first use and shared by a cache and its views."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.db: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()
        self.writes = 0
        self.closed = False

    async def get(self) -> aiosqlite.Connection:
        if self.db is not None:
            return self.db
        async with self.lock:
            if self.closed:
                raise StateCacheError(f"The SQLite state cache at {self.path} is closed.")
            if self.db is None:
                self.db = await self._open()
        return self.db

    async def _open(self) -> aiosqlite.Connection:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        # isolation_level=None: every statement commits on its own; none spans two awaits.
        db = await aiosqlite.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps this crash-safe
            await db.executescript(_SCHEMA)
            await db.execute("DELETE FROM cache WHERE expires_at <= ?", (time.time(),))
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        async with self.lock:
            self.closed = True
            if self.db is not None:
                db, self.db = self.db, None
                await db.close()


class SQLiteStateCache(BackendStateCache):
    """A StateCache in the table ``cache(key, value, expires_at)`` of one SQLite file.

    The file and its folder are created on first use. Several caches, in this or other
    processes, may share the file: each statement is one transaction, ``incr`` and
    ``compare_and_set`` are single statements, and a writer waits up to ``busy_timeout``
    seconds for another. Expired rows are ignored on read and purged every few hundred
    writes. Clocks are wall-clock time, so processes sharing a file should agree on it.

    Args:
        path: the database file.
        busy_timeout: seconds to wait for a lock held by another connection.
        namespace: the key prefix.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        super().__init__(namespace=namespace)
        self._conn = _Connection(Path(path), busy_timeout)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._conn.path

    @property
    def target(self) -> str:
        return str(self._conn.path)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            # Locked past the busy timeout, unreadable file, full disk: the store is unusable.
            raise CacheUnavailableError(self.backend, self.target, str(exc)) from exc

    async def _query(self, sql: str, params: _Params) -> list[Any]:
        with self._translate():
            db = await self._conn.get()
            return list(await db.execute_fetchall(sql, params))

    async def _write(self, sql: str, params: _Params) -> int:
        with self._translate():
            db = await self._conn.get()
            async with db.execute(sql, params) as cursor:
                count = cursor.rowcount
            await self._wrote(db)
        return count

    async def _wrote(self, db: aiosqlite.Connection) -> None:
        self._conn.writes += 1
        if self._conn.writes % _PURGE_EVERY_WRITES == 0:
            await db.execute("DELETE FROM cache WHERE expires_at <= ?", (time.time(),))

    async def _get(self, key: str) -> str | None:
        sql = f"SELECT value FROM cache WHERE key = :key AND {_LIVE}"
        rows = await self._query(sql, {"key": key, "now": time.time()})
        return str(rows[0][0]) if rows else None

    async def _set(self, key: str, value: str, ttl: float | None) -> None:
        await self._write(_UPSERT.format(rows="(?, ?, ?)"), (key, value, _expiry(ttl, time.time())))

    async def _delete(self, key: str) -> bool:
        now = time.time()
        rows = await self._query("DELETE FROM cache WHERE key = ? RETURNING expires_at", (key,))
        return bool(rows) and (rows[0][0] is None or rows[0][0] > now)

    async def _exists(self, key: str) -> bool:
        sql = f"SELECT 1 FROM cache WHERE key = :key AND {_LIVE}"
        return bool(await self._query(sql, {"key": key, "now": time.time()}))

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        now = time.time()
        params = {"key": key, "amount": amount, "expires_at": _expiry(ttl, now), "now": now}
        with self._translate():
            db = await self._conn.get()
            rows = list(await db.execute_fetchall(_INCR, params))
            await self._wrote(db)
        if not rows:
            raise not_an_integer(key)
        return int(rows[0][0])

    async def _cas(self, key: str, expected: str | None, new: str, ttl: float | None) -> bool:
        now = time.time()
        params = {"key": key, "value": new, "expires_at": _expiry(ttl, now), "now": now}
        if expected is None:
            with self._translate():
                db = await self._conn.get()
                rows = list(await db.execute_fetchall(_INSERT_IF_ABSENT, params))
                await self._wrote(db)
            return bool(rows)
        return await self._write(_REPLACE_IF_EQUAL, {**params, "expected": expected}) == 1

    async def _get_many(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        now = time.time()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT key, value FROM cache WHERE key IN ({marks}) AND {_LIVE_POSITIONAL}"
            found.update((str(k), str(v)) for k, v in await self._query(sql, (*chunk, now)))
        return found

    async def _set_many(self, items: list[tuple[str, str]], ttl: float | None) -> None:
        expires_at = _expiry(ttl, time.time())
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            sql = _UPSERT.format(rows=", ".join(["(?, ?, ?)"] * len(chunk)))
            await self._write(sql, [p for key, value in chunk for p in (key, value, expires_at)])

    async def _clear_prefix(self, prefix: str) -> None:
        # Every key starting with "ns:" sorts in ["ns:", "ns;"), so the primary key index serves.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        await self._write("DELETE FROM cache WHERE key >= ? AND key < ?", (prefix, upper))

    async def _close(self) -> None:
        await self._conn.close()

    def _extra_stats(self) -> dict[str, Any]:
        return {"path": str(self._conn.path)}
