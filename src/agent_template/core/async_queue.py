"""A bounded asyncio queue with flow control, for the streaming hot path.

Items live in a ``deque``, waiters in FIFO deques of plain futures; a put or get that need not
wait never suspends. An item put while consumers wait goes straight to the longest-waiting
consumer, and a slot freed while producers wait is reserved for the longest-waiting producer.
Both hand-offs are cancellation-safe: no item is lost and a cancelled producer inserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from agent_template.errors import QueueClosedError, QueueFullError

__all__ = ["AsyncQueue", "FlowStrategy", "WatermarkCallback"]

T = TypeVar("T")
F = TypeVar("F", bound="asyncio.Future[Any]")
FlowStrategy = Literal["block", "drop_oldest", "drop_newest", "reject"]
WatermarkCallback = Callable[[Literal["high", "low"]], None]

_STRATEGIES: frozenset[str] = frozenset(("block", "drop_oldest", "drop_newest", "reject"))
_log = logging.getLogger(__name__)


class _Marker:
    """A non-item result of a getter's future: the queue closed or the wait timed out."""


_CLOSED = _Marker()
_TIMEOUT = _Marker()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(_TIMEOUT)


def _discard(waiters: deque[F] | list[F], fut: F) -> None:
    with contextlib.suppress(ValueError):  # already taken off by a wake-up or close()
        waiters.remove(fut)


