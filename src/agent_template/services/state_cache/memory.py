"""An in-process StateCache: an LRU dict bounded by entry count and approximate bytes."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from agent_template.services.state_cache._backend import BackendStateCache
from agent_template.services.state_cache.base import DEFAULT_NAMESPACE, not_an_integer

__all__ = ["MemoryStateCache"]

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Expired entries are swept only when the cache is over a limit, and at most this often, so a
# full cache does not scan every entry on every write.
_SWEEP_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Entry:
    value: str
    expires_at: float | None
    size: int


def _size(key: str, value: str) -> int:
    return len(key.encode()) + len(value.encode())


@dataclass
class _Store:
    """The entries, shared by a cache and its namespaced views; oldest use first."""

    max_entries: int
    max_bytes: int
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    bytes: int = 0
    evictions: int = 0
    expiring: int = 0  # entries with an expiry; no sweep is needed while there are none
    last_sweep: float = float("-inf")

    def live(self, key: str, now: float) -> _Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            self.remove(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def remove(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        if entry.expires_at is not None:
            self.expiring -= 1
        return True

    def put(self, key: str, value: str, expires_at: float | None, now: float) -> None:
        size = _size(key, value)
        if size > self.max_bytes:
            raise ValueError(
                f"A value of {size} bytes cannot fit in a memory cache of {self.max_bytes} "
                "bytes; raise max_bytes or store less."
            )
        self.remove(key)
        self.entries[key] = _Entry(value, expires_at, size)
        self.bytes += size
        if expires_at is not None:
            self.expiring += 1
        if len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._shrink(now)

    def _shrink(self, now: float) -> None:
        if self.expiring and now - self.last_sweep >= _SWEEP_INTERVAL_S:
            self.last_sweep = now
            expired = [
                key
                for key, entry in self.entries.items()
                if entry.expires_at is not None and entry.expires_at <= now
            ]
            for key in expired:
                self.remove(key)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self.entries))
            self.remove(oldest)
            self.evictions += 1


class MemoryStateCache(BackendStateCache):
    """A StateCache in this process's memory, for tests, one-process setups and as a fallback.

    Least recently used entries are evicted when there are more than ``max_entries`` or their
    keys and JSON values take more than ``max_bytes`` (UTF-8); expired entries go first. Reads
    and writes are O(1). Every operation runs without awaiting anything, so ``incr`` and
    ``compare_and_set`` are atomic within the event loop.

    Args:
        max_entries: the most entries kept.
        max_bytes: the most bytes of keys and encoded values kept; a larger single value is
            refused with ``ValueError``.
        namespace: the key prefix.
    """

    backend = "memory"

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        super().__init__(namespace=namespace)
        self._store = _Store(max_entries, max_bytes)

    async def _get(self, key: str) -> str | None:
        entry = self._store.live(key, time.monotonic())
        return None if entry is None else entry.value

    async def _set(self, key: str, value: str, ttl: float | None) -> None:
        now = time.monotonic()
        self._store.put(key, value, None if ttl is None else now + ttl, now)

    async def _delete(self, key: str) -> bool:
        live = self._store.live(key, time.monotonic()) is not None
        self._store.remove(key)
        return live

    async def _exists(self, key: str) -> bool:
        return self._store.live(key, time.monotonic()) is not None

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        now = time.monotonic()
        entry = self._store.live(key, now)
        if entry is None:
            value, expires_at = amount, None if ttl is None else now + ttl
        else:
            current = _as_int(key, entry.value)
            value, expires_at = current + amount, entry.expires_at
        self._store.put(key, str(value), expires_at, now)
        return value

    async def _cas(self, key: str, expected: str | None, new: str, ttl: float | None) -> bool:
        now = time.monotonic()
        entry = self._store.live(key, now)
        current = None if entry is None else entry.value
        if current != expected:
            return False
        self._store.put(key, new, None if ttl is None else now + ttl, now)
        return True

    async def _get_many(self, keys: list[str]) -> dict[str, str]:
        now = time.monotonic()
        found = {}
        for key in keys:
            entry = self._store.live(key, now)
            if entry is not None:
                found[key] = entry.value
        return found

    async def _set_many(self, items: list[tuple[str, str]], ttl: float | None) -> None:
        now = time.monotonic()
        expires_at = None if ttl is None else now + ttl
        for key, value in items:
            self._store.put(key, value, expires_at, now)

    async def _clear_prefix(self, prefix: str) -> None:
        for key in [key for key in self._store.entries if key.startswith(prefix)]:
            self._store.remove(key)

    async def _close(self) -> None:
        self._store.entries.clear()
        self._store.bytes = 0
        self._store.expiring = 0

    def _extra_stats(self) -> dict[str, Any]:
        return {
            "entries": len(self._store.entries),
            "bytes": self._store.bytes,
            "evictions": self._store.evictions,
        }


def _as_int(key: str, raw: str) -> int:
    digits = raw.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise not_an_integer(key)
    return int(raw)
