"""FallbackStateCache through real Redis outages: stale copies, frozen servers, later runs.

An outage is made with real sockets: a TCP proxy in front of the real Redis (REDIS_URL) that
the test cuts and restores, so Redis keeps its data as it would through a network outage,
and a "black hole" server that accepts connections and never answers, like a frozen Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_template.config import load_settings
from agent_template.services.state_cache import (
    FallbackStateCache,
    MemoryStateCache,
    RedisStateCache,
    SQLiteStateCache,
    create_state_cache,
)
from tests.conftest import service_missing
from tests.helpers.tcp_proxy import TcpProxy

DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused


@pytest.fixture
def redis_url() -> str:
    """The real Redis (REDIS_URL); skipped when it is not running, a failure under CI."""
    import os

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at REDIS_URL={url}", exc)
    finally:
        client.close()
    return url


def _namespace() -> str:
    return f"test-cache-outage-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """A cuttable TCP proxy in front of Redis."""
    port = redis.connection.parse_url(redis_url).get("port", 6379)
    async with TcpProxy("127.0.0.1", int(port)) as server:
        yield server


def through(proxy: TcpProxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0"


class _BlackHole:
    """Accepts TCP connections and never sends a byte back: a frozen Redis."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass  # swallow the commands, answer nothing

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def black_hole() -> AsyncIterator[_BlackHole]:
    server = _BlackHole()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _until_primary_is_back(cache: FallbackStateCache) -> None:
    deadline = time.monotonic() + 10
    while not cache.primary_available:
        assert time.monotonic() < deadline, "the cache never went back to Redis"
        await asyncio.sleep(0.02)
        await cache.exists("probe")


# --------------------------------------------------------------------------- stale copies


async def test_keys_changed_during_an_outage_are_dropped_from_both_copies(
    proxy: TcpProxy,
    redis_url: str,
) -> None:
    namespace = _namespace()
    fallback = MemoryStateCache(namespace=namespace)
    cache = FallbackStateCache(
        RedisStateCache(through(proxy), namespace=namespace),
        fallback,
        retry_after=0.05,
        max_retry_after=0.2,
    )
    sessions = cache.namespaced("sessions")
    limits = cache.namespaced("limits")
    direct = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await sessions.set("s1", {"message_count": 3})
        await sessions.set("s2", {"message_count": 1})
        await cache.set("untouched", "kept")
        await limits.set("u1", 5)
        assert direct.get(f"{namespace}:sessions:s1") is not None

        proxy.drop()
        await sessions.delete("s1")  # the invalidation a new message triggers
        await sessions.set("s2", {"message_count": 2})
        await limits.clear_namespace()
        assert not cache.primary_available
        assert await sessions.get("s2") == {"message_count": 2}  # served by the fallback
        assert direct.get(f"{namespace}:sessions:s1") is not None  # Redis still has it

        proxy.restore()
        await _until_primary_is_back(cache)
        assert await sessions.get("s1") is None  # not the stale count Redis kept
        assert await sessions.get("s2") is None  # neither copy: the next read goes to the DB
        assert await limits.get("u1") is None
        assert await cache.get("untouched") == "kept"
        for key in ("sessions:s1", "sessions:s2", "limits:u1"):
            assert direct.get(f"{namespace}:{key}") is None
        assert await fallback.get_many(["sessions:s1", "sessions:s2"]) == {}
        assert cache.stats()["outage_keys"] == 0
    finally:
        direct.close()
        await cache.clear_namespace()
        await cache.aclose()


async def test_too_many_keys_during_an_outage_clear_their_namespace(
    proxy: TcpProxy,
    redis_url: str,
) -> None:
    namespace = _namespace()
    cache = FallbackStateCache(
        RedisStateCache(through(proxy), namespace=namespace),
        MemoryStateCache(namespace=namespace),
        retry_after=0.05,
        max_retry_after=0.2,
        max_tracked_keys=3,
    )
    sessions = cache.namespaced("sessions")
    direct = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await sessions.set_many({f"s{i}": i for i in range(6)})
        await cache.set("elsewhere", 1)

        proxy.drop()
        await sessions.set_many({f"s{i}": -i for i in range(5)})  # more than three keys
        proxy.restore()
        await _until_primary_is_back(cache)

        assert await sessions.get_many([f"s{i}" for i in range(6)]) == {}  # s5 too
        assert direct.get(f"{namespace}:sessions:s5") is None
        assert await cache.get("elsewhere") == 1  # another namespace is left alone
    finally:
        direct.close()
        await cache.clear_namespace()
        await cache.aclose()


# --------------------------------------------------------------------------- frozen Redis


