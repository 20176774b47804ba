"""The StateCache interface, its errors, and how values are encoded.

Values are JSON-serialisable Python objects (dict, list, str, int, float, bool, None). Every
backend stores them as canonical JSON (sorted keys, no spaces), so a value read back is a fresh
copy and two equal values have the same encoding, which is what ``compare_and_set`` compares.
"""

from __future__ import annotations

import copy
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

from agent_template.errors import CacheUnavailableError, StateCacheError

__all__ = [
    "DEFAULT_NAMESPACE",
    "CacheUnavailableError",
    "StateCache",
    "StateCacheError",
    "check_ttl",
    "decode_value",
    "encode_value",
    "not_an_integer",
]

DEFAULT_NAMESPACE = "agent_template"


def encode_value(value: Any) -> str:
    """Encode ``value`` as canonical JSON.

    Raises:
        TypeError: when ``value`` is not JSON-serialisable (NaN and infinity included).
    """
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"State cache values must be JSON-serialisable: {exc}") from None


def decode_value(raw: str) -> Any:
    """Decode a value stored by :func:`encode_value`."""
    return json.loads(raw)


def not_an_integer(key: str) -> ValueError:
    """The error ``incr`` raises when ``key`` (as stored) holds something other than an integer."""
    return ValueError(f"incr needs an integer, but {key!r} holds a value of another kind")


def check_ttl(ttl: float | None) -> float | None:
    """Return ``ttl`` after checking it is ``None`` or a positive, finite number of seconds."""
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    return ttl


class StateCache(ABC):
    """A small async key-value store for hot session state and rate-limit counters.

    Keys are strings, stored as ``f"{namespace}:{key}"``; :meth:`namespaced` returns a view
    with a sub-namespace that shares the same connection. Values are JSON-serialisable
    objects. ``ttl`` is in seconds; ``None`` means the entry does not expire, and a ``set``
    without ``ttl`` removes an earlier expiry.

    Use it as ``async with`` or call :meth:`aclose` once on the cache you built; views do not
    own the connection and closing one does nothing.
    """

    backend: ClassVar[str]

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        if not namespace:
            raise ValueError("namespace must not be empty")
        self._namespace = namespace
        self._owner = True

    @property
    def namespace(self) -> str:
        """The prefix of every key this cache reads and writes (without the trailing colon)."""
        return self._namespace

    @property
    def target(self) -> str:
        """Where the data lives, for messages: a URL without its password, a path, or ``memory``."""
        return self.backend

    def full_key(self, key: str) -> str:
        """The key as stored: ``f"{namespace}:{key}"``."""
        return f"{self._namespace}:{key}"

    def namespaced(self, namespace: str) -> Self:
        """A view on ``f"{self.namespace}:{namespace}"`` sharing this cache's connection and stats.

        Raises:
            ValueError: when ``namespace`` is empty.
        """
        if not namespace:
            raise ValueError("namespace must not be empty")
        view = copy.copy(self)  # backends keep their shared state in referenced objects
        view._namespace = f"{self._namespace}:{namespace}"
        view._owner = False
        return view

    @abstractmethod
    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored at ``key``, or ``default`` when it is absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing any value and expiry it had.

        Raises:
            TypeError: when ``value`` is not JSON-serialisable.
            ValueError: when ``ttl`` is not positive.
        """

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there."""

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every key of ``keys``; return how many were there.

        This default deletes one key at a time; backends override it with one round trip.
        """
        removed = 0
        for key in dict.fromkeys(keys):
            removed += await self.delete(key)
        return removed

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds an unexpired value."""

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Atomically add ``amount`` to the integer at ``key`` and return the new value.

        An absent key starts at 0 and, only then, gets ``ttl``: a counter created with a TTL
        keeps its first expiry however often it is incremented, which is a fixed-window rate
        limit.

        Raises:
            ValueError: when ``key`` holds something other than an integer.
        """

    @abstractmethod
    async def compare_and_set(
        self, key: str, expected: Any, new: Any, *, ttl: float | None = None
    ) -> bool:
        """Atomically store ``new`` only if the current value equals ``expected``.

        Equality is equality of the JSON encodings (so ``1`` and ``1.0`` differ, and dict key
        order does not matter). ``expected=None`` means "only if absent". Returns whether
        ``new`` was stored; it gets ``ttl`` (``None``: no expiry).
        """

    @abstractmethod
    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of ``keys`` that are present; absent and expired keys are left out."""

    @abstractmethod
    async def set_many(self, mapping: Mapping[str, Any], *, ttl: float | None = None) -> None:
        """Store every item of ``mapping``, all with the same ``ttl``."""

    @abstractmethod
    async def clear_namespace(self) -> None:
        """Remove every key of this namespace (sub-namespaces included) and nothing else."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connection. Only the cache that was built owns it; views do nothing."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: ``backend``, ``hits``, ``misses``, ``sets``, ``deletes``, ``errors``..."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
