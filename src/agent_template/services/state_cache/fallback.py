"""A StateCache that serves from a fallback cache while its primary (Redis) is unreachable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from agent_template.services.state_cache._outage import (
    MAX_TRACKED_KEYS,
    Health,
    OutageWrites,
    marker_is_recent,
    read_full_marker,
    remove_marker,
    write_marker,
)
from agent_template.services.state_cache.base import (
    CacheUnavailableError,
    StateCache,
    StateCacheError,
)

__all__ = ["FallbackStateCache"]

logger = logging.getLogger("agent_template.cache")

DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_MAX_RETRY_AFTER_S = 30.0

_T = TypeVar("_T")
_MISSING: Any = object()


class FallbackStateCache(StateCache):
    """Sends every operation to ``primary``, and to ``fallback`` while the primary is down.

    A :class:`CacheUnavailableError` from the primary (connection refused, timeout) does not
    reach the caller: the operation is served by the fallback, one warning is logged on the
    ``agent_template.cache`` logger per outage, and ``on_fallback(reason)`` is called for every
    operation the fallback serves (a metrics hook; if it raises, that is logged and ignored).
    While the primary is down, one call at a time tries it again after ``retry_after``
    seconds, doubling up to ``max_retry_after``; when one succeeds, traffic returns to the
    primary and "reconnected" is logged once.

    Every key written or deleted while the fallback serves (``set``, ``set_many``, ``delete``,
    ``delete_many``, ``incr``, ``compare_and_set``, ``clear_namespace``, in every namespaced
    view) is remembered, up to ``max_tracked_keys``; past that, the namespaces concerned are
    remembered whole. Before the primary serves again, those keys (or namespaces) are deleted
    from the primary and from the fallback, so neither can serve a value the outage made
    stale: the next read is a miss and goes to the source of truth.

    With ``outage_marker`` (a file path), an outage is also remembered across processes: the
    file holds when the primary was last found down, and a new cache that finds it younger
    than ``max_retry_after`` starts on the fallback and tries the primary only when the retry
    delay has passed. The file is removed when the primary answers again; failing to read or
    write it is never an error (the cache just tries the primary).

    Other errors (a non-integer for ``incr``, a failing fallback) are raised as usual.

    Args:
        primary: the cache to use whenever it answers, usually :class:`RedisStateCache`.
        fallback: the cache to use while it does not (SQLite or memory).
        on_fallback: called with the reason each time the fallback serves an operation.
        retry_after: seconds before the first retry of a primary that failed.
        max_retry_after: the longest wait between retries.
        outage_marker: the file that remembers an outage for later processes.
        max_tracked_keys: the most keys remembered from one outage.
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
        outage_marker: Path | None = None,
        max_tracked_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        super().__init__(namespace=primary.namespace)
        self._primary = primary
        self._fallback = fallback
        self._on_fallback = on_fallback
        self._health = Health(
            retry_after,
            max(retry_after, max_retry_after),
            marker=outage_marker,
            writes=OutageWrites(max_tracked_keys),
            root=(primary.namespace, primary, fallback),
        )

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

    async def _run(
        self,
        call: Callable[[StateCache], Awaitable[_T]],
        *,
        writes: Iterable[str] = (),
        clears: bool = False,
    ) -> _T:
        """Run ``call`` on the primary, or on the fallback while the primary is down.

        ``writes`` (the keys ``call`` changes) and ``clears`` (it clears the namespace) are
        remembered when the fallback serves, to be dropped from both caches later.
        """
        health = self._health
        if not health.marker_loaded:
            await self._load_marker()
        if not health.down:
            started = time.monotonic()
            try:
                health.primary_attempts += 1
                return await call(self._primary)
            except CacheUnavailableError as exc:
                await self._primary_failed(exc, started)
        elif not health.probing and time.monotonic() >= health.next_try:
            health.probing = True
            started = time.monotonic()
            try:
                await self._forget_outage_writes()  # before the primary serves anything
                health.primary_attempts += 1
                result = await call(self._primary)
            except CacheUnavailableError as exc:
                await self._primary_failed(exc, started)
            else:
                try:
                    await self._forget_outage_writes()  # what the fallback took meanwhile
                except CacheUnavailableError as exc:
                    # ``call`` is done on the primary; running it on the fallback as well
                    # would apply a write twice. Stay down; the keys are remembered.
                    await self._primary_failed(exc, started)
                else:
                    await self._primary_back()
                return result
            finally:
                health.probing = False
        return await self._serve_from_fallback(call, writes, clears)

    async def _serve_from_fallback(
        self, call: Callable[[StateCache], Awaitable[_T]], writes: Iterable[str], clears: bool
    ) -> _T:
        health = self._health
        health.fallbacks += 1
        # Remembered before the call: even a write that fails here may have reached the
        # primary before it timed out.
        outage = health.writes
        outage.views.setdefault(self._namespace, (self._primary, self._fallback))
        if clears:
            outage.add_clear(self._namespace)
        wrote = clears
        for key in writes:
            outage.add_key(self._namespace, key)
            wrote = True
        marker = health.marker
        if wrote and marker is not None and self._namespace not in health.marked_namespaces:
            # For processes that reach the primary after this one has exited.
            health.marked_namespaces.add(self._namespace)
            await asyncio.to_thread(
                write_marker, marker, time.time(), health.delay, {self._namespace}
            )
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

    async def _forget_outage_writes(self) -> None:
        """Delete what the outage changed from the primary, then from the fallback.

        Loops until nothing is left, so writes the fallback took while this ran are dropped
        too; the caller switches back to the primary without awaiting in between.

        Raises:
            CacheUnavailableError: when the primary fails; everything not yet confirmed is
                remembered again for the next try.
        """
        outage = self._health.writes
        while outage:
            keys, cleared = outage.take()
            try:
                for namespace in sorted(cleared):
                    primary, fallback = outage.views[namespace]
                    self._health.primary_attempts += 1
                    await primary.clear_namespace()
                    await _quietly(fallback.clear_namespace(), fallback)
                for namespace, bucket in keys.items():
                    primary, fallback = outage.views[namespace]
                    self._health.primary_attempts += 1
                    await primary.delete_many(bucket)
                    await _quietly(fallback.delete_many(bucket), fallback)
            except BaseException:
                outage.put_back(keys, cleared)
                raise

    async def _primary_failed(self, exc: CacheUnavailableError, started: float) -> None:
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
        if health.marker is not None:
            await asyncio.to_thread(write_marker, health.marker, time.time(), health.delay)

    async def _primary_back(self) -> None:
        health = self._health
        health.down = False
        health.marked_at = time.monotonic()
        logger.info(
            "State cache %s (%s) reconnected; the app uses it again instead of the %s fallback.",
            self._primary.backend,
            self._primary.target,
            self._fallback.backend,
        )
        health.marked_namespaces.clear()
        if health.marker is not None:
            await asyncio.to_thread(remove_marker, health.marker)

    async def _load_marker(self) -> None:
        """Start on the fallback if another process found the primary down moments ago, and
        clear what processes wrote during an outage before the primary serves again."""
        health = self._health
        health.marker_loaded = True
        if health.marker is None:
            return
        found = await asyncio.to_thread(read_full_marker, health.marker)
        if found is None or health.down:
            return
        down_at, delay, namespaces = found
        for namespace in namespaces:
            views = self._views_of(namespace)
            if views is not None:
                health.writes.views.setdefault(namespace, views)
                health.writes.add_clear(namespace)
        recent = marker_is_recent((down_at, delay), health.max_retry_after)
        if not recent and not health.writes:
            return
        health.down = True  # the next call probes the primary (clearing first), or waits
        health.delay = min(max(delay, health.retry_after), health.max_retry_after)
        now = time.monotonic()
        health.marked_at = now
        wait = max(0.0, down_at + health.delay - time.time()) if recent else 0.0
        health.next_try = now + wait
        health.reason = f"found unreachable {time.time() - down_at:.1f}s ago"
        if recent:
            logger.info(
                "State cache %s (%s) was found unreachable %.1fs ago (%s); the app uses the %s "
                "fallback cache and tries %s again in %.1fs.",
                self._primary.backend,
                self._primary.target,
                time.time() - down_at,
                health.marker,
                self._fallback.backend,
                self._primary.backend,
                wait,
            )

    def _views_of(self, namespace: str) -> tuple[StateCache, StateCache] | None:
        """The primary's and the fallback's views of a full namespace under our root."""
        root = self._health.root
        if root is None:
            return None
        name, primary, fallback = root
        if namespace == name:
            return primary, fallback
        if not namespace.startswith(name + ":"):
            return None  # another application's namespace: not ours to clear
        relative = namespace[len(name) + 1 :]
        return primary.namespaced(relative), fallback.namespaced(relative)

    # The public interface -------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        value = await self._run(lambda cache: cache.get(key, _MISSING))
        if value is _MISSING:
            self._health.counters.misses += 1
            return default
        self._health.counters.hits += 1
        return value

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        await self._run(lambda cache: cache.set(key, value, ttl=ttl), writes=(key,))
        self._health.counters.sets += 1

    async def delete(self, key: str) -> bool:
        removed = await self._run(lambda cache: cache.delete(key), writes=(key,))
        self._health.counters.deletes += 1
        return removed

    async def delete_many(self, keys: Iterable[str]) -> int:
        wanted = list(dict.fromkeys(keys))
        removed = await self._run(lambda cache: cache.delete_many(wanted), writes=wanted)
        self._health.counters.deletes += len(wanted)
        return removed

    async def exists(self, key: str) -> bool:
        return await self._run(lambda cache: cache.exists(key))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        value = await self._run(lambda cache: cache.incr(key, amount, ttl=ttl), writes=(key,))
        self._health.counters.sets += 1
        return value

    async def compare_and_set(
        self, key: str, expected: Any, new: Any, *, ttl: float | None = None
    ) -> bool:
        stored = await self._run(
            lambda cache: cache.compare_and_set(key, expected, new, ttl=ttl), writes=(key,)
        )
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
        await self._run(lambda cache: cache.set_many(mapping, ttl=ttl), writes=list(mapping))
        self._health.counters.sets += len(mapping)

    async def clear_namespace(self) -> None:
        # Clear both, so what the fallback kept from an earlier outage cannot resurface.
        await self._fallback.clear_namespace()
        await self._run(lambda cache: cache.clear_namespace(), clears=True)

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
            "primary_attempts": health.primary_attempts,
            "primary_errors": health.primary_errors,
            "outages": health.outages,
            "primary_available": not health.down,
            "outage_keys": health.writes.count,
        }


async def _quietly(operation: Awaitable[Any], fallback: StateCache) -> None:
    """Run a clean-up on the fallback; a failure is logged, not raised.

    The primary is back and about to serve, which matters more than a stale fallback entry
    that a later outage might serve.
    """
    try:
        await operation
    except StateCacheError as exc:
        logger.warning(
            "Could not drop outage-time keys from the %s cache: %s", fallback.backend, exc
        )