class AsyncQueue(Generic[T]):
    """A bounded FIFO queue for asyncio with a flow strategy, watermarks and counters.

    Args:
        maxsize: The most items the queue holds (at least 1).
        strategy: What a put does when the queue is full: ``block``, ``drop_oldest``,
            ``drop_newest`` or ``reject``.
        name: A name for error messages and stats.
        high_watermark: Fraction of ``maxsize`` at which the queue counts as filling up.
        low_watermark: Fraction of ``maxsize`` at which it counts as drained again.
        on_watermark: Called with ``"high"`` when the size rises to the high watermark and
            with ``"low"`` when it then falls to the low watermark (hysteresis). An exception
            it raises is logged and swallowed.

    Attributes:
        put_count: Items accepted (handed to a consumer or stored).
        get_count: Items returned to consumers.
        dropped_count: Items evicted (``drop_oldest``) or discarded (``drop_newest``).
        rejected_count: Puts refused with :class:`QueueFullError`.
        blocked_time_s: Total seconds producers spent blocked waiting for space.
        high_watermark_hits: How many times the size rose to the high watermark.

    Raises:
        ValueError: If ``maxsize``, ``strategy`` or the watermarks are invalid.
    """

    def __init__(
        self,
        maxsize: int = 1000,
        *,
        strategy: FlowStrategy = "block",
        name: str = "queue",
        high_watermark: float = 0.8,
        low_watermark: float = 0.2,
        on_watermark: WatermarkCallback | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"Queue '{name}': maxsize must be at least 1, got {maxsize}.")
        if strategy not in _STRATEGIES:
            raise ValueError(f"Queue '{name}': unknown strategy {strategy!r}.")
        if not 0.0 <= low_watermark < high_watermark <= 1.0:
            raise ValueError(
                f"Queue '{name}': need 0 <= low_watermark < high_watermark <= 1, "
                f"got {low_watermark} and {high_watermark}."
            )
        self.maxsize = maxsize
        self.strategy: FlowStrategy = strategy
        self.name = name
        self.put_count = 0
        self.get_count = 0
        self.dropped_count = 0
        self.rejected_count = 0
        self.blocked_time_s = 0.0
        self.high_watermark_hits = 0
        self._high = high_watermark
        self._low = low_watermark
        self._high_level = high_watermark * maxsize
        self._low_level = low_watermark * maxsize
        self._high_state = False
        self._on_watermark = on_watermark
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[T | _Marker]] = deque()
        self._putters: deque[asyncio.Future[bool]] = deque()
        self._low_waiters: list[asyncio.Future[None]] = []
        self._reserved = 0  # free slots promised to producers that were woken
        self._closed = False

    # ------------------------------------------------------------------ size and state

    def qsize(self) -> int:
        """Return the number of items in the queue."""
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        """Return True if the queue holds no items."""
        return not self._items

    def full(self) -> bool:
        """Return True if there is no free slot (counting slots promised to woken producers)."""
        return len(self._items) + self._reserved >= self.maxsize

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def above_high_watermark(self) -> bool:
        """Whether the size is at or above ``high_watermark * maxsize``."""
        return len(self._items) >= self._high_level

    def stats(self) -> dict[str, float | int | str]:
        """Return the counters and current state as a flat dict."""
        return {
            "name": self.name,
            "strategy": self.strategy,
            "size": len(self._items),
            "maxsize": self.maxsize,
            "put_count": self.put_count,
            "get_count": self.get_count,
            "dropped_count": self.dropped_count,
            "rejected_count": self.rejected_count,
            "blocked_time_s": self.blocked_time_s,
            "high_watermark_hits": self.high_watermark_hits,
            "high_watermark": self._high,
            "low_watermark": self._low,
        }

    # ------------------------------------------------------------------ producers

    async def put(self, item: T) -> bool:
        """Put an item, applying the flow strategy when the queue is full.

        Returns:
            True if the item was accepted, False if ``drop_newest`` discarded it.

        Raises:
            QueueFullError: If the queue is full and the strategy is ``reject``.
            QueueClosedError: If the queue is closed, or closes while the put is blocked.
        """
        accepted = self._offer(item)
        if accepted is None:
            return await self._put_blocking(item)
        return accepted

    def put_nowait(self, item: T) -> bool:
        """Put an item without waiting; like :meth:`put`, but ``block`` raises when full.

        Returns:
            True if the item was accepted, False if ``drop_newest`` discarded it.

        Raises:
            QueueFullError: If the queue is full and the strategy is ``reject`` or ``block``.
            QueueClosedError: If the queue is closed.
        """
        items = self._items
        if not self._getters and not self._closed and len(items) + self._reserved < self.maxsize:
            items.append(item)  # the hot path, inlined: room and nobody waiting
            self.put_count += 1
            if not self._high_state and len(items) >= self._high_level:
                self._cross_high()
            return True
        accepted = self._offer(item)
        if accepted is None:
            self.rejected_count += 1
            raise QueueFullError(self.name, self.maxsize)
        return accepted

    async def wait_below_low_watermark(self) -> None:
        """Wait until the size is at or below ``low_watermark * maxsize`` or the queue closes."""
        if len(self._items) <= self._low_level or self._closed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._low_waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            _discard(self._low_waiters, fut)
            raise

    def close(self) -> None:
        """Close the queue: refuse new puts and release every waiter.

        Blocked producers raise :class:`QueueClosedError`. Consumers still get the items left
        in the queue; once it is empty, waiting and later consumers raise it too.
        """
        if self._closed:
            return
        self._closed = True
        for putter in self._putters:
            if not putter.done():
                putter.set_result(False)
        self._putters.clear()
        if not self._items:
            for getter in self._getters:
                if not getter.done():
                    getter.set_result(_CLOSED)
            self._getters.clear()
        self._wake_low_waiters()

    # ------------------------------------------------------------------ consumers

    async def get(self) -> T:
        """Remove and return the oldest item, waiting for one if the queue is empty.

        Raises:
            QueueClosedError: If the queue is closed and empty.
        """
        if self._items:
            return self._take()
        if self._closed:
            raise QueueClosedError(self.name)
        result = await self._wait_item(None)
        if isinstance(result, _Marker):
            if self._items:  # an item was given back by a cancelled consumer
                return self._take()
            raise QueueClosedError(self.name)
        self.get_count += 1
        return result

    def get_nowait(self) -> T:
        """Remove and return the oldest item without waiting.

        Raises:
            asyncio.QueueEmpty: If the queue is empty but open.
            QueueClosedError: If the queue is closed and empty.
        """
        items = self._items
        if items:
            item = items.popleft()
            if self._putters or (
                (self._high_state or self._low_waiters) and len(items) <= self._low_level
            ):
                self._after_remove(1)
            else:
                self.get_count += 1
            return item
        if self._closed:
            raise QueueClosedError(self.name)
        raise asyncio.QueueEmpty

    async def get_batch(
        self,
        max_items: int,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[T]:
        """Wait for at least one item, then take up to ``max_items`` without waiting further.

        Args:
            max_items: The most items to return (at least 1).
            timeout: Seconds to wait for the first item; None waits as long as needed.

        Returns:
            The items, oldest first; empty on timeout or when the queue is closed and empty.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}.")
        items = self._items
        batch: list[T] = []
        if not items:
            if self._closed or (timeout is not None and timeout <= 0):
                return batch
            result = await self._wait_item(timeout)
            if not isinstance(result, _Marker):
                self.get_count += 1
                batch.append(result)
        n = min(max_items - len(batch), len(items))
        if n > 0:
            popleft = items.popleft
            batch.extend([popleft() for _ in range(n)])
            self._after_remove(n)
        return batch

    def __aiter__(self) -> AsyncQueue[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except QueueClosedError:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------ internals

    def _offer(self, item: T) -> bool | None:
        """Insert without waiting; None means the strategy is ``block`` and there is no room."""
        if self._closed:
            raise QueueClosedError(self.name)
        if self._getters and self._deliver(item):
            self.put_count += 1
            return True
        items = self._items
        if len(items) + self._reserved < self.maxsize:
            items.append(item)
            self.put_count += 1
            if not self._high_state and len(items) >= self._high_level:
                self._cross_high()
            return True
        strategy = self.strategy
        if strategy == "block":
            return None
        if strategy == "drop_oldest":
            while len(items) >= self.maxsize:
                items.popleft()
                self.dropped_count += 1
            items.append(item)
            self.put_count += 1
            return True
        if strategy == "drop_newest":
            self.dropped_count += 1
            return False
        self.rejected_count += 1
        raise QueueFullError(self.name, self.maxsize)

    async def _put_blocking(self, item: T) -> bool:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            while True:
                fut: asyncio.Future[bool] = loop.create_future()
                self._putters.append(fut)
                try:
                    reserved = await fut
                except asyncio.CancelledError:
                    if fut.done() and not fut.cancelled() and fut.result():
                        self._reserved -= 1  # pass the slot we were promised on
                        self._wake_putters(1)
                    else:
                        _discard(self._putters, fut)
                    raise
                if reserved:
                    self._reserved -= 1
                accepted = self._offer(item)  # raises QueueClosedError once closed
                if accepted is not None:
                    if self._putters and len(self._items) + self._reserved < self.maxsize:
                        self._wake_putters(1)  # the item went to a consumer: slot still free
                    return accepted
        finally:
            self.blocked_time_s += time.perf_counter() - start

    async def _wait_item(self, limit_s: float | None) -> T | _Marker:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T | _Marker] = loop.create_future()
        self._getters.append(fut)
        timer = None if limit_s is None else loop.call_later(limit_s, _expire, fut)
        try:
            result = await fut
        except asyncio.CancelledError:
            handed = fut.result() if fut.done() and not fut.cancelled() else _TIMEOUT
            if isinstance(handed, _Marker):
                _discard(self._getters, fut)
            else:
                self._give_back(handed)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if result is _TIMEOUT:
            _discard(self._getters, fut)
        return result

    def _deliver(self, item: T) -> bool:
        getters = self._getters
        while getters:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(item)
                return True
        return False

    def _give_back(self, item: T) -> None:
        """Return an item handed to a consumer that was cancelled before it could take it."""
        if self._getters and self._deliver(item):
            return
        self._items.appendleft(item)  # it is older than anything stored since
        if not self._high_state and len(self._items) >= self._high_level:
            self._cross_high()

    def _take(self) -> T:
        item = self._items.popleft()
        self._after_remove(1)
        return item

    def _after_remove(self, n: int) -> None:
        self.get_count += n
        if self._putters:
            self._wake_putters(n)
        if len(self._items) <= self._low_level:
            if self._high_state:
                self._high_state = False
                self._fire("low")
            if self._low_waiters:
                self._wake_low_waiters()

    def _wake_putters(self, n: int) -> None:
        putters = self._putters
        while n and putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(True)
                self._reserved += 1
                n -= 1

    def _wake_low_waiters(self) -> None:
        for waiter in self._low_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._low_waiters.clear()

    def _cross_high(self) -> None:
        self._high_state = True
        self.high_watermark_hits += 1
        self._fire("high")

    def _fire(self, level: Literal["high", "low"]) -> None:
        if self._on_watermark is not None:
            try:
                self._on_watermark(level)
            except Exception:
                _log.exception("on_watermark callback of queue '%s' failed", self.name)
