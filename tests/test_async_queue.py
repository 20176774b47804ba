"""Tests of AsyncQueue: flow strategies, close, batches, watermarks, cancellation."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_template.core.async_queue import AsyncQueue, FlowStrategy
from agent_template.errors import QueueClosedError, QueueFullError

STRATEGIES: list[FlowStrategy] = ["block", "drop_oldest", "drop_newest", "reject"]


async def settle(rounds: int = 5) -> None:
    """Let every ready task run a few steps (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def run_without_suspending(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine one step; fail if it suspends instead of finishing."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("coroutine suspended")


def check_per_producer_order(*streams: list[tuple[int, int]]) -> None:
    """Each consumer sees each producer's items in the order they were put.

    With several consumers the queue is FIFO at the moment of hand-off, not at the moment a
    consumer task resumes, so order is checked per consumer stream.
    """
    for stream in streams:
        last: dict[int, int] = {}
        for producer, seq in stream:
            assert seq > last.get(producer, -1), f"producer {producer} out of order at {seq}"
            last[producer] = seq


# --------------------------------------------------------------------- concurrency


async def test_block_many_producers_and_consumers_lose_nothing_and_keep_order() -> None:
    q: AsyncQueue[tuple[int, int]] = AsyncQueue(8, strategy="block", name="s")
    producers, per_producer, consumers = 10, 200, 5
    streams: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]

    async def produce(p: int) -> None:
        for i in range(per_producer):
            assert await q.put((p, i)) is True

    async def consume(stream: list[tuple[int, int]]) -> None:
        async for item in q:
            stream.append(item)

    consumer_tasks = [asyncio.create_task(consume(s)) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(produce(p) for p in range(producers))), 5)
    q.close()
    await asyncio.wait_for(asyncio.gather(*consumer_tasks), 5)

    received = [item for stream in streams for item in stream]
    assert sorted(received) == [(p, i) for p in range(producers) for i in range(per_producer)]
    assert all(streams), "every consumer should have taken part"
    check_per_producer_order(*streams)
    assert q.put_count == q.get_count == producers * per_producer
    assert q.dropped_count == q.rejected_count == 0
    assert q.blocked_time_s > 0
    assert q.qsize() == 0


async def test_block_single_consumer_sees_global_fifo_order() -> None:
    q: AsyncQueue[tuple[int, int]] = AsyncQueue(3)
    received: list[tuple[int, int]] = []

    async def consume() -> None:
        async for item in q:
            received.append(item)

    consumer = asyncio.create_task(consume())
    # one task per put, started in order: blocked putters must be admitted in that order
    await asyncio.wait_for(asyncio.gather(*(q.put((p, i)) for i in range(50) for p in range(4))), 5)
    q.close()
    await asyncio.wait_for(consumer, 5)
    assert len(received) == 200
    check_per_producer_order(received)


@pytest.mark.parametrize("strategy", ["drop_oldest", "drop_newest", "reject"])
async def test_lossy_strategies_account_for_every_item(strategy: FlowStrategy) -> None:
    q: AsyncQueue[tuple[int, int]] = AsyncQueue(4, strategy=strategy)
    streams: list[list[tuple[int, int]]] = [[] for _ in range(3)]
    refused = 0

    async def produce(p: int) -> None:
        nonlocal refused
        for i in range(300):
            try:
                await q.put((p, i))
            except QueueFullError:
                refused += 1
            if i % 7 == 0:
                await asyncio.sleep(0)  # let consumers in now and then

    async def consume(stream: list[tuple[int, int]]) -> None:
        async for item in q:
            stream.append(item)
            await asyncio.sleep(0)

    consumer_tasks = [asyncio.create_task(consume(s)) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(produce(p) for p in range(6))), 5)
    q.close()
    await asyncio.wait_for(asyncio.gather(*consumer_tasks), 5)

    received = [item for stream in streams for item in stream]
    assert len(set(received)) == len(received)
    check_per_producer_order(*streams)
    assert refused == q.rejected_count
    assert len(received) == q.get_count
    assert len(received) + q.dropped_count + q.rejected_count == 6 * 300
    assert q.dropped_count + q.rejected_count > 0, "the test should have overflowed the queue"


