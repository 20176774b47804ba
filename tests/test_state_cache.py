"""StateCache: one contract suite over every backend, then what only some backends promise.

Redis comes from REDIS_URL (default redis://127.0.0.1:6379/0): skipped when unreachable, a
failure under CI=true. Every test uses its own key prefix and clears it afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_template.config import load_settings
from agent_template.errors import ConfigurationError
from agent_template.services.state_cache import (
    FallbackStateCache,
    MemoryStateCache,
    RedisStateCache,
    SQLiteStateCache,
    StateCache,
    create_state_cache,
)

RUN_PREFIX = f"test-state-cache-{uuid.uuid4().hex[:10]}"
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused
BACKENDS = ["memory", "sqlite", "redis", "fallback"]


def _unique_namespace() -> str:
    return f"{RUN_PREFIX}-{uuid.uuid4().hex[:8]}"


def _unavailable(in_ci: bool, reason: str) -> None:
    if in_ci:
        pytest.fail(f"{reason}; under CI this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture
def redis_url(in_ci: bool) -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(in_ci, f"Redis at REDIS_URL={url} is unreachable ({exc})")
    finally:
        client.close()
    return url


def _build(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StateCache:
    namespace = _unique_namespace()
    if kind == "memory":
        return MemoryStateCache(namespace=namespace)
    if kind == "sqlite":
        return SQLiteStateCache(tmp_path / "cache" / "state.db", namespace=namespace)
    url = request.getfixturevalue("redis_url")
    # The contract, not outage speed: a loaded machine may take a while to open connections.
    primary = RedisStateCache(url, namespace=namespace, socket_timeout=5.0, connect_timeout=5.0)
    if kind == "redis":
        return primary
    return FallbackStateCache(primary, MemoryStateCache(namespace=namespace))


@pytest.fixture(params=BACKENDS)
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateCache]:
    built = _build(request.param, request, tmp_path)
    try:
        yield built
    finally:
        await built.clear_namespace()
        await built.aclose()


# --------------------------------------------------------------------------- the contract


async def test_get_set_delete_exists(cache: StateCache) -> None:
    assert await cache.get("k") is None
    assert await cache.get("k", "fallback-default") == "fallback-default"
    assert not await cache.exists("k")

    await cache.set("k", {"user": "ada", "turns": 3})
    assert await cache.get("k") == {"user": "ada", "turns": 3}
    assert await cache.exists("k")

    await cache.set("k", [1, 2])
    assert await cache.get("k") == [1, 2]

    assert await cache.delete("k") is True
    assert await cache.delete("k") is False
    assert await cache.get("k") is None
    assert not await cache.exists("k")


async def test_delete_many(cache: StateCache) -> None:
    view = cache.namespaced("view")
    await cache.set_many({f"k{i}": i for i in range(600)})  # more than one Redis batch
    await view.set("k1", "in the view")
    assert await cache.delete_many([]) == 0
    assert await cache.delete_many([*(f"k{i}" for i in range(1, 600)), "k1", "absent"]) == 599
    assert await cache.get_many(["k0", "k1", "k599"]) == {"k0": 0}
    assert await view.get("k1") == "in the view"  # only this namespace's keys


async def test_values_round_trip_as_fresh_copies(cache: StateCache) -> None:
    values: list[Any] = [0, -7, 2.5, True, False, "", "text", [], {}, None]
    for value in values:
        await cache.set("v", value)
        got = await cache.get("v", "missing")
        assert got == value and type(got) is type(value)

    await cache.set("d", {"items": [1]})
    first = await cache.get("d")
    first["items"].append(2)
    assert await cache.get("d") == {"items": [1]}


async def test_unicode_and_nested_json(cache: StateCache) -> None:
    value = {
        "greeting": "héllo wörld — 你好 🌍",
        "nested": {"list": [1, [2, [3, {"deep": None}]]], "flag": True, "pi": 3.14159},
        "empty": {"a": [], "b": {}},
    }
    keys = ["ключ", "emoji 🔑", "glob*?[chars]\\", "spaces and:colons"]
    for key in keys:
        await cache.set(key, value)
    assert await cache.get_many(keys) == dict.fromkeys(keys, value)


async def test_invalid_arguments_are_refused(cache: StateCache) -> None:
    with pytest.raises(TypeError, match="JSON-serialisable"):
        await cache.set("k", object())
    with pytest.raises(TypeError, match="JSON-serialisable"):
        await cache.set("k", float("nan"))
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", 1, ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        await cache.incr("k", ttl=-1)
    assert not await cache.exists("k")


async def test_ttl_expiry(cache: StateCache) -> None:
    await cache.set("short", "soon gone", ttl=0.2)
    await cache.set("long", "stays", ttl=30)
    await cache.set_many({"m1": 1, "m2": 2}, ttl=0.2)
    await cache.set("made-permanent", 1, ttl=0.2)
    await cache.set("made-permanent", 2)  # a set without ttl removes the expiry
    assert await cache.compare_and_set("lease", None, "a", ttl=0.2) is True
    assert await cache.compare_and_set("lease", None, "b", ttl=0.2) is False
    assert await cache.get("short") == "soon gone"
    assert await cache.get_many(["m1", "m2"]) == {"m1": 1, "m2": 2}

    await asyncio.sleep(0.3)

    assert await cache.get("short") is None
    assert not await cache.exists("short")
    assert await cache.delete("short") is False
    assert await cache.get_many(["short", "long", "m1", "m2"]) == {"long": "stays"}
    assert await cache.get("made-permanent") == 2
    # An expired value is absent for compare_and_set too.
    assert await cache.compare_and_set("lease", "a", "stale") is False
    assert await cache.compare_and_set("lease", None, "b") is True
    assert await cache.get("lease") == "b"


async def test_incr_counts_and_starts_at_zero(cache: StateCache) -> None:
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 5) == 6
    assert await cache.incr("n", -10) == -4
    assert await cache.get("n") == -4
    await cache.set("preset", 40)
    assert await cache.incr("preset", 2) == 42


async def test_incr_is_atomic_under_200_concurrent_calls(cache: StateCache) -> None:
    results = await asyncio.gather(*(cache.incr("hits", ttl=30) for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert await cache.get("hits") == 200


async def test_incr_ttl_is_set_when_the_key_is_created_only(cache: StateCache) -> None:
    await cache.set("plain", 1)
    await cache.incr("plain", ttl=0.1)  # an existing key without expiry keeps none
    assert await cache.incr("window", ttl=0.2) == 1
    await asyncio.sleep(0.12)
    assert await cache.incr("window", ttl=0.2) == 2  # must not push the expiry back
    await asyncio.sleep(0.12)  # 0.24 s after creation, 0.12 s after the second call
    assert await cache.get("window") is None
    assert await cache.incr("window", ttl=0.2) == 1  # a new window
    assert await cache.get("plain") == 2


async def test_incr_refuses_values_that_are_not_integers(cache: StateCache) -> None:
    for value in ("text", 1.5, {"n": 1}, [1]):
        await cache.set("k", value)
        with pytest.raises(ValueError, match="incr needs an integer"):
            await cache.incr("k")
        assert await cache.get("k") == value


async def test_compare_and_set(cache: StateCache) -> None:
    assert await cache.compare_and_set("lock", None, {"owner": "a"}) is True
    assert await cache.compare_and_set("lock", None, {"owner": "b"}) is False
    assert await cache.compare_and_set("lock", {"owner": "b"}, {"owner": "c"}) is False
    assert await cache.get("lock") == {"owner": "a"}

    await cache.set("doc", {"a": 1, "b": [1, 2]})
    # Equality of values, not of insertion order.
    assert await cache.compare_and_set("doc", {"b": [1, 2], "a": 1}, {"v": 2}) is True
    assert await cache.get("doc") == {"v": 2}

    assert await cache.compare_and_set("missing", 1, 2) is False
    assert not await cache.exists("missing")


async def test_compare_and_set_racers_have_exactly_one_winner(cache: StateCache) -> None:
    won = await asyncio.gather(*(cache.compare_and_set("leader", None, i) for i in range(50)))
    assert won.count(True) == 1
    assert await cache.get("leader") == won.index(True)

    await cache.set("version", 0)
    bumped = await asyncio.gather(*(cache.compare_and_set("version", 0, i) for i in range(1, 51)))
    assert bumped.count(True) == 1
    assert await cache.get("version") == bumped.index(True) + 1


async def test_get_many_and_set_many(cache: StateCache) -> None:
    assert await cache.get_many([]) == {}
    mapping = {f"k{i}": {"i": i} for i in range(700)}  # more than one SQL chunk
    await cache.set_many(mapping)
    await cache.set_many({})
    got = await cache.get_many([*mapping, "absent-1", "absent-2"])
    assert got == mapping


async def test_namespaces_isolate_keys_and_clear_only_their_own(cache: StateCache) -> None:
    sessions = cache.namespaced("sessions")
    limits = cache.namespaced("limits")
    sibling = cache.namespaced("sessionsX")  # shares the prefix "sessions" but not "sessions:"
    odd = cache.namespaced("we*rd[ns]?")
    assert sessions.namespace == f"{cache.namespace}:sessions"

    for index, view in enumerate((cache, sessions, limits, sibling, odd)):
        await view.set("k", index)
    assert [await v.get("k") for v in (cache, sessions, limits, sibling, odd)] == [0, 1, 2, 3, 4]

    await sessions.clear_namespace()
    await odd.clear_namespace()
    assert await sessions.get("k") is None
    assert await odd.get("k") is None
    assert [await v.get("k") for v in (cache, limits, sibling)] == [0, 2, 3]

    await sessions.aclose()  # a view does not own the connection
    assert await limits.get("k") == 2

    await cache.clear_namespace()  # the parent clears its sub-namespaces too
    assert await cache.get_many(["k"]) == {}
    assert await limits.get("k") is None


async def test_stats_count_operations(cache: StateCache) -> None:
    view = cache.namespaced("view")
    await cache.set("a", 1)
    await view.set_many({"b": 2, "c": 3})
    await cache.get("a")
    await cache.get("nope")
    await view.get_many(["b", "c", "nope"])
    await cache.incr("n")
    await cache.compare_and_set("n", 1, 5)
    await cache.compare_and_set("n", 1, 6)  # lost: not a set
    await cache.delete("a")

    stats = cache.stats()
    assert stats["backend"] == cache.backend
    assert {k: stats[k] for k in ("hits", "misses", "sets", "deletes", "errors")} == {
        "hits": 3,
        "misses": 2,
        "sets": 5,
        "deletes": 1,
        "errors": 0,
    }
    assert view.stats()["hits"] == 3  # views share the backend's counters


# --------------------------------------------------------------------------- memory


async def test_memory_evicts_least_recently_used_by_entries() -> None:
    cache = MemoryStateCache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set(key, key)
    await cache.get("a")  # now b is the least recently used
    await cache.set("d", "d")
    assert await cache.get_many(["a", "b", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.stats()["entries"] == 3
    assert cache.stats()["evictions"] == 1


async def test_memory_evicts_least_recently_used_by_bytes() -> None:
    # Each entry: key "agent_template:kN" (17 bytes) + value '"' + 81 x + '"' (83) = 100 bytes.
    cache = MemoryStateCache(max_entries=1000, max_bytes=350)
    for i in range(3):
        await cache.set(f"k{i}", "x" * 81)
    assert cache.stats()["bytes"] == 300
    await cache.get("k0")
    await cache.set("k3", "x" * 81)  # 400 bytes: k1, the least recently used, goes
    assert sorted(await cache.get_many([f"k{i}" for i in range(4)])) == ["k0", "k2", "k3"]
    assert cache.stats()["bytes"] == 300

    await cache.set("big", "y" * 230)  # 18 + 232 = 250 bytes: only k3 still fits beside it
    assert sorted(await cache.get_many(["k0", "k2", "k3", "big"])) == ["big", "k3"]
    with pytest.raises(ValueError, match="max_bytes"):
        await cache.set("huge", "z" * 400)


async def test_memory_evicts_expired_entries_before_live_ones() -> None:
    cache = MemoryStateCache(max_entries=2)
    await cache.set("old-but-live", 1)
    await cache.set("expiring", 2, ttl=0.05)
    await asyncio.sleep(0.1)
    await cache.set("new", 3)
    assert await cache.get_many(["old-but-live", "expiring", "new"]) == {
        "old-but-live": 1,
        "new": 3,
    }
    assert cache.stats()["evictions"] == 0


# --------------------------------------------------------------------------- sqlite


async def test_sqlite_creates_its_folder_and_keeps_data_across_connections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    async with SQLiteStateCache(path) as first:
        await first.set("session", {"turns": 2})
    assert path.is_file()
    async with SQLiteStateCache(path) as second:
        assert await second.get("session") == {"turns": 2}


async def test_sqlite_two_connections_share_writes_and_exact_counts(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteStateCache(path) as one, SQLiteStateCache(path) as two:
        await one.set("k", "from one")
        assert await two.get("k") == "from one"
        await two.delete("k")
        assert await one.get("k") is None

        calls = [c.incr("hits", ttl=30) for _ in range(100) for c in (one, two)]
        results = await asyncio.gather(*calls)
        assert sorted(results) == list(range(1, 201))
        assert await one.get("hits") == await two.get("hits") == 200

        racers = [c.compare_and_set("leader", None, i) for i, c in enumerate([one, two] * 20)]
        assert (await asyncio.gather(*racers)).count(True) == 1


async def test_sqlite_purges_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteStateCache(path) as cache:
        await cache.set_many({f"gone{i}": i for i in range(5)}, ttl=0.05)
        await asyncio.sleep(0.1)
        for i in range(500):
            await cache.set("busy", i)
        with sqlite3.connect(path) as db:
            keys = [row[0] for row in db.execute("SELECT key FROM cache")]
    assert keys == [cache.full_key("busy")]


# --------------------------------------------------------------------------- fallback


async def test_fallback_serves_while_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    reasons: list[str] = []
    primary = RedisStateCache(DOWN_URL, namespace=_unique_namespace())
    cache = FallbackStateCache(
        primary,
        MemoryStateCache(),
        on_fallback=reasons.append,
        retry_after=0.2,
        max_retry_after=0.2,
    )
    caplog.set_level(logging.INFO, logger="agent_template.cache")
    async with cache:
        await cache.set("session", {"turns": 1})
        assert await cache.get("session") == {"turns": 1}
        assert await cache.incr("rate", ttl=60) == 1
        assert await cache.compare_and_set("lock", None, "me") is True
        assert await cache.get_many(["session", "lock", "absent"]) == {
            "session": {"turns": 1},
            "lock": "me",
        }
        stats, reasons_then = cache.stats(), len(reasons)

        # Later calls retry Redis once per backoff period, not on every call, and stay quiet.
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < 0.5:
            assert await cache.incr("rate") == calls + 2
            calls += 1
            await asyncio.sleep(0.01)
        assert 2 <= cache.stats()["primary_errors"] <= 5 < calls

    warnings = [r for r in caplog.records if r.name == "agent_template.cache"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert f"REDIS_URL={DOWN_URL}" in message
    assert "continues on the memory fallback" in message
    assert stats["fallbacks"] == 5 and reasons_then == 5
    assert stats["primary_errors"] == 1  # then it waits out the backoff instead of retrying
    assert stats["primary_available"] is False
    assert stats["hits"] == 3 and stats["misses"] == 1
    assert "Connect" in reasons[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _RedisServer:
    """A throwaway redis-server without persistence, which a test can kill and restart."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)


