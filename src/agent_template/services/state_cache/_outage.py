"""What a FallbackStateCache remembers about an outage of its primary.

Two things. The keys written or deleted while only the fallback was served: when the primary
answers again, both copies of them are dropped, so neither serves a value that the other
changed. And a small marker file holding when the primary was last found down, so the next
process (a new CLI run) does not wait for a frozen Redis again before using the fallback, and
which namespaces any process wrote during the outage: a process that exits before the primary
returns takes its key list with it, so whichever process next reaches the primary clears
those namespaces whole.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent_template.services.state_cache._backend import CacheCounters
from agent_template.services.state_cache.base import StateCache

__all__ = [
    "MAX_TRACKED_KEYS",
    "Health",
    "OutageWrites",
    "marker_is_recent",
    "read_full_marker",
    "read_marker",
    "remove_marker",
    "write_marker",
]

logger = logging.getLogger("agent_template.cache")

# Keys remembered per outage. Past this, a namespace with a new write is remembered as "clear
# it all" instead: more keys than this would take long to delete one by one anyway.
MAX_TRACKED_KEYS = 10_000


class OutageWrites:
    """The ``(namespace, key)`` pairs changed in the fallback only, bounded.

    Args:
        limit: the most keys kept; past it, namespaces are remembered whole.
    """

    def __init__(self, limit: int = MAX_TRACKED_KEYS) -> None:
        self.limit = limit
        self.keys: dict[str, set[str]] = {}
        self.cleared: set[str] = set()  # namespaces (sub-namespaces included) to clear whole
        self.count = 0
        # The primary and fallback views of each namespace seen, to delete through later.
        self.views: dict[str, tuple[StateCache, StateCache]] = {}

    def __bool__(self) -> bool:
        return bool(self.keys or self.cleared)

    def _covered(self, namespace: str) -> bool:
        return any(namespace == c or namespace.startswith(c + ":") for c in self.cleared)

    def add_key(self, namespace: str, key: str) -> None:
        if self._covered(namespace):
            return
        bucket = self.keys.get(namespace)
        if bucket is not None and key in bucket:
            return
        if self.count >= self.limit:
            self.add_clear(namespace)
            return
        self.keys.setdefault(namespace, set()).add(key)
        self.count += 1

    def add_clear(self, namespace: str) -> None:
        inside = namespace + ":"
        for other in [n for n in self.keys if n == namespace or n.startswith(inside)]:
            self.count -= len(self.keys.pop(other))
        self.cleared = {c for c in self.cleared if not c.startswith(inside)}
        self.cleared.add(namespace)

    def take(self) -> tuple[dict[str, set[str]], set[str]]:
        """Everything recorded so far, forgetting it (see :meth:`put_back`)."""
        keys, cleared = self.keys, self.cleared
        self.keys, self.cleared, self.count = {}, set(), 0
        return keys, cleared

    def put_back(self, keys: dict[str, set[str]], cleared: set[str]) -> None:
        """Record again what :meth:`take` returned (it could not be applied)."""
        for namespace in cleared:
            self.add_clear(namespace)
        for namespace, bucket in keys.items():
            for key in bucket:
                self.add_key(namespace, key)


@dataclass
class Health:
    """The primary's state and the counters, shared by a cache and its namespaced views."""

    retry_after: float
    max_retry_after: float
    marker: Path | None = None
    marker_loaded: bool = False
    marked_namespaces: set[str] = field(default_factory=set)  # already in the marker
    root: tuple[str, StateCache, StateCache] | None = None  # to make views of any namespace
    down: bool = False
    probing: bool = False  # one call at a time tries a primary that is down
    delay: float = 0.0
    next_try: float = 0.0
    marked_at: float = float("-inf")  # when the latest failure was recorded
    reason: str = ""
    fallbacks: int = 0
    primary_attempts: int = 0
    primary_errors: int = 0
    outages: int = 0
    counters: CacheCounters = field(default_factory=CacheCounters)
    writes: OutageWrites = field(default_factory=OutageWrites)


def read_marker(path: Path) -> tuple[float, float] | None:
    """``(when the primary was found down, the retry delay then)``, or None. Never raises."""
    found = read_full_marker(path)
    return None if found is None else (found[0], found[1])


def read_full_marker(path: Path) -> tuple[float, float, set[str]] | None:
    """The marker with the namespaces written during the outage. Never raises."""
    try:
        first, second, *namespaces = path.read_text().split()
        return float(first), float(second), set(namespaces)
    except (OSError, ValueError):
        return None  # no marker, unreadable, or half-written by a process that died


def write_marker(
    path: Path, down_at: float, delay: float, namespaces: set[str] | None = None
) -> None:
    """Record an outage for later processes, keeping the namespaces it lists already and
    adding ``namespaces``. Never raises: without it they just probe again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        known = read_full_marker(path)
        written = (known[2] if known else set()) | (namespaces or set())
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(" ".join([repr(down_at), repr(delay), *sorted(written)]) + "\n")
        os.replace(temporary, path)  # readers never see half a marker
    except Exception:
        logger.debug("could not write the cache outage marker %s", path, exc_info=True)


def remove_marker(path: Path) -> None:
    """Forget a recorded outage. Never raises."""
    try:
        path.unlink(missing_ok=True)
    except Exception:
        logger.debug("could not remove the cache outage marker %s", path, exc_info=True)


def marker_is_recent(found: tuple[float, float] | None, max_age: float) -> bool:
    """Whether a marker was written less than ``max_age`` seconds ago."""
    return found is not None and 0 <= time.time() - found[0] < max_age