# --------------------------------------------------------------------- strategies


async def test_drop_oldest_evicts_oldest_and_counts_drops() -> None:
    q: AsyncQueue[int] = AsyncQueue(5, strategy="drop_oldest")
    assert [await q.put(i) for i in range(12)] == [True] * 12
    assert q.dropped_count == 7
    assert q.put_count == 12
    assert [q.get_nowait() for _ in range(5)] == [7, 8, 9, 10, 11]


async def test_drop_newest_discards_new_items_and_counts_drops() -> None:
    q: AsyncQueue[int] = AsyncQueue(5, strategy="drop_newest")
    assert [await q.put(i) for i in range(5)] == [True] * 5
    assert [q.put_nowait(i) for i in range(5, 12)] == [False] * 7
    assert q.dropped_count == 7
    assert q.put_count == 5
    assert [q.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_reject_raises_queue_full_with_clear_message() -> None:
    q: AsyncQueue[int] = AsyncQueue(3, strategy="reject", name="events")
    for i in range(3):
        await q.put(i)
    with pytest.raises(QueueFullError) as info:
        await q.put(99)
    assert info.value.name == "events"
    assert info.value.maxsize == 3
    assert "Queue 'events' is full (3 items)" in str(info.value)
    with pytest.raises(QueueFullError):
        q.put_nowait(100)
    assert q.rejected_count == 2
    assert [q.get_nowait() for _ in range(3)] == [0, 1, 2]


async def test_block_put_nowait_raises_when_full_and_put_waits() -> None:
    q: AsyncQueue[int] = AsyncQueue(2)
    q.put_nowait(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(QueueFullError):
        q.put_nowait(3)
    assert q.rejected_count == 1
    putter = asyncio.create_task(q.put(3))
    await settle()
    assert not putter.done()
    assert q.get_nowait() == 1
    assert await putter is True
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]


async def test_puts_and_gets_that_need_not_wait_do_not_suspend() -> None:
    for strategy in STRATEGIES:
        q: AsyncQueue[int] = AsyncQueue(2, strategy=strategy)
        assert run_without_suspending(q.put(1)) is True
        assert run_without_suspending(q.put(2)) is True
        if strategy in ("drop_oldest", "drop_newest"):
            run_without_suspending(q.put(3))
        assert run_without_suspending(q.get()) in (1, 2)
        assert run_without_suspending(q.get_batch(5)) in ([2], [3])


async def test_blocked_putters_and_waiting_getters_are_served_fifo() -> None:
    q: AsyncQueue[str] = AsyncQueue(1)
    await q.put("first")
    order: list[str] = []

    async def put(tag: str) -> None:
        await q.put(tag)
        order.append(tag)

    putters = [asyncio.create_task(put(t)) for t in "abc"]
    await settle()
    got = [q.get_nowait()]
    # the freed slot is promised to "a": a put that did not wait must not take it
    assert q.full()
    with pytest.raises(QueueFullError):
        q.put_nowait("barging")
    got += [await asyncio.wait_for(q.get(), 1) for _ in range(3)]
    await asyncio.gather(*putters)
    assert got == ["first", "a", "b", "c"]
    assert order == ["a", "b", "c"]

    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await settle()
    for tag in "xyz":
        q.put_nowait(tag)
    assert [await g for g in getters] == ["x", "y", "z"]


async def test_slot_freed_by_direct_hand_off_wakes_next_putter() -> None:
    q: AsyncQueue[str] = AsyncQueue(1)
    q.put_nowait("a")
    p1 = asyncio.create_task(q.put("b"))
    await settle()
    assert q.get_nowait() == "a"  # p1 is promised the slot
    p2 = asyncio.create_task(q.put("c"))
    g = asyncio.create_task(q.get())
    await settle()  # p1 hands "b" straight to g; the slot stays free for p2
    assert await g == "b"
    await asyncio.wait_for(p2, 1)
    await p1
    assert q.get_nowait() == "c"


# --------------------------------------------------------------------- close


async def test_close_lets_consumers_drain_then_stop() -> None:
    q: AsyncQueue[int] = AsyncQueue(10)
    for i in range(5):
        await q.put(i)
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(QueueClosedError, match="Queue 'queue' is closed"):
        await q.put(5)
    with pytest.raises(QueueClosedError):
        q.put_nowait(5)
    assert [item async for item in q] == [0, 1, 2, 3, 4]
    with pytest.raises(QueueClosedError):
        await q.get()
    with pytest.raises(QueueClosedError):
        q.get_nowait()
    assert await q.get_batch(3) == []


async def test_close_releases_blocked_putters_and_waiting_getters() -> None:
    full: AsyncQueue[int] = AsyncQueue(1)
    full.put_nowait(0)
    putters = [asyncio.create_task(full.put(i)) for i in range(1, 4)]
    empty: AsyncQueue[int] = AsyncQueue(1)
    getters = [asyncio.create_task(empty.get()) for _ in range(3)]
    batcher = asyncio.create_task(empty.get_batch(5))
    await settle()
    full.close()
    empty.close()
    for task in [*putters, *getters]:
        with pytest.raises(QueueClosedError):
            await task
    assert await batcher == []
    assert full.get_nowait() == 0  # what was stored is still delivered
    assert full.empty()


async def test_get_nowait_on_empty_open_queue_raises_queue_empty() -> None:
    q: AsyncQueue[int] = AsyncQueue(1)
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


# --------------------------------------------------------------------- batches


async def test_get_batch_takes_what_is_available_up_to_max() -> None:
    q: AsyncQueue[int] = AsyncQueue(10)
    for i in range(7):
        q.put_nowait(i)
    assert await q.get_batch(3) == [0, 1, 2]
    assert await q.get_batch(10) == [3, 4, 5, 6]
    assert q.get_count == 7
    with pytest.raises(ValueError, match="max_items"):
        await q.get_batch(0)


async def test_get_batch_waits_for_first_item_only() -> None:
    q: AsyncQueue[int] = AsyncQueue(10)
    batch = asyncio.create_task(q.get_batch(5))
    await settle()
    assert not batch.done()
    q.put_nowait(1)
    q.put_nowait(2)  # stored before the batcher resumes: taken with the first
    assert await batch == [1, 2]


async def test_get_batch_timeout_returns_empty_and_leaves_no_waiter() -> None:
    q: AsyncQueue[int] = AsyncQueue(10)
    assert await q.get_batch(5, timeout=0.01) == []
    assert not q._getters  # the timed-out waiter was removed
    assert await q.get_batch(5, timeout=0) == []
    q.put_nowait(1)  # must be stored, not handed to a stale waiter
    assert q.qsize() == 1
    assert await q.get_batch(5, timeout=0.01) == [1]


# --------------------------------------------------------------------- watermarks


async def test_watermark_callback_has_hysteresis() -> None:
    events: list[str] = []
    q: AsyncQueue[int] = AsyncQueue(10, on_watermark=events.append)
    for i in range(7):
        q.put_nowait(i)
    assert events == [] and not q.above_high_watermark
    q.put_nowait(7)  # size 8 = 0.8 * 10
    assert events == ["high"] and q.above_high_watermark
    q.put_nowait(8)
    q.put_nowait(9)
    for _ in range(7):
        q.get_nowait()  # size 3
    assert events == ["high"]
    q.get_nowait()  # size 2 = 0.2 * 10
    assert events == ["high", "low"]
    await q.get_batch(2)
    assert events == ["high", "low"]
    for i in range(8):
        q.put_nowait(i)
    assert events == ["high", "low", "high"]
    assert q.high_watermark_hits == 2
    assert q.stats()["high_watermark_hits"] == 2


async def test_failing_watermark_callback_does_not_break_the_queue() -> None:
    def boom(level: Literal["high", "low"]) -> None:
        raise RuntimeError(level)

    q: AsyncQueue[int] = AsyncQueue(2, on_watermark=boom)
    assert q.put_nowait(1) and q.put_nowait(2)
    assert q.get_nowait() == 1 and q.get_nowait() == 2
    assert q.high_watermark_hits == 1


async def test_wait_below_low_watermark() -> None:
    q: AsyncQueue[int] = AsyncQueue(10)
    await asyncio.wait_for(q.wait_below_low_watermark(), 1)  # empty: returns at once
    for i in range(9):
        q.put_nowait(i)
    waiter = asyncio.create_task(q.wait_below_low_watermark())
    await settle()
    for _ in range(6):
        q.get_nowait()  # size 3
    await settle()
    assert not waiter.done()
    q.get_nowait()  # size 2
    await asyncio.wait_for(waiter, 1)
    q.put_nowait(9)
    q.put_nowait(10)  # size 4
    closed_waiter = asyncio.create_task(q.wait_below_low_watermark())
    await settle()
    q.close()
    await asyncio.wait_for(closed_waiter, 1)


# --------------------------------------------------------------------- time and stats


async def test_blocked_time_grows_only_while_a_producer_is_blocked() -> None:
    q: AsyncQueue[int] = AsyncQueue(1)
    await q.put(1)
    assert q.blocked_time_s == 0
    putter = asyncio.create_task(q.put(2))
    await asyncio.sleep(0.03)
    assert q.get_nowait() == 1
    await putter
    assert 0.02 <= q.blocked_time_s < 1


async def test_stats_and_size_helpers() -> None:
    q: AsyncQueue[int] = AsyncQueue(3, strategy="drop_newest", name="tokens")
    assert q.empty() and len(q) == 0
    for i in range(4):
        q.put_nowait(i)
    assert q.full() and len(q) == q.qsize() == 3
    q.get_nowait()
    stats = q.stats()
    assert stats["name"] == "tokens"
    assert stats["strategy"] == "drop_newest"
    assert (stats["size"], stats["maxsize"]) == (2, 3)
    assert (stats["put_count"], stats["get_count"]) == (3, 1)
    assert (stats["dropped_count"], stats["rejected_count"]) == (1, 0)
    assert stats["blocked_time_s"] == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"maxsize": 0},
        {"strategy": "nope"},
        {"high_watermark": 0.2, "low_watermark": 0.5},
        {"high_watermark": 1.5},
        {"low_watermark": -0.1},
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AsyncQueue(**kwargs)


