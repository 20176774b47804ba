"""A StateCache on Redis (``redis.asyncio``), shared by every process that uses the same URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_template.services.state_cache._backend import BackendStateCache
from agent_template.services.state_cache.base import (
    DEFAULT_NAMESPACE,
    CacheUnavailableError,
    StateCacheError,
    not_an_integer,
)

__all__ = ["RedisStateCache"]

# A cache is only worth it when it is fast: a Redis that has not answered within these is
# bypassed (FallbackStateCache serves instead). A frozen Redis, one that accepts connections
# and never replies, costs each caller at most one reply timeout, and a new connection on a
# LAN takes milliseconds, not a quarter of a second.
DEFAULT_SOCKET_TIMEOUT_S = 0.5
DEFAULT_CONNECT_TIMEOUT_S = 0.25
DEFAULT_HEALTH_CHECK_INTERVAL_S = 15  # PING a connection idle this long before reusing it
DEFAULT_MAX_CONNECTIONS = 64
# A burst of concurrent commands waits for a pooled connection rather than failing (redis-py's
# plain pool raises "Too many connections", which would look like an outage).
_POOL_WAIT_S = 5.0
_SCAN_BATCH = 500
_DELETE_BATCH = 500  # keys per DEL: one round trip each, without one huge command
# Retry a command once on a dropped connection (a Redis restart, an idle connection the server
# closed), which a fresh connection fixes at once. Never retry a timeout: the server is slow
# or frozen, and a second wait would only double the delay before the fallback serves.
_RETRY_ON = (RedisConnectionError,)

# EXISTS before INCRBY inside one script, so the TTL is set only by the call that creates the key.
_INCR_WITH_TTL = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""
# ARGV: has_expected ("1"/"0"), expected, new, ttl in ms ("" for none). GET of a missing key is
# false in Lua, which never equals a string.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""


def _ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _text(value: bytes | str | None) -> str | None:
    # The client we build decodes replies; one passed in may not.
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisStateCache(BackendStateCache):
    """A StateCache on Redis; TTLs have millisecond precision (``PX``).

    ``incr`` with a TTL and ``compare_and_set`` run as Lua scripts, so they are atomic for
    every client of the server. After a restart or a dropped connection, redis-py reconnects
    on the next command; a command that fails on a broken connection is retried once, and a
    second failure raises :class:`CacheUnavailableError` (wrap the cache in
    :class:`FallbackStateCache` to keep serving). A command that times out is not retried:
    it raises :class:`CacheUnavailableError` at once. Constructing the cache does no I/O.

    Args:
        url: a ``redis://`` or ``rediss://`` URL (``REDIS_URL``).
        socket_timeout: seconds to wait for a reply.
        connect_timeout: seconds to wait for a connection (by default the shorter of
            ``socket_timeout`` and :data:`DEFAULT_CONNECT_TIMEOUT_S`).
        health_check_interval: idle seconds after which a connection is checked before use.
        max_connections: the most connections open at once; further commands wait for one.
        namespace: the key prefix.
        client: an existing ``redis.asyncio.Redis`` to use instead of building one from
            ``url``; it is still closed by :meth:`aclose`.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
        connect_timeout: float | None = None,
        health_check_interval: int = DEFAULT_HEALTH_CHECK_INTERVAL_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        namespace: str = DEFAULT_NAMESPACE,
        client: Redis | None = None,
    ) -> None:
        super().__init__(namespace=namespace)
        self._url = _redact(url)
        if connect_timeout is None:
            connect_timeout = min(socket_timeout, DEFAULT_CONNECT_TIMEOUT_S)
        self._client = client or Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=_POOL_WAIT_S,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                health_check_interval=health_check_interval,
                retry=Retry(NoBackoff(), 1, supported_errors=_RETRY_ON),
            )
        )
        self._incr_script = self._client.register_script(_INCR_WITH_TTL)
        self._cas_script = self._client.register_script(_COMPARE_AND_SET)

    @property
    def target(self) -> str:
        return self._url

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as exc:
            # ReadOnlyError: we reached a replica (a failover is under way); writes cannot land.
            detail = f"{type(exc).__name__}: {exc}"
            raise CacheUnavailableError(self.backend, self._url, detail) from exc
        except RedisError as exc:
            raise StateCacheError(f"Redis at {self._url} refused a command: {exc}") from exc

    async def _get(self, key: str) -> str | None:
        with self._translate():
            value = await self._client.get(key)
        return _text(value)

    async def _set(self, key: str, value: str, ttl: float | None) -> None:
        with self._translate():
            await self._client.set(key, value, px=None if ttl is None else _ms(ttl))

    async def _delete(self, key: str) -> bool:
        with self._translate():
            removed: int = await self._client.delete(key)
        return removed > 0

    async def _delete_many(self, keys: list[str]) -> int:
        removed = 0
        with self._translate():
            for start in range(0, len(keys), _DELETE_BATCH):
                removed += await self._client.delete(*keys[start : start + _DELETE_BATCH])
        return removed

    async def _exists(self, key: str) -> bool:
        with self._translate():
            count: int = await self._client.exists(key)
        return count > 0

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        with self._translate():
            try:
                if ttl is None:
                    value = await self._client.incrby(key, amount)
                else:
                    value = await self._incr_script(keys=[key], args=[amount, _ms(ttl)])
            except ResponseError as exc:
                if "not an integer" not in str(exc):
                    raise
                raise not_an_integer(key) from None
        return int(value)

    async def _cas(self, key: str, expected: str | None, new: str, ttl: float | None) -> bool:
        args = [
            "0" if expected is None else "1",
            expected or "",
            new,
            "" if ttl is None else str(_ms(ttl)),
        ]
        with self._translate():
            stored = await self._cas_script(keys=[key], args=args)
        return bool(stored)

    async def _get_many(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        with self._translate():
            values = await self._client.mget(keys)
        return {
            key: text
            for key, value in zip(keys, values, strict=True)
            if (text := _text(value)) is not None
        }

    async def _set_many(self, items: list[tuple[str, str]], ttl: float | None) -> None:
        with self._translate():
            if ttl is None:
                await self._client.mset(dict(items))
                return
            async with self._client.pipeline(transaction=True) as pipe:
                for key, value in items:
                    pipe.set(key, value, px=_ms(ttl))
                await pipe.execute()

    async def _clear_prefix(self, prefix: str) -> None:
        with self._translate():
            batch: list[bytes | str] = []
            async for key in self._client.scan_iter(
                match=_glob_escape(prefix) + "*", count=_SCAN_BATCH
            ):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                await self._client.unlink(*batch)

    async def _close(self) -> None:
        await self._client.aclose()

    def _extra_stats(self) -> dict[str, Any]:
        return {"url": self._url}
