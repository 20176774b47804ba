"""The shared machinery of the storage backends: namespacing, JSON encoding and counters."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from agent_template.services.state_cache.base import (
    DEFAULT_NAMESPACE,
    CacheUnavailableError,
    StateCache,
    check_ttl,
    decode_value,
    encode_value,
)

__all__ = ["BackendStateCache", "CacheCounters"]

_T = TypeVar("_T")


@dataclass
class CacheCounters:
    """Operation counts of one backend, shared by all its namespaced views."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "sets": self.sets,
            "deletes": self.deletes,
            "errors": self.errors,
        }


class BackendStateCache(StateCache):
    """A :class:`StateCache` over a store of full keys and JSON strings.

    Subclasses implement the ``_``-prefixed primitives; this class adds namespacing, JSON
    encoding and the counters. State a view must share lives in referenced objects, because
    :meth:`namespaced` makes shallow copies.
    """

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        super().__init__(namespace=namespace)
        self._counters = CacheCounters()

    # Primitives, on full keys and encoded values -------------------------------------------

    @abstractmethod
    async def _get(self, key: str) -> str | None: ...

    @abstractmethod
    async def _set(self, key: str, value: str, ttl: float | None) -> None: ...

    @abstractmethod
    async def _delete(self, key: str) -> bool: ...

    async def _delete_many(self, keys: list[str]) -> int:
        return sum([await self._delete(key) for key in keys])

    @abstractmethod
    async def _exists(self, key: str) -> bool: ...

    @abstractmethod
    async def _incr(self, key: str, amount: int, ttl: float | None) -> int: ...

    @abstractmethod
    async def _cas(self, key: str, expected: str | None, new: str, ttl: float | None) -> bool: ...

    @abstractmethod
    async def _get_many(self, keys: list[str]) -> dict[str, str]: ...

    @abstractmethod
    async def _set_many(self, items: list[tuple[str, str]], ttl: float | None) -> None: ...

    @abstractmethod
    async def _clear_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    def _extra_stats(self) -> dict[str, Any]:
        return {}

    # The public interface -------------------------------------------------------------------

    async def _guard(self, operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except CacheUnavailableError:
            self._counters.errors += 1
            raise

    async def get(self, key: str, default: Any = None) -> Any:
        raw = await self._guard(self._get(self.full_key(key)))
        if raw is None:
            self._counters.misses += 1
            return default
        self._counters.hits += 1
        return decode_value(raw)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        encoded = encode_value(value)
        await self._guard(self._set(self.full_key(key), encoded, check_ttl(ttl)))
        self._counters.sets += 1

    async def delete(self, key: str) -> bool:
        removed = await self._guard(self._delete(self.full_key(key)))
        self._counters.deletes += 1
        return removed

    async def delete_many(self, keys: Iterable[str]) -> int:
        full = [self.full_key(key) for key in dict.fromkeys(keys)]
        if not full:
            return 0
        removed = await self._guard(self._delete_many(full))
        self._counters.deletes += len(full)
        return removed

    async def exists(self, key: str) -> bool:
        return await self._guard(self._exists(self.full_key(key)))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"incr amount must be an int, got {amount!r}")
        value = await self._guard(self._incr(self.full_key(key), amount, check_ttl(ttl)))
        self._counters.sets += 1
        return value

    async def compare_and_set(
        self, key: str, expected: Any, new: Any, *, ttl: float | None = None
    ) -> bool:
        old = None if expected is None else encode_value(expected)
        encoded = encode_value(new)
        stored = await self._guard(self._cas(self.full_key(key), old, encoded, check_ttl(ttl)))
        if stored:
            self._counters.sets += 1
        return stored

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = {self.full_key(key): key for key in keys}
        found = await self._guard(self._get_many(list(wanted)))
        self._counters.hits += len(found)
        self._counters.misses += len(wanted) - len(found)
        return {wanted[full]: decode_value(raw) for full, raw in found.items()}

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        items = [(self.full_key(key), encode_value(value)) for key, value in mapping.items()]
        if items:
            await self._guard(self._set_many(items, check_ttl(ttl)))
        self._counters.sets += len(items)

    async def clear_namespace(self) -> None:
        await self._guard(self._clear_prefix(self.full_key("")))

    async def aclose(self) -> None:
        if self._owner:
            await self._close()

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "namespace": self._namespace,
            **self._counters.as_dict(),
            **self._extra_stats(),
        }