# --------------------------------------------------------------------- cancellation


async def test_cancelled_waiting_getter_is_removed() -> None:
    q: AsyncQueue[int] = AsyncQueue(5)
    getter = asyncio.create_task(q.get())
    await settle()
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert not q._getters  # no stale waiter left behind
    q.put_nowait(1)
    assert q.qsize() == 1  # stored, not handed to the cancelled getter
    assert await q.get() == 1


async def test_getter_cancelled_after_hand_off_gives_item_back_in_front() -> None:
    q: AsyncQueue[str] = AsyncQueue(5)
    getter = asyncio.create_task(q.get())
    await settle()
    q.put_nowait("x")  # handed to the getter...
    getter.cancel()  # ...which is cancelled before it runs again
    q.put_nowait("y")
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert [q.get_nowait(), q.get_nowait()] == ["x", "y"]
    assert q.get_count == 2


async def test_getter_cancelled_after_hand_off_passes_item_to_next_getter() -> None:
    q: AsyncQueue[str] = AsyncQueue(5)
    first = asyncio.create_task(q.get_batch(3))
    second = asyncio.create_task(q.get())
    await settle()
    q.put_nowait("x")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "x"
    assert q.empty()


async def test_item_given_back_after_close_is_still_delivered() -> None:
    q: AsyncQueue[str] = AsyncQueue(5)
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await settle()
    q.put_nowait("x")  # handed to `first`
    first.cancel()
    q.close()  # wakes `second` with "closed" before `first` gives "x" back
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "x"
    with pytest.raises(QueueClosedError):
        await q.get()


