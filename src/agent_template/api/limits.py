"""Per-user limits kept in the StateCache, so they hold across replicas sharing a Redis.

* requests per minute: a counter per user and minute; past the limit the request is answered
  429 with ``Retry-After`` (the seconds left in the minute);
* live tasks: a counter per user, raised when a task is created and lowered when it ends.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_template.services.state_cache import StateCache

__all__ = ["Limits"]

_TASK_COUNTER_TTL_S = 6 * 3600.0  # a counter a crashed replica left high heals after this


class Limits:
    """Per-user request rate and live-task limits (0 turns a limit off)."""

    def __init__(self, cache: StateCache, *, per_minute: int, max_tasks: int) -> None:
        self.cache = cache.namespaced("limits")
        self.per_minute = per_minute
        self.max_tasks = max_tasks
        self.refused = 0

    async def hit(self, user_id: str) -> float | None:
        """Count a request; the seconds to wait when it is over the limit, else None."""
        if self.per_minute <= 0:
            return None
        now = time.time()
        minute = int(now // 60)
        count = await self.cache.incr(f"rate:{user_id}:{minute}", ttl=120)
        if count <= self.per_minute:
            return None
        self.refused += 1
        return max(1.0, math.ceil((minute + 1) * 60 - now))

    async def take_task(self, user_id: str) -> bool:
        """Count a new live task of the user; False (and nothing counted) past the limit."""
        if self.max_tasks <= 0:
            return True
        key = f"tasks:{user_id}"
        count = await self.cache.incr(key, ttl=_TASK_COUNTER_TTL_S)
        if count <= self.max_tasks:
            return True
        await self.cache.incr(key, -1, ttl=_TASK_COUNTER_TTL_S)
        self.refused += 1
        return False

    async def task_ended(self, user_id: str) -> None:
        if self.max_tasks > 0:
            key = f"tasks:{user_id}"
            if await self.cache.incr(key, -1, ttl=_TASK_COUNTER_TTL_S) < 0:
                await self.cache.set(key, 0, ttl=_TASK_COUNTER_TTL_S)
