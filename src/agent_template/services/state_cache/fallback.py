"""A StateCache that serves from a fallback cache while its primary (Redis) is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent_template.services.state_cache._backend import CacheCounters
from agent_template.services.state_cache.base import CacheUnavailableError, StateCache

__all__ = ["FallbackStateCache"]

logger = logging.getLogger("agent_template.cache")

DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_MAX_RETRY_AFTER_S = 30.0

_T = TypeVar("_T")
_MISSING: Any = object()


@dataclass
class _Health:
    """The primary's state and the counters, shared by a cache and its namespaced views."""

    retry_after: float
    max_retry_after: float
    down: bool = False
    probing: bool = False  # one call at a time tries a primary that is down
    delay: float = 0.0
    next_try: float = 0.0
    marked_at: float = float("-inf")  # when the latest failure was recorded
    reason: str = ""
    fallbacks: int = 0
    primary_errors: int = 0
    outages: int = 0
    counters: CacheCounters = field(default_factory=CacheCounters)


class FallbackStateCache(StateCache):
    """Sends every operation to ``primary``, and to ``fallback`` while the primary is down.

    A :class:`CacheUnavailableError` from the primary (connection refused, timeout) does not
    reach the caller: the operation is served by the fallback, one warning is logged on the
    ``agent_template.cache`` logger per outage, and ``on_fallback(reason)`` is called for every
    operation the fallback serves (a metrics hook; if it raises, that is logged and ignored).
    While the primary is down, one call at a time tries it again after ``retry_after``
    seconds, doubling up to ``max_retry_after``; when one succeeds, traffic returns to the
    primary and "reconnected" is logged once.

    The two caches are not synchronised: what was written during an outage stays in the
    fallback, and what the primary held is back (or lost, if it restarted empty) afterwards.
    Other errors (a non-integer for ``incr``, a failing fallback) are raised as usual.

    Args:
        primary: the cache to use whenever it answers, usually :class:`RedisStateCache`.
        fallback: the cache to use while it does not (SQLite or memory).
        on_fallback: called with the reason each time the fallback serves an operation.
        retry_after: seconds before the first retry of a primary that failed.
        max_retry_after: the longest wait between retries.
    """

    backend = "fallback"

    def __init__(
        self,
        primary: StateCache,
        fallback: StateCache,
        *,
        on_fallback: Callable[[str], None] | None = None,
        retry_after: float = DEFAULT_RETRY_AFTER_S,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER_S,
    ) -> None:
        super().__init__(namespace=primary.namespace)
        self._primary = primary
        self._fallback = fallback
        self._on_fallback = on_fallback
        self._health = _Health(retry_after, max(retry_after, max_retry_after))

    @property
    def primary(self) -> StateCache:
        """The cache used whenever it answers."""
        return self._primary

    @property
    def fallback(self) -> StateCache:
        """The cache used while the primary is down."""
        return self._fallback

    @property
    def primary_available(self) -> bool:
        """False from a failure of the primary until a later call succeeds on it."""
        return not self._health.down

    @property
    def target(self) -> str:
        return self._primary.target

    def namespaced(self, namespace: str) -> FallbackStateCache:
        view = super().namespaced(namespace)
        view._primary = self._primary.namespaced(namespace)
        view._fallback = self._fallback.namespaced(namespace)
        return view

    # Routing ----------------------------------------------------------------------------------

    async def _run(self, call: Callable[[StateCache], Awaitable[_T]]) -> _T:
        health = self._health
        if not health.down:
            started = time.monotonic()
            try:
                return await call(self._primary)
            except CacheUnavailableError as exc:
                self._primary_failed(exc, started)
        elif not health.probing and time.monotonic() >= health.next_try:
            health.probing = True
            started = time.monotonic()
            try:
                result = await call(self._primary)
            except CacheUnavailableError as exc:
                self._primary_failed(exc, started)
            else:
                self._primary_back()
                return result
            finally:
                health.probing = False
        return await self._serve_from_fallback(call)

    async def _serve_from_fallback(self, call: Callable[[StateCache], Awaitable[_T]]) -> _T:
        health = self._health
        health.fallbacks += 1
        if self._on_fallback is not None:
            try:
                self._on_fallback(health.reason)
            except Exception:
                # A broken metrics hook must not turn a served request into an error.
                logger.exception("The state cache's on_fallback hook failed")
        try:
            return await call(self._fallback)
        except CacheUnavailableError:
            health.counters.errors += 1
            raise

    def _primary_failed(self, exc: CacheUnavailableError, started: float) -> None:
        health = self._health
        health.primary_errors += 1
        health.reason = exc.detail
        if started < health.marked_at:
            return  # began before the failure that was recorded: the same outage, seen late
        now = time.monotonic()
        if health.down:
            health.delay = min(health.delay * 2, health.max_retry_after)
        else:
            health.down = True
            health.delay = health.retry_after
            health.outages += 1
            where = f"REDIS_URL={exc.target}" if exc.backend == "redis" else exc.target
            logger.warning(
                "State cache %s (%s) is unreachable: %s. The app continues on the %s fallback "
                "cache (%s) and retries %s from time to time.",
                exc.backend,
                where,
                exc.detail,
                self._fallback.backend,
                self._fallback.target,
                exc.backend,
            )
        health.marked_at = now
        health.next_try = now + health.delay

    def _primary_back(self) -> None:
        health = self._health
        health.down = False
        health.marked_at = time.monotonic()
        logger.info(
            "State cache %s (%s) reconnected; the app uses it again instead of the %s fallback.",
            self._primary.backend,
            self._primary.target,
            self._fallback.backend,
        )

    # The public interface -------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        value = await self._run(lambda cache: cache.get(key, _MISSING))
        if value is _MISSING:
            self._health.counters.misses += 1
            return default
        self._health.counters.hits += 1
        return value

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        await self._run(lambda cache: cache.set(key, value, ttl=ttl))
        self._health.counters.sets += 1

    async def delete(self, key: str) -> bool:
        removed = await self._run(lambda cache: cache.delete(key))
        self._health.counters.deletes += 1
        return removed

    async def exists(self, key: str) -> bool:
        return await self._run(lambda cache: cache.exists(key))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        value = await self._run(lambda cache: cache.incr(key, amount, ttl=ttl))
        self._health.counters.sets += 1
        return value

    async def compare_and_set(
        self, key: str, expected: Any, new: Any, *, ttl: float | None = None
    ) -> bool:
        stored = await self._run(lambda cache: cache.compare_and_set(key, expected, new, ttl=ttl))
        if stored:
            self._health.counters.sets += 1
        return stored

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(dict.fromkeys(keys))
        found = await self._run(lambda cache: cache.get_many(wanted))
        self._health.counters.hits += len(found)
        self._health.counters.misses += len(wanted) - len(found)
        return found

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        await self._run(lambda cache: cache.set_many(mapping, ttl=ttl))
        self._health.counters.sets += len(mapping)

    async def clear_namespace(self) -> None:
        # Clear both, so what the fallback kept from an earlier outage cannot resurface.
        await self._fallback.clear_namespace()
        await self._run(lambda cache: cache.clear_namespace())

    async def aclose(self) -> None:
        if not self._owner:
            return
        try:
            await self._primary.aclose()
        finally:
            await self._fallback.aclose()

    def stats(self) -> dict[str, Any]:
        health = self._health
        return {
            "backend": self.backend,
            "namespace": self._namespace,
            "primary": self._primary.backend,
            "fallback": self._fallback.backend,
            **health.counters.as_dict(),
            "fallbacks": health.fallbacks,
            "primary_errors": health.primary_errors,
            "outages": health.outages,
            "primary_available": not health.down,
        }