async def test_a_frozen_redis_is_bypassed_and_remembered_by_the_next_run(
    black_hole: _BlackHole, tmp_path: Path
) -> None:
    marker = tmp_path / "cache" / "redis_outage"

    def one_run() -> FallbackStateCache:
        return FallbackStateCache(
            RedisStateCache(black_hole.url),
            MemoryStateCache(),
            outage_marker=marker,
        )

    first = one_run()
    try:
        await first.set("k", 1)
        assert await first.get("k") == 1
        stats = first.stats()
    finally:
        await first.aclose()
    assert stats["primary_attempts"] == stats["primary_errors"] == 1
    assert stats["fallbacks"] == 2
    assert black_hole.accepted == 1  # the timed-out handshake was not retried
    assert marker.is_file()

    second = one_run()
    try:
        await second.set("k", 2)
        assert await second.get("k") == 2
        assert await second.incr("n") == 1
        stats = second.stats()
    finally:
        await second.aclose()
    assert stats["primary_attempts"] == 0
    assert stats["fallbacks"] == 3
    assert stats["primary_available"] is False
    assert black_hole.accepted == 1  # the second run never connected


async def test_an_old_marker_is_ignored(black_hole: _BlackHole, tmp_path: Path) -> None:
    marker = tmp_path / "redis_outage"
    first = FallbackStateCache(RedisStateCache(DOWN_URL), MemoryStateCache(), outage_marker=marker)
    await first.set("k", 1)
    await first.aclose()
    assert marker.is_file()
    await asyncio.sleep(0.1)
    later = FallbackStateCache(
        RedisStateCache(DOWN_URL),
        MemoryStateCache(),
        outage_marker=marker,
        retry_after=0.05,
        max_retry_after=0.05,  # the marker is older than this by now
    )
    await later.set("k", 2)
    await later.aclose()
    assert later.stats()["primary_attempts"] == 1


async def test_the_marker_goes_when_redis_answers_again(
    redis_url: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "redis_outage"
    down = FallbackStateCache(
        RedisStateCache(DOWN_URL), MemoryStateCache(), outage_marker=marker, retry_after=0.05
    )
    await down.set("k", 1)
    await down.aclose()
    assert marker.is_file()

    namespace = _namespace()
    cache = FallbackStateCache(
        RedisStateCache(redis_url, namespace=namespace),
        MemoryStateCache(namespace=namespace),
        outage_marker=marker,
        retry_after=0.05,
    )
    try:
        await cache.set("k", 2)
        assert cache.stats()["primary_attempts"] == 0  # it believed the marker
        await _until_primary_is_back(cache)
        assert not marker.exists()
        await cache.set("k", 3)
        assert await cache.primary.get("k") == 3
    finally:
        await cache.clear_namespace()
        await cache.aclose()


async def test_an_unwritable_marker_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # no folder can be made under it, not even by root
    marker = blocker / "cache" / "redis_outage"
    for _ in range(2):
        cache = FallbackStateCache(
            RedisStateCache(DOWN_URL), MemoryStateCache(), outage_marker=marker
        )
        await cache.set("k", 1)
        assert await cache.get("k") == 1
        await cache.aclose()
        assert cache.stats()["primary_attempts"] == 1  # no memory, so each run tries again


async def test_create_state_cache_keeps_the_marker_in_the_data_dir(
    black_hole: _BlackHole, tmp_path: Path
) -> None:
    settings: Any = load_settings(data_dir=tmp_path / "data", redis_url=black_hole.url)
    cache = create_state_cache(settings)
    try:
        await cache.set("k", 1)
    finally:
        await cache.aclose()
    assert (tmp_path / "data" / "cache" / "redis_outage").is_file()
    again = create_state_cache(settings)
    try:
        assert await again.get("k") == 1  # from the SQLite fallback, without asking Redis
        assert again.stats()["primary_attempts"] == 0
    finally:
        await again.aclose()


async def test_an_outage_seen_by_an_earlier_process_leaves_no_stale_copy_for_the_next(
    proxy: TcpProxy, redis_url: str, tmp_path: Path
) -> None:
    namespace = _namespace()
    marker = tmp_path / "redis_outage"

    def a_process() -> FallbackStateCache:  # a CLI run: its own caches, the shared files
        return FallbackStateCache(
            RedisStateCache(through(proxy), namespace=namespace),
            SQLiteStateCache(tmp_path / "state.db", namespace=namespace),
            retry_after=0.05,
            max_retry_after=0.2,
            outage_marker=marker,
        )

    first = a_process()
    sessions = first.namespaced("sessions")
    try:
        await sessions.set("s1", {"message_count": 3})
        proxy.drop()
        await sessions.delete("s1")  # a new message invalidates it, but only in the fallback
        assert not first.primary_available
    finally:
        await first.aclose()  # this run ends before Redis is back: its key list is gone
    proxy.restore()
    await asyncio.sleep(0.3)  # longer than the marker is trusted to mean "still down"

    second = a_process()
    try:
        assert await second.namespaced("sessions").get("s1") is None  # not the stale count
        assert second.primary_available
        assert not marker.exists()
    finally:
        await second.clear_namespace()
        await second.aclose()
