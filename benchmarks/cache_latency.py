"""StateCache latency, one JSON object per line. Run: python benchmarks/cache_latency.py

For each backend (memory, sqlite in a temporary folder, redis at REDIS_URL, and redis behind
the FallbackStateCache that ``create_state_cache`` builds), the microseconds per sequential
``get``, ``set`` and ``incr``: the median of 5 batches of 2,000 calls each, on 200 distinct
keys holding a small session-like dict. Redis is skipped, with a line saying so, when it is
unreachable. Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agent_template.services.state_cache import (  # noqa: E402
    CacheUnavailableError,
    FallbackStateCache,
    MemoryStateCache,
    StateCache,
)
from agent_template.services.state_cache.redis import RedisStateCache  # noqa: E402
from agent_template.services.state_cache.sqlite import SQLiteStateCache  # noqa: E402

BATCHES = 5
OPS = 2_000
KEYS = [f"session-{i}" for i in range(200)]
VALUE = {"user": "ada", "turns": 12, "model": "gpt-4o-mini", "tags": ["a", "b"], "ok": True}


async def _per_op_us(op: Callable[[str], Awaitable[object]]) -> float:
    samples = []
    for _ in range(BATCHES):
        started = time.perf_counter()
        for i in range(OPS):
            await op(KEYS[i % len(KEYS)])
        samples.append((time.perf_counter() - started) / OPS * 1e6)
    return round(statistics.median(samples), 2)


async def measure(name: str, cache: StateCache) -> None:
    try:
        set_us = await _per_op_us(lambda key: cache.set(key, VALUE, ttl=300))
        get_us = await _per_op_us(lambda key: cache.get(key))
        incr_us = await _per_op_us(lambda key: cache.incr(f"n:{key}", ttl=60))
        line = {"workload": "cache", "backend": name, "get_us": get_us, "set_us": set_us}
        print(json.dumps({**line, "incr_us": incr_us}), flush=True)
    finally:
        await cache.clear_namespace()
        await cache.aclose()


async def main() -> None:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    await measure("memory", MemoryStateCache(namespace=namespace))
    with tempfile.TemporaryDirectory() as folder:
        await measure("sqlite", SQLiteStateCache(Path(folder) / "state.db", namespace=namespace))

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    probe = RedisStateCache(url, namespace=namespace)
    try:
        await probe.exists("probe")
    except CacheUnavailableError as exc:
        note = {"workload": "cache", "backend": "redis", "skipped": f"unreachable: {exc.detail}"}
        print(json.dumps(note), flush=True)
        return
    finally:
        await probe.aclose()
    await measure("redis", RedisStateCache(url, namespace=namespace))
    with tempfile.TemporaryDirectory() as folder:
        fallback = SQLiteStateCache(Path(folder) / "state.db", namespace=namespace)
        primary = RedisStateCache(url, namespace=namespace)
        await measure("redis+sqlite-fallback", FallbackStateCache(primary, fallback))


if __name__ == "__main__":
    asyncio.run(main())
