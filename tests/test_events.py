"""Tests of the event bus: filters, slow subscribers, listeners, closing, JSON round trips."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from agent_template.core.bus import (
    EventBus,
    InProcessEventBus,
    Subscription,
    default_bus,
    set_default_bus,
)
from agent_template.errors import QueueClosedError
from agent_template.models.bus_events import (
    BusEventBase,
    ErrorOccurred,
    ModelCallFinished,
    ModelCallStarted,
    SessionChanged,
    StreamEnded,
    StreamStarted,
    TaskStateChanged,
    ToolExecFinished,
    ToolExecStarted,
    bus_event_adapter,
)
from agent_template.models.messages import Usage
from agent_template.models.tasks import Task, TaskState


async def drain(sub: Subscription) -> list[BusEventBase]:
    """Close ``sub`` and return what it had queued: a closed subscription still yields those."""
    sub.close()
    return [event async for event in sub]


def one_of_each() -> list[BusEventBase]:
    task = Task(session_id="s1", state=TaskState.RUNNING, payload={"text": "hi"})
    return [
        TaskStateChanged(
            session_id="s1", task_id=task.task_id, task=task, previous=TaskState.PENDING
        ),
        ModelCallStarted(session_id="s1", task_id="t1", turn=2),
        ModelCallFinished(
            session_id="s1",
            task_id="t1",
            turn=2,
            provider="openai",
            model="gpt-x",
            latency_ms=12.5,
            usage=Usage(input_tokens=10, output_tokens=3, requests=1),
        ),
        ToolExecStarted(session_id="s1", task_id="t1", call_id="c1", name="search"),
        ToolExecFinished(
            session_id="s1", task_id="t1", call_id="c1", name="search", duration_ms=3.0
        ),
        StreamStarted(session_id="s1", stream_id="st1"),
        StreamEnded(session_id="s1", stream_id="st1", chunks=42),
        SessionChanged(session_id="s1", action="created"),
        ErrorOccurred(code="provider_error", message='bad "json"\n', source="openai"),
    ]


async def test_type_filter_receives_only_those_types() -> None:
    bus = InProcessEventBus()
    tools = bus.subscribe(types=["tool_started", "tool_finished"])
    events = one_of_each()
    for event in events:
        bus.publish(event)
    assert [e.type for e in await drain(tools)] == ["tool_started", "tool_finished"]


async def test_wildcard_receives_every_event_in_order() -> None:
    bus = InProcessEventBus()
    everything = bus.subscribe()
    events = one_of_each()
    for event in events:
        bus.publish(event)
    assert await drain(everything) == events
    assert bus.published == len(events)
    assert bus.delivered == len(events)


async def test_session_and_task_filters_combine_with_types() -> None:
    bus = InProcessEventBus()
    s1 = bus.subscribe(session_id="s1")
    s1_t1 = bus.subscribe(session_id="s1", task_id="t1")
    s1_t1_model = bus.subscribe(types=["model_call_started"], session_id="s1", task_id="t1")
    s2 = bus.subscribe(session_id="s2")
    published = [
        ModelCallStarted(session_id="s1", task_id="t1", turn=0),
        ModelCallStarted(session_id="s1", task_id="t2", turn=1),
        ModelCallStarted(session_id="s2", task_id="t1", turn=2),
        ErrorOccurred(session_id="s1", task_id="t1", code="x", message="m"),
        SessionChanged(session_id=None, action="deleted"),
    ]
    for event in published:
        bus.publish(event)
    assert await drain(s1) == [published[0], published[1], published[3]]
    assert await drain(s1_t1) == [published[0], published[3]]
    assert await drain(s1_t1_model) == [published[0]]
    assert await drain(s2) == [published[2]]


async def test_stalled_subscriber_blocks_neither_publisher_nor_others() -> None:
    bus = InProcessEventBus()
    stalled = bus.subscribe(maxsize=10)
    big = bus.subscribe(maxsize=10_000)
    live = bus.subscribe(types=["stream_ended"])  # default maxsize, read concurrently
    received: list[int] = []

    async def read_live() -> None:
        async for event in live:
            assert isinstance(event, StreamEnded)
            received.append(event.chunks)

    reader = asyncio.create_task(read_live())
    events = [StreamEnded(stream_id="s", chunks=i) for i in range(10_000)]
    started = time.perf_counter()
    for i, event in enumerate(events):
        bus.publish(event)
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the live reader catch up; the stalled one never reads
    elapsed = time.perf_counter() - started
    await bus.aclose()
    await asyncio.wait_for(reader, 1)

    assert received == list(range(10_000))
    assert live.dropped == 0
    assert [e.chunks for e in await drain(big)] == list(range(10_000))
    assert stalled.dropped == 9_990
    assert [e.chunks for e in await drain(stalled)] == list(range(9_990, 10_000))
    assert bus.delivered == 30_000
    assert elapsed < 2.0


async def test_failing_listener_is_counted_logged_once_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessEventBus()
    seen: list[str] = []

    def broken(event: BusEventBase) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(broken)
    bus.add_listener(lambda e: seen.append(e.type), types=["session_changed"])
    sub = bus.subscribe()
    with caplog.at_level(logging.ERROR, logger="agent_template.events"):
        for _ in range(3):
            bus.publish(SessionChanged(session_id="s", action="updated"))
    assert bus.listener_errors == 3
    assert seen == ["session_changed"] * 3
    assert len(await drain(sub)) == 3
    records = [r for r in caplog.records if r.name == "agent_template.events"]
    assert len(records) == 1
    assert "broken" in records[0].getMessage()
    assert records[0].exc_info is not None


async def test_listener_type_filter_and_removal() -> None:
    bus = InProcessEventBus()
    typed: list[BusEventBase] = []
    every: list[BusEventBase] = []
    remove_typed = bus.add_listener(typed.append, types=["stream_started"])
    remove_every = bus.add_listener(every.append)
    bus.publish(StreamStarted(stream_id="a"))
    bus.publish(StreamEnded(stream_id="a"))
    assert [type(e) for e in typed] == [StreamStarted]
    assert len(every) == 2
    remove_typed()
    remove_every()
    remove_every()  # idempotent
    bus.publish(StreamStarted(stream_id="b"))
    assert len(typed) == 1
    assert len(every) == 2


async def test_aclose_ends_waiting_iterators_after_queued_events() -> None:
    bus = InProcessEventBus()
    first = bus.subscribe()
    second = bus.subscribe(types=["error_occurred"])
    bus.publish(ErrorOccurred(code="a", message="queued before close"))

    async def collect(sub: Subscription) -> list[BusEventBase]:
        return [event async for event in sub]

    readers = [asyncio.create_task(collect(s)) for s in (first, second)]
    await asyncio.sleep(0)
    await bus.aclose()
    results = await asyncio.wait_for(asyncio.gather(*readers), 1)
    assert [[e.code for e in r] for r in results] == [["a"], ["a"]]
    assert first.closed and second.closed
    assert bus.subscription_count == 0
    with pytest.raises(QueueClosedError):
        await first.get()
    bus.publish(ErrorOccurred(code="b", message="after close"))  # no subscriber, no error
    assert bus.delivered == 2


async def test_unsubscribe_by_close_and_context_managers() -> None:
    bus = InProcessEventBus()
    with bus.subscribe(types=["stream_started"]) as sync_sub:
        bus.publish(StreamStarted(stream_id="1"))
    async with bus.subscribe() as async_sub:
        bus.publish(StreamStarted(stream_id="2"))
    manual = bus.subscribe(task_id="t")
    manual.close()
    manual.close()
    bus.publish(StreamStarted(stream_id="3", task_id="t"))
    assert bus.subscription_count == 0
    assert [e.stream_id for e in await drain(sync_sub)] == ["1"]
    assert [e.stream_id for e in await drain(async_sub)] == ["2"]
    assert await drain(manual) == []
    assert bus.delivered == 2  # the first event reached sync_sub only; the second async_sub


async def test_get_waits_for_the_next_event() -> None:
    bus = InProcessEventBus()
    sub = bus.subscribe(types=["session_changed"])
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    event = SessionChanged(session_id="s", action="created")
    bus.publish(event)
    assert await asyncio.wait_for(waiter, 1) is event


def test_invalid_subscriptions_are_refused() -> None:
    bus = InProcessEventBus()
    with pytest.raises(ValueError, match="types is empty"):
        bus.subscribe(types=[])
    with pytest.raises(ValueError, match="maxsize"):
        bus.subscribe(maxsize=0)
    with pytest.raises(ValueError, match="types is empty"):
        bus.add_listener(lambda e: None, types=())
    assert bus.subscription_count == 0


def test_subscription_matches_mirrors_bus_filters() -> None:
    sub = Subscription(types=["tool_started"], session_id="s", task_id="t")
    assert sub.matches(ToolExecStarted(session_id="s", task_id="t", call_id="c", name="x"))
    assert not sub.matches(ToolExecStarted(session_id="s", task_id="u", call_id="c", name="x"))
    assert not sub.matches(ToolExecFinished(session_id="s", task_id="t", call_id="c", name="x"))
    assert Subscription().matches(SessionChanged(action="created"))


async def test_events_round_trip_through_json() -> None:
    bus = InProcessEventBus()
    sub = bus.subscribe()
    events = one_of_each()
    for event in events:
        bus.publish(event)
    received = await drain(sub)
    assert len(received) == len(events) == 9
    for original, event in zip(events, received, strict=True):
        wire = bus_event_adapter.dump_json(event)
        decoded = bus_event_adapter.validate_json(wire)
        assert type(decoded) is type(original)
        assert decoded == original
    decoded_task = bus_event_adapter.validate_json(bus_event_adapter.dump_json(events[0]))
    assert isinstance(decoded_task, TaskStateChanged)
    assert decoded_task.task.state is TaskState.RUNNING
    assert decoded_task.previous is TaskState.PENDING


def test_default_bus_is_one_lazy_instance_and_replaceable() -> None:
    set_default_bus(None)
    try:
        bus = default_bus()
        assert isinstance(bus, InProcessEventBus)
        assert default_bus() is bus
        replacement: EventBus = InProcessEventBus()
        set_default_bus(replacement)
        assert default_bus() is replacement
    finally:
        set_default_bus(None)