@pytest.fixture
def redis_server(in_ci: bool) -> Iterator[_RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable(in_ci, "redis-server is not on PATH")
    assert binary is not None
    server = _RedisServer(binary, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_fallback_returns_to_redis_after_a_restart(
    redis_server: _RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_template.cache")
    namespace = _unique_namespace()
    primary = RedisStateCache(redis_server.url, namespace=namespace)
    fallback = MemoryStateCache(namespace=namespace)
    direct = redis.Redis.from_url(redis_server.url, decode_responses=True)
    cache = FallbackStateCache(primary, fallback, retry_after=0.05, max_retry_after=0.2)
    try:
        await cache.set("before", 1)
        assert direct.get(f"{namespace}:before") == "1"

        redis_server.kill()
        await cache.set("during", 2)  # the pooled connection is dead and nothing listens
        assert await cache.get("during") == 2
        assert await cache.incr("rate") == 1
        assert cache.primary_available is False
        assert await fallback.get("during") == 2  # it really went to the fallback

        redis_server.start()  # same port, empty: no persistence
        deadline = time.monotonic() + 5
        while not cache.primary_available:
            assert time.monotonic() < deadline, "the cache never went back to Redis"
            await asyncio.sleep(0.02)
            await cache.set("after", 3)
        await cache.set("after", 3)
        assert direct.get(f"{namespace}:after") == "3"
        assert await cache.get("after") == 3
        assert await cache.get("during") is None  # served by the new, empty Redis
    finally:
        direct.close()
        await cache.aclose()

    messages = [r.getMessage() for r in caplog.records if r.name == "agent_template.cache"]
    assert len(messages) == 2, messages
    assert "is unreachable" in messages[0] and redis_server.url in messages[0]
    assert "reconnected" in messages[1]
    assert cache.stats()["outages"] == 1


# --------------------------------------------------------------------------- factory


def _settings(tmp_path: Path, **fields: Any) -> Any:
    base = load_settings(data_dir=tmp_path / "data", redis_url=fields.pop("redis_url", None))
    # cache_backend may not be a Settings field yet; model_copy accepts it either way.
    return base.model_copy(update=fields) if fields else base


async def test_create_state_cache_picks_the_backend(tmp_path: Path, redis_url: str) -> None:
    plain = create_state_cache(_settings(tmp_path))
    assert isinstance(plain, MemoryStateCache)

    built = create_state_cache(_settings(tmp_path, redis_url=redis_url), namespace="ns")
    assert isinstance(built, FallbackStateCache)
    assert isinstance(built.primary, RedisStateCache)
    assert isinstance(built.fallback, SQLiteStateCache)
    assert built.fallback.path == tmp_path / "data" / "cache" / "state.db"
    assert built.namespace == built.fallback.namespace == "ns"
    await built.aclose()

    forced = create_state_cache(_settings(tmp_path, redis_url=redis_url, cache_backend="sqlite"))
    assert isinstance(forced, SQLiteStateCache)
    namespace = _unique_namespace()
    on_redis = create_state_cache(
        _settings(tmp_path, redis_url=redis_url, cache_backend="redis"), namespace=namespace
    )
    try:
        await on_redis.set("k", "v")
        assert await on_redis.get("k") == "v"
        assert on_redis.stats()["fallbacks"] == 0
    finally:
        await on_redis.clear_namespace()
        await on_redis.aclose()

    with pytest.raises(ConfigurationError, match="CACHE_BACKEND=redis needs REDIS_URL"):
        create_state_cache(_settings(tmp_path, cache_backend="redis"))
    with pytest.raises(ConfigurationError, match="Unknown CACHE_BACKEND"):
        create_state_cache(_settings(tmp_path, cache_backend="memcached"))


def test_importing_the_package_loads_no_driver() -> None:
    code = (
        "import sys\n"
        "from agent_template.services.state_cache import create_state_cache\n"
        "print(sorted({'redis', 'aiosqlite'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