async def test_cancelled_blocked_putter_inserts_nothing() -> None:
    q: AsyncQueue[str] = AsyncQueue(1)
    q.put_nowait("a")
    putter = asyncio.create_task(q.put("lost"))
    await settle()
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    assert not q._putters  # no stale waiter left behind
    assert q.get_nowait() == "a"
    await settle()
    assert q.empty()
    assert q.put_nowait("b") is True


async def test_putter_cancelled_after_wake_up_passes_slot_on() -> None:
    q: AsyncQueue[str] = AsyncQueue(1)
    q.put_nowait("a")
    first = asyncio.create_task(q.put("cancelled"))
    second = asyncio.create_task(q.put("kept"))
    await settle()
    assert q.get_nowait() == "a"  # promises the slot to `first`
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) is True
    assert q.get_nowait() == "kept"
    assert q.empty() and not q.full()


# --------------------------------------------------------------------- properties

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 999)),
        st.tuples(st.just("get"), st.just(0)),
        st.tuples(st.just("batch"), st.integers(1, 4)),
    ),
    max_size=60,
)


@settings(max_examples=50, deadline=None)
@given(strategy=st.sampled_from(STRATEGIES), maxsize=st.integers(1, 6), ops=OPS)
def test_matches_reference_model(strategy: FlowStrategy, maxsize: int, ops: list[Any]) -> None:
    async def scenario() -> None:
        q: AsyncQueue[int] = AsyncQueue(maxsize, strategy=strategy)
        model: deque[int] = deque()
        dropped = rejected = puts = gets = 0
        for op, arg in ops:
            if op == "put":
                full = len(model) >= maxsize
                if full and strategy in ("block", "reject"):
                    with pytest.raises(QueueFullError):
                        if strategy == "block":
                            q.put_nowait(arg)
                        else:
                            await q.put(arg)
                    rejected += 1
                elif full and strategy == "drop_newest":
                    assert await q.put(arg) is False
                    dropped += 1
                else:
                    if full:
                        model.popleft()
                        dropped += 1
                    assert await q.put(arg) is True
                    model.append(arg)
                    puts += 1
            elif op == "get":
                if model:
                    assert await q.get() == model.popleft()
                    gets += 1
                else:
                    with pytest.raises(asyncio.QueueEmpty):
                        q.get_nowait()
            elif model:
                expected = [model.popleft() for _ in range(min(arg, len(model)))]
                assert await q.get_batch(arg) == expected
                gets += len(expected)
            else:
                assert await q.get_batch(arg, timeout=0) == []
            assert list(q._items) == list(model)
            assert q.full() == (len(model) >= maxsize)
        stats = q.stats()
        assert (stats["put_count"], stats["get_count"]) == (puts, gets)
        assert (stats["dropped_count"], stats["rejected_count"]) == (dropped, rejected)

    asyncio.run(scenario())


@settings(max_examples=50, deadline=None)
@given(
    maxsize=st.integers(1, 4),
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    consumers=st.integers(1, 3),
    batch=st.integers(1, 3),
)
def test_block_delivers_everything_in_producer_order(
    maxsize: int, counts: list[int], consumers: int, batch: int
) -> None:
    async def scenario() -> list[list[tuple[int, int]]]:
        q: AsyncQueue[tuple[int, int]] = AsyncQueue(maxsize)
        streams: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]

        async def produce(p: int, n: int) -> None:
            for i in range(n):
                await q.put((p, i))

        async def consume(stream: list[tuple[int, int]]) -> None:
            while items := await q.get_batch(batch):
                stream.extend(items)

        tasks = [asyncio.create_task(consume(s)) for s in streams]
        await asyncio.gather(*(produce(p, n) for p, n in enumerate(counts)))
        q.close()
        await asyncio.gather(*tasks)
        assert q.put_count == q.get_count == sum(counts)
        return streams

    streams = asyncio.run(asyncio.wait_for(scenario(), 2))  # a lost wake-up fails, not hangs
    received = sorted(item for stream in streams for item in stream)
    assert received == sorted((p, i) for p, n in enumerate(counts) for i in range(n))
    check_per_producer_order(*streams)
