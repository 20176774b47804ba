"""StateCache: hot session state and rate-limit counters, on memory, SQLite or Redis.

``create_state_cache(settings)`` picks the backend. The SQLite and Redis modules import
``aiosqlite`` and ``redis`` when they are first used, not when this package is imported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent_template.errors import ConfigurationError
from agent_template.services.state_cache.base import (
    DEFAULT_NAMESPACE,
    CacheUnavailableError,
    StateCache,
    StateCacheError,
)
from agent_template.services.state_cache.fallback import FallbackStateCache
from agent_template.services.state_cache.memory import MemoryStateCache

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.services.state_cache.redis import RedisStateCache
    from agent_template.services.state_cache.sqlite import SQLiteStateCache

__all__ = [
    "DEFAULT_NAMESPACE",
    "CacheUnavailableError",
    "FallbackStateCache",
    "MemoryStateCache",
    "RedisStateCache",
    "SQLiteStateCache",
    "StateCache",
    "StateCacheError",
    "cache_namespace",
    "create_state_cache",
]

BACKENDS: Final = ("memory", "sqlite", "redis")
OUTAGE_MARKER: Final = "redis_outage"  # in the cache folder: when Redis was last found down
_LAZY = {
    "RedisStateCache": "agent_template.services.state_cache.redis",
    "SQLiteStateCache": "agent_template.services.state_cache.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def cache_namespace(settings: Settings) -> str:
    """The key prefix of the cache in front of ``settings.database_url``.

    ``CACHE_NAMESPACE`` when set; otherwise ``agent_template:`` and a digest of the database
    (a SQLite file by its absolute path, any other database by its URL without the password),
    so that processes sharing one database share cache entries, and two databases sharing
    one Redis (two projects, or tests) never read each other's.
    """
    explicit = getattr(settings, "cache_namespace", None)
    if explicit:
        return str(explicit)
    from agent_template.services.storage.engine import sqlite_path

    url = settings.database_url
    path = sqlite_path(url)
    if path is not None:
        identity = "sqlite:" + str(Path(path).resolve())
    else:
        identity = re.sub(r"(//[^:/@]*):[^@]*@", r"\1@", url)  # drop a password
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{DEFAULT_NAMESPACE}:{digest}"


def create_state_cache(
    settings: Settings,
    *,
    namespace: str | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> StateCache:
    """Build the state cache that ``settings`` ask for. No connection is made yet.

    With ``settings.redis_url`` set: Redis, wrapped in a :class:`FallbackStateCache` that
    serves from SQLite at ``settings.data_dir / "cache" / "state.db"`` while Redis is down,
    and remembers an outage for the next process in ``settings.data_dir / "cache" /
    "redis_outage"`` (so a CLI run after one that found Redis down does not wait for it).
    Without it: an in-process :class:`MemoryStateCache`. A ``cache_backend`` setting of
    ``memory``, ``sqlite`` or ``redis`` overrides the choice (``redis`` keeps the fallback).

    Keys are prefixed with ``namespace``, by default :func:`cache_namespace`.
    ``on_fallback`` is called each time the fallback serves an operation (for a metric).

    Raises:
        ConfigurationError: when ``cache_backend`` is unknown, or is ``redis`` without
            ``redis_url``.
    """
    choice = getattr(settings, "cache_backend", None) or "auto"
    if choice not in (*BACKENDS, "auto"):
        raise ConfigurationError(
            f"Unknown CACHE_BACKEND {choice!r}; use one of {', '.join(BACKENDS)}, "
            "or leave it unset to use Redis when REDIS_URL is set and memory otherwise."
        )
    if choice == "auto":
        choice = "redis" if settings.redis_url else "memory"
    if namespace is None:
        namespace = cache_namespace(settings)
    if choice == "memory":
        return MemoryStateCache(namespace=namespace)

    from agent_template.services.state_cache.sqlite import SQLiteStateCache

    cache_dir = settings.data_dir / "cache"
    sqlite_cache = SQLiteStateCache(cache_dir / "state.db", namespace=namespace)
    if choice == "sqlite":
        return sqlite_cache
    if not settings.redis_url:
        raise ConfigurationError(
            "CACHE_BACKEND=redis needs REDIS_URL (for example redis://localhost:6379/0); "
            "set it, or choose CACHE_BACKEND=sqlite or memory."
        )
    from agent_template.services.state_cache.redis import RedisStateCache

    return FallbackStateCache(
        RedisStateCache(settings.redis_url, namespace=namespace),
        sqlite_cache,
        on_fallback=on_fallback,
        outage_marker=cache_dir / OUTAGE_MARKER,
    )
