"""The process's event bus: typed events from tasks, model and tool calls, streams and sessions.

Callers see only :class:`EventBus`, so a Redis-backed bus (one stream across replicas) can
replace :class:`InProcessEventBus` without changing them. There are two ways to consume:

* :meth:`EventBus.subscribe` gives a :class:`Subscription` that reads through its own bounded
  queue. When a reader falls behind, its oldest events are dropped (and counted) instead of
  slowing the publisher or anyone else.
* :meth:`EventBus.add_listener` runs a cheap synchronous callback inline on every matching
  publish; metrics use it. A listener that raises is logged once and counted, never propagated.

``publish`` is synchronous and never waits; call it from the event loop's thread.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self, TypeVar

from agent_template.core.async_queue import AsyncQueue
from agent_template.errors import QueueClosedError
from agent_template.models.bus_events import BusEventBase

__all__ = [
    "DEFAULT_SUBSCRIPTION_SIZE",
    "EventBus",
    "EventListener",
    "InProcessEventBus",
    "Subscription",
    "default_bus",
    "set_default_bus",
]

DEFAULT_SUBSCRIPTION_SIZE = 1000  # events a subscriber may lag behind before the oldest drop

EventListener = Callable[[BusEventBase], None]

_T = TypeVar("_T")

_log = logging.getLogger("agent_template.events")


def _types_filter(types: Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    wanted = frozenset(types)
    if not wanted:
        raise ValueError("types is empty, so nothing would match; pass None for every type.")
    return wanted


class Subscription:
    """A filtered view of the bus, read through its own bounded ``drop_oldest`` queue.

    Read it with ``async for event in subscription`` or ``await subscription.get()``. Use it as
    a context manager (``with`` or ``async with``) or call :meth:`close` to unsubscribe; events
    already queued can still be read, then iteration ends.

    Bus implementations create subscriptions; callers get them from :meth:`EventBus.subscribe`.

    Args:
        types: Event ``type`` values to receive; None receives every type.
        session_id: Receive only events of this session.
        task_id: Receive only events of this task.
        maxsize: How many unread events to keep; beyond that the oldest are dropped.
        on_close: Called once with this subscription when it closes (the bus unregisters it).

    Raises:
        ValueError: If ``types`` is empty or ``maxsize`` is less than 1.
    """

    __slots__ = ("_on_close", "_queue", "session_id", "task_id", "types")

    def __init__(
        self,
        *,
        types: Iterable[str] | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        maxsize: int = DEFAULT_SUBSCRIPTION_SIZE,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.types = _types_filter(types)
        self.session_id = session_id
        self.task_id = task_id
        self._queue: AsyncQueue[BusEventBase] = AsyncQueue(
            maxsize, strategy="drop_oldest", name="bus-subscription"
        )
        self._on_close = on_close

    @property
    def dropped(self) -> int:
        """Events discarded because this subscriber fell more than ``maxsize`` behind."""
        return self._queue.dropped_count

    @property
    def pending(self) -> int:
        """Events queued and not read yet."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """Whether the subscription was closed (by :meth:`close` or the bus's ``aclose``)."""
        return self._queue.closed

    def matches(self, event: BusEventBase) -> bool:
        """Return True if ``event`` passes this subscription's type, session and task filters."""
        if self.types is not None and getattr(event, "type", None) not in self.types:
            return False
        if self.session_id is not None and event.session_id != self.session_id:
            return False
        return self.task_id is None or event.task_id == self.task_id

    def push(self, event: BusEventBase) -> bool:
        """Queue ``event`` without checking the filters; for bus implementations.

        Returns:
            False if the subscription is closed and the event was ignored, else True.
        """
        queue = self._queue
        if queue.closed:
            return False
        queue.put_nowait(event)  # drop_oldest: never raises while open
        return True

    async def get(self) -> BusEventBase:
        """Return the oldest unread event, waiting for one if none is queued.

        Raises:
            QueueClosedError: If the subscription is closed and every queued event was read.
        """
        return await self._queue.get()

    def close(self) -> None:
        """Unsubscribe; readers get what is already queued, then iteration ends. Idempotent."""
        if self._queue.closed:
            return
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
        self._queue.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BusEventBase:
        try:
            return await self._queue.get()
        except QueueClosedError:
            raise StopAsyncIteration from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        types = "*" if self.types is None else ",".join(sorted(self.types))
        return f"Subscription(types={types}, pending={self.pending}, dropped={self.dropped})"


class EventBus(ABC):
    """The one event bus of a process; components take ``bus=``, else use :func:`default_bus`.

    Attributes:
        published: Events passed to :meth:`publish`.
        delivered: Hand-offs to listeners and subscriptions (one per recipient per event).
        listener_errors: Exceptions raised by listeners (logged once per listener).
    """

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.listener_errors = 0

    def wants(self, event_type: str) -> bool:
        """Whether anyone would receive an event of this type (publishers may skip building it).

        Buses that cannot tell (one spanning processes) answer True.
        """
        return True

    @abstractmethod
    def publish(self, event: BusEventBase) -> None:
        """Send ``event`` to every matching listener and subscription.

        Never waits and never raises because of a listener or a subscriber.
        """

    @abstractmethod
    def subscribe(
        self,
        *,
        types: Iterable[str] | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        maxsize: int = DEFAULT_SUBSCRIPTION_SIZE,
    ) -> Subscription:
        """Start receiving events that match every given filter.

        Args:
            types: Event ``type`` values (``"task_state"``, ``"tool_finished"``...); None for all.
            session_id: Only events of this session.
            task_id: Only events of this task.
            maxsize: Unread events to keep before the oldest are dropped.

        Returns:
            A :class:`Subscription`; close it (or use it as a context manager) to unsubscribe.

        Raises:
            ValueError: If ``types`` is empty or ``maxsize`` is less than 1.
        """

    @abstractmethod
    def add_listener(
        self, fn: EventListener, *, types: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Call ``fn(event)`` inline on each matching publish; keep it cheap and synchronous.

        An exception from ``fn`` is counted in :attr:`listener_errors`, logged the first time
        (logger ``agent_template.events``) and never reaches the publisher.

        Returns:
            A function that removes the listener (calling it again does nothing).

        Raises:
            ValueError: If ``types`` is empty.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close every subscription, so their iterators end; listeners stay registered."""

    def stats(self) -> dict[str, int]:
        """Return the counters as a flat dict (for metrics collectors and status pages)."""
        return {
            "published": self.published,
            "delivered": self.delivered,
            "listener_errors": self.listener_errors,
        }


class _Listener:
    __slots__ = ("failed", "fn")

    def __init__(self, fn: EventListener) -> None:
        self.fn = fn
        self.failed = False


class InProcessEventBus(EventBus):
    """An :class:`EventBus` for one process: publish is a dict lookup and a loop, no awaits.

    Listeners and subscriptions are indexed by event type, plus a wildcard list for those
    that take every type. The indexes hold tuples that are replaced, never mutated, so
    subscribing or unsubscribing during a publish (from a listener, say) is safe.
    """

    def __init__(self) -> None:
        super().__init__()
        self._subs_by_type: dict[str, tuple[Subscription, ...]] = {}
        self._subs_any: tuple[Subscription, ...] = ()
        self._listeners_by_type: dict[str, tuple[_Listener, ...]] = {}
        self._listeners_any: tuple[_Listener, ...] = ()
        self._subscriptions: dict[Subscription, None] = {}  # insertion-ordered set

    @property
    def subscription_count(self) -> int:
        """Open subscriptions."""
        return len(self._subscriptions)

    def wants(self, event_type: str) -> bool:
        return bool(
            self._listeners_any
            or self._subs_any
            or self._listeners_by_type.get(event_type)
            or self._subs_by_type.get(event_type)
        )

    def publish(self, event: BusEventBase) -> None:
        """Send ``event`` to matching listeners and subscriptions; see :meth:`EventBus.publish`."""
        self.published += 1
        etype: str = getattr(event, "type", "")
        count = 0
        for listeners in (self._listeners_by_type.get(etype, ()), self._listeners_any):
            for listener in listeners:
                count += 1
                try:
                    listener.fn(event)
                except Exception:  # a listener must never break the publisher
                    self._listener_failed(listener, event)
        sid, tid = event.session_id, event.task_id
        for subs in (self._subs_by_type.get(etype, ()), self._subs_any):
            for sub in subs:
                if (sub.session_id is None or sub.session_id == sid) and (
                    sub.task_id is None or sub.task_id == tid
                ):
                    count += sub.push(event)
        self.delivered += count

    def subscribe(
        self,
        *,
        types: Iterable[str] | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        maxsize: int = DEFAULT_SUBSCRIPTION_SIZE,
    ) -> Subscription:
        """Start receiving matching events; see :meth:`EventBus.subscribe`."""
        sub = Subscription(
            types=types,
            session_id=session_id,
            task_id=task_id,
            maxsize=maxsize,
            on_close=self._unsubscribe,
        )
        self._subscriptions[sub] = None
        if sub.types is None:
            self._subs_any = (*self._subs_any, sub)
        else:
            for etype in sub.types:
                self._subs_by_type[etype] = (*self._subs_by_type.get(etype, ()), sub)
        return sub

    def add_listener(
        self, fn: EventListener, *, types: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Run ``fn`` inline on matching publishes; see :meth:`EventBus.add_listener`."""
        wanted = _types_filter(types)
        listener = _Listener(fn)
        if wanted is None:
            self._listeners_any = (*self._listeners_any, listener)
        else:
            for etype in wanted:
                self._listeners_by_type[etype] = (*self._listeners_by_type.get(etype, ()), listener)

        def remove() -> None:
            if wanted is None:
                self._listeners_any = tuple(x for x in self._listeners_any if x is not listener)
                return
            for etype in wanted:
                _remove_from(self._listeners_by_type, etype, listener)

        return remove

    async def aclose(self) -> None:
        """Close every subscription; see :meth:`EventBus.aclose`."""
        for sub in list(self._subscriptions):
            sub.close()

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.pop(sub, None)
        if sub.types is None:
            self._subs_any = tuple(x for x in self._subs_any if x is not sub)
            return
        for etype in sub.types:
            _remove_from(self._subs_by_type, etype, sub)

    def _listener_failed(self, listener: _Listener, event: BusEventBase) -> None:
        self.listener_errors += 1
        if not listener.failed:
            listener.failed = True
            _log.exception(
                "Event listener %r failed on a %r event; later failures of this listener are "
                "only counted (see listener_errors).",
                listener.fn,
                getattr(event, "type", type(event).__name__),
            )


def _remove_from(index: dict[str, tuple[_T, ...]], key: str, item: _T) -> None:
    remaining = tuple(x for x in index.get(key, ()) if x is not item)
    if remaining:
        index[key] = remaining
    else:
        index.pop(key, None)


_default_bus: EventBus | None = None


def default_bus() -> EventBus:
    """Return the process-wide bus, creating an :class:`InProcessEventBus` on first use."""
    global _default_bus
    if _default_bus is None:
        _default_bus = InProcessEventBus()
    return _default_bus


def set_default_bus(bus: EventBus | None) -> None:
    """Replace the process-wide bus (composition root, tests); None resets to lazy creation."""
    global _default_bus
    _default_bus = bus
