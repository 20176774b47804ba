"""The stream store contract: numbering, fan-out, slow consumers, resume, retention, release.

Every StreamStore implementation runs this suite unchanged: add its factory to ``STORES``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from agent_template.core.stream_store import MemoryStreamStore, StreamStore
from agent_template.errors import SlowConsumerError, StreamNotFoundError
from agent_template.models import StreamGap, TextDelta, ToolResultEvent, stream_event_adapter

StoreFactory = Callable[..., StreamStore]

STORES: dict[str, StoreFactory] = {"memory": MemoryStreamStore}


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    """Builds a store of the parametrised kind with the given options."""
    return STORES[request.param]


def texts(n: int, start: int = 0) -> list[TextDelta]:
    return [TextDelta(text=f"t{i} ") for i in range(start, start + n)]


def covered(chunks: list[Any]) -> list[int]:
    return [s for c in chunks for s in range(c.seq, c.last_seq + 1)]


def joined(chunks: list[Any]) -> str:
    return "".join(c.content for c in chunks)


async def drain(consumer: Any) -> list[Any]:
    return [c async for c in consumer]


async def test_chunks_are_numbered_from_one_and_serialised_once(make_store: StoreFactory) -> None:
    store = make_store()
    stream = store.create("s", user_id="u", session_id="sess", task_id="t")
    consumer = store.subscribe("s")
    for event in texts(5):
        stream.publish(event)
    stream.close()
    chunks = await drain(consumer)
    assert [c.seq for c in chunks] == [1, 2, 3, 4, 5]
    wire = json.loads(chunks[0].to_json())
    assert wire["seq"] == 1
    assert wire["task_id"] == "t"
    assert wire["session_id"] == "sess"
    assert isinstance(stream_event_adapter.validate_python(wire["data"]), TextDelta)
    assert chunks[0].to_json() is chunks[0].to_json()


async def test_fast_and_slow_consumers_do_not_hold_each_other_up(make_store: StoreFactory) -> None:
    store = make_store(queue_size=8, retain=100_000, retain_bytes=64 * 1024 * 1024)
    stream = store.create("s")
    fast = store.subscribe("s")
    slow = store.subscribe("s")
    got_fast: list[int] = []

    async def read_fast() -> None:
        async for chunk in fast:
            got_fast.extend(range(chunk.seq, chunk.last_seq + 1))

    reader = asyncio.create_task(read_fast())
    for i, event in enumerate(texts(2000)):
        stream.publish(event)  # never awaits: the producer cannot be slowed
        if i % 4 == 0:
            await asyncio.sleep(0)
    stream.close()
    await reader
    assert got_fast == list(range(1, 2001))
    slow_chunks = await drain(slow)
    assert joined(slow_chunks) == "".join(e.text for e in texts(2000))
    assert len(slow_chunks) < 2000  # caught up with deltas coalesced
    assert covered(slow_chunks) == list(range(1, 2001))


async def test_drop_policy_signals_the_gap(make_store: StoreFactory) -> None:
    store = make_store(queue_size=4)
    stream = store.create("s")
    consumer = store.subscribe("s", policy="drop")
    for event in texts(10):
        stream.publish(event)
    stream.close()
    chunks = await drain(consumer)
    assert [c.seq for c in chunks[:4]] == [1, 2, 3, 4]
    gap = chunks[4].event
    assert isinstance(gap, StreamGap)
    assert (gap.from_seq, gap.to_seq, gap.reason) == (5, 10, "dropped")


async def test_disconnect_policy_raises_after_draining(make_store: StoreFactory) -> None:
    store = make_store(queue_size=3)
    stream = store.create("s")
    consumer = store.subscribe("s", policy="disconnect")
    for event in texts(5):
        stream.publish(event)
    got = []
    with pytest.raises(SlowConsumerError, match="Reconnect and resume"):
        async for chunk in consumer:
            got.append(chunk.seq)
    assert got == [1, 2, 3]


async def test_a_consumer_leaving_during_publish_costs_the_others_nothing(
    make_store: StoreFactory,
) -> None:
    store = make_store(queue_size=1)
    stream = store.create("s")
    leaving = store.subscribe("s", policy="disconnect")
    waiting = store.subscribe("s", policy="wait")
    dropping = store.subscribe("s", policy="drop")
    stream.publish(TextDelta(text="1"))
    stream.publish(TextDelta(text="2"))  # overflows all three; the first one leaves
    stream.close()
    with pytest.raises(SlowConsumerError):
        await drain(leaving)
    assert covered(await drain(waiting)) == [1, 2]  # every chunk, caught up
    dropped = await drain(dropping)
    assert dropped[0].seq == 1
    assert isinstance(dropped[1].event, StreamGap)  # chunk 2 missed, and said so
    assert (dropped[1].event.from_seq, dropped[1].event.to_seq) == (2, 2)


async def test_late_join_and_resume_after_a_chunk_number(make_store: StoreFactory) -> None:
    store = make_store()
    stream = store.create("s")
    for event in texts(10):
        stream.publish(event)
    late = store.subscribe("s")
    resumed = store.subscribe("s", after_seq=6)
    for event in texts(5, start=10):
        stream.publish(event)
    stream.close()
    assert covered(await drain(late)) == list(range(1, 16))
    resumed_chunks = await drain(resumed)
    assert covered(resumed_chunks) == list(range(7, 16))  # no gap, no duplicate
    assert joined(resumed_chunks) == "".join(f"t{i} " for i in range(6, 15))
    again = await drain(store.subscribe("s", after_seq=15))  # finished: nothing more
    assert again == []


async def test_retention_is_bounded_by_count(make_store: StoreFactory) -> None:
    store = make_store(retain=5)
    stream = store.create("s")
    for event in texts(30):
        stream.publish(event)
    stream.close()
    chunks = await drain(store.subscribe("s", after_seq=2))
    gap = chunks[0].event
    assert isinstance(gap, StreamGap)
    assert (gap.reason, gap.from_seq) == ("expired", 3)
    assert chunks[-1].last_seq == 30
    assert covered(chunks[1:])[0] >= 30 - 5 - 1  # five kept, give or take an eighth


async def test_retention_is_bounded_by_bytes(make_store: StoreFactory) -> None:
    budget = 64 * 1024
    store = make_store(retain=1_000_000, retain_bytes=budget)
    stream = store.create("s")
    for i in range(2000):  # one-token chunks, then a large tool result among them
        stream.publish(TextDelta(text="tok "))
        if i == 1000:
            stream.publish(ToolResultEvent(call_id="c", name="cat", content="x" * 40_000))
    assert store.stats()["retained_bytes"] <= budget
    chunks = await drain_after_close(store, stream)
    assert isinstance(chunks[0].event, StreamGap) and chunks[0].event.reason == "expired"
    assert chunks[-1].last_seq == 2001


async def test_released_streams_leave_nothing_behind(make_store: StoreFactory) -> None:
    import weakref

    store = make_store(linger_s=0.0)
    refs = []
    for i in range(20):
        stream = store.create(f"s{i}")
        reader = store.subscribe(f"s{i}")
        stream.publish(TextDelta(text="a"))
        stream.close()
        store.create(f"sweep{i}").close()  # sweeps while the reader is still on s{i}
        await drain(reader)  # the last reader leaves after the linger: released now
        refs.append(weakref.ref(stream))
    del stream, reader
    gc.collect()
    assert store.stats()["streams"] <= 1
    assert sum(ref() is not None for ref in refs) == 0  # the store let go of every one


async def drain_after_close(store: StreamStore, stream: Any) -> list[Any]:
    stream.close()
    return await drain(store.subscribe(stream.stream_id, after_seq=0))


async def test_finished_streams_are_released_once_read_and_lingered(
    make_store: StoreFactory,
) -> None:
    store = make_store(linger_s=0.0)
    for i in range(3):
        stream = store.create(f"s{i}")
        consumer = store.subscribe(f"s{i}")
        stream.publish(TextDelta(text="a"))
        stream.close()
        await drain(consumer)  # read to the end
    store.create("open")  # any activity sweeps
    assert [f"s{i}" in store for i in range(3)] == [False, False, False]
    assert "open" in store
    with pytest.raises(StreamNotFoundError):
        store.subscribe("s0")


async def test_a_stream_still_being_read_is_released_when_its_reader_is_done(
    make_store: StoreFactory,
) -> None:
    store = make_store(linger_s=0.0, queue_size=2)
    stream = store.create("s")
    reader = store.subscribe("s")
    for event in texts(10):
        stream.publish(event)
    stream.close()
    store.create("other")
    assert "s" in store  # its reader has not finished: still resumable
    chunks = await drain(reader)
    assert covered(chunks) == list(range(1, 11))
    assert "s" not in store


async def test_a_lingering_stream_stays_resumable(make_store: StoreFactory) -> None:
    store = make_store(linger_s=300.0)
    stream = store.create("s")
    stream.publish(TextDelta(text="a"))
    stream.close()
    store.create("other")
    assert covered(await drain(store.subscribe("s"))) == [1]


async def test_finished_streams_beyond_the_budgets_are_released_oldest_first(
    make_store: StoreFactory,
) -> None:
    store = make_store(max_streams=3, linger_s=300.0)
    for i in range(5):
        stream = store.create(f"s{i}")
        stream.publish(TextDelta(text="a"))
        stream.close()
    assert [f"s{i}" in store for i in range(5)] == [False, False, True, True, True]
    small = make_store(max_bytes=10_000, linger_s=300.0)
    for i in range(5):
        stream = small.create(f"b{i}")
        stream.publish(ToolResultEvent(call_id="c", name="cat", content="x" * 4000))
        stream.close()
    kept = [f"b{i}" in small for i in range(5)]
    assert kept[-1] and not kept[0]
    assert small.stats()["retained_bytes"] <= 10_000


async def test_release_forgets_a_stream_and_its_aliases(make_store: StoreFactory) -> None:
    store = make_store()
    stream = store.create("task-1")
    store.alias("stream_1", "task-1")
    stream.publish(TextDelta(text="a"))
    assert covered(await drain_first(store.subscribe("stream_1"))) == [1]
    store.release("task-1")
    assert "task-1" not in store and "stream_1" not in store
    store.create("dup")
    with pytest.raises(ValueError, match="exists"):
        store.create("dup")


async def drain_first(consumer: Any) -> list[Any]:
    first = await consumer.__anext__()
    consumer.close()
    return [first]


async def test_a_stream_is_visible_only_to_its_owner(make_store: StoreFactory) -> None:
    store = make_store()
    store.create("s", user_id="alice")
    assert store.get("s", user_id="alice").info.user_id == "alice"
    assert store.get("s").stream_id == "s"  # trusted callers see it
    with pytest.raises(StreamNotFoundError):
        store.get("s", user_id="bob")
    with pytest.raises(StreamNotFoundError):
        store.subscribe("s", user_id="bob")


async def test_an_abandoned_consumer_does_not_keep_its_stream_forever(
    make_store: StoreFactory,
) -> None:
    store = make_store(linger_s=0.0, max_streams=2)
    for i in range(4):
        stream = store.create(f"s{i}")
        store.subscribe(f"s{i}")  # never read, never closed
        stream.publish(TextDelta(text="a"))
        stream.close()
    gc.collect()
    store.create("last")
    assert sum(f"s{i}" in store for i in range(4)) <= 2


async def test_an_alias_moves_to_the_newest_stream_given_it(make_store: StoreFactory) -> None:
    store = make_store()
    store.create("task-1")
    second = store.create("task-2")
    store.alias("latest", "task-1")
    store.alias("latest", "task-2")
    assert store.get("latest") is second
    store.release("task-1")
    assert store.get("latest") is second
    store.create("task-3")
    with pytest.raises(ValueError, match="exists"):
        store.alias("task-2", "task-3")  # another stream's own id is never taken over


# --------------------------------------------------------------------------- readers' cursors


def check_order(chunks: list[Any], events: list[Any]) -> list[int]:
    """Every chunk in order, each number once, text as published; returns the numbers."""
    numbers = covered(chunks)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True
    for chunk in chunks:
        if isinstance(chunk.event, StreamGap):
            assert (chunk.event.from_seq, chunk.event.to_seq) == (chunk.seq, chunk.last_seq)
        elif isinstance(chunk.event, TextDelta):
            published = events[chunk.seq - 1 : chunk.last_seq]
            assert chunk.content == "".join(e.text for e in published)
        else:
            assert chunk.seq == chunk.last_seq and chunk.event == events[chunk.seq - 1]
    return numbers


async def test_readers_at_every_speed_get_every_chunk_or_a_gap(make_store: StoreFactory) -> None:
    """Fast, slow, stalled and stop-and-go readers of each policy on one stream: each gets
    every chunk in order exactly once, or a gap chunk saying which it missed."""
    store = make_store(queue_size=16, retain=400)
    stream = store.create("s")
    events: list[Any] = texts(3000)
    events.insert(1500, ToolResultEvent(call_id="c", name="cat", content="in the middle"))
    got: dict[tuple[str, str], list[Any]] = {}
    errors: dict[tuple[str, str], BaseException] = {}
    published = asyncio.Event()

    async def read(policy: Any, speed: str) -> None:
        chunks = got[(policy, speed)] = []
        consumer = store.subscribe("s", policy=policy)
        if speed == "stalled":
            await published.wait()
        try:
            async for chunk in consumer:
                chunks.append(chunk)
                if speed == "slow":
                    for _ in range(3):
                        await asyncio.sleep(0)
                elif speed == "stop-and-go" and len(chunks) % 50 == 0:
                    await asyncio.sleep(0.002)
        except SlowConsumerError as exc:
            errors[(policy, speed)] = exc

    speeds = ("fast", "slow", "stalled", "stop-and-go")
    readers = [
        asyncio.create_task(read(policy, speed))
        for policy in ("wait", "drop", "disconnect")
        for speed in speeds
    ]
    await asyncio.sleep(0)  # every reader has subscribed before the first chunk
    for i, event in enumerate(events):
        stream.publish(event)
        if i % 4 == 3:
            await asyncio.sleep(0)
    stream.close()
    published.set()
    await asyncio.gather(*readers)

    total = len(events)
    for (policy, speed), chunks in got.items():
        numbers = check_order(chunks, events)
        gaps = [c.event for c in chunks if isinstance(c.event, StreamGap)]
        if policy == "disconnect" and (policy, speed) in errors:
            assert numbers[0] == 1 and not gaps  # a prefix, then told to reconnect
            continue
        assert numbers == list(range(1, total + 1)), (policy, speed)
        if policy == "wait":
            assert {g.reason for g in gaps} <= {"expired"}
        else:
            assert {g.reason for g in gaps} <= {"dropped"}
    assert all(c.seq == c.last_seq for c in got[("wait", "fast")])  # never behind: one by one
    assert not [c for c in got[("drop", "fast")] if isinstance(c.event, StreamGap)]
    assert ("disconnect", "stalled") in errors and ("disconnect", "fast") not in errors
    assert any(isinstance(c.event, StreamGap) for c in got[("drop", "stalled")])
    assert stream.dropped == sum(
        g.to_seq - g.from_seq + 1
        for chunks in got.values()
        for g in (c.event for c in chunks)
        if isinstance(g, StreamGap) and g.reason == "dropped"
    )


async def test_a_reader_resumes_anywhere_in_a_long_answer(make_store: StoreFactory) -> None:
    """However a store keeps chunks read long ago, a reconnect after any chunk number gets
    exactly the rest."""
    store = make_store(retain=100_000)
    stream = store.create("s")
    live = store.subscribe("s")
    events = texts(1000)
    for i, event in enumerate(events):
        stream.publish(event)
        if i % 10 == 9:
            await asyncio.sleep(0)  # let nothing pile up: the live reader keeps pace
            while live.pending:
                await live.__anext__()
    stream.close()
    for after in (0, 1, 63, 64, 65, 500, 999, 1000):
        rest = await drain(store.subscribe("s", after_seq=after))
        assert covered(rest) == list(range(after + 1, 1001))
        assert joined(rest) == "".join(e.text for e in events[after:])


async def test_a_reader_behind_a_trim_keeps_what_it_has_yet_to_read(
    make_store: StoreFactory,
) -> None:
    store = make_store(retain=8, queue_size=64)
    stream = store.create("s")
    reader = store.subscribe("s")
    for event in texts(40):  # trimmed to the last few while the reader has read nothing
        stream.publish(event)
    stream.close()
    chunks = await drain(reader)
    assert [c.seq for c in chunks] == list(range(1, 41))  # one by one, none lost
    late = await drain(store.subscribe("s", after_seq=0))
    assert isinstance(late[0].event, StreamGap) and late[0].event.reason == "expired"


async def test_a_cancelled_read_loses_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    stream = store.create("s")
    consumer = store.subscribe("s")
    assert consumer.pending == 0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await consumer.__anext__()
    stream.publish(TextDelta(text="a"))
    assert consumer.pending == 1 and consumer.queue.qsize() == 1
    assert (await consumer.__anext__()).content == "a"
    stream.close()
    assert await drain(consumer) == []


async def test_closing_a_consumer_ends_a_read_that_waits(make_store: StoreFactory) -> None:
    store = make_store()
    store.create("s")
    consumer = store.subscribe("s")
    waiting = asyncio.create_task(drain(consumer))
    await asyncio.sleep(0)
    consumer.close()
    async with asyncio.timeout(1):
        assert await waiting == []
    assert store.get("s").readers == 0


async def test_drops_are_counted_when_the_stream_ends(make_store: StoreFactory) -> None:
    store = make_store(queue_size=4)
    stream = store.create("s")
    store.subscribe("s", policy="drop")  # never read
    for event in texts(10):
        stream.publish(event)
    stream.close()
    assert stream.dropped == 6  # chunks 5 to 10, known without the reader reading on


@pytest.mark.parametrize("seed", range(25))
async def test_random_readers_get_every_chunk_or_a_gap(make_store: StoreFactory, seed: int) -> None:
    """Readers joining at random places, with random policies and paces, on streams with
    random bounds: every chunk in order exactly once, or a gap chunk saying which it missed."""
    rnd = random.Random(seed)
    store = make_store(
        retain=rnd.choice([3, 8, 50, 200, 10_000]),
        retain_bytes=rnd.choice([4096, 64 * 1024, 4 * 1024 * 1024]),
        queue_size=rnd.choice([1, 2, 8, 64, 1024]),
    )
    stream = store.create("s")
    events: list[Any] = [
        TextDelta(text=f"t{i} ")
        if rnd.random() < 0.9
        else ToolResultEvent(call_id="c", name="cat", content="x" * rnd.randint(0, 3000))
        for i in range(rnd.randint(1, 600))
    ]
    closed = asyncio.Event()
    outcomes: list[tuple[str, str, int | None, list[Any], bool]] = []

    async def read(policy: Any, after: int | None, pace: str) -> None:
        consumer = store.subscribe("s", after_seq=after, policy=policy)
        chunks: list[Any] = []
        disconnected = False
        if pace == "stalled":
            await closed.wait()
        try:
            async for chunk in consumer:
                chunks.append(chunk)
                if pace == "slow" and rnd.random() < 0.5:
                    await asyncio.sleep(0)
                elif pace == "leaves" and rnd.random() < 0.02:
                    consumer.close()
        except SlowConsumerError:
            disconnected = True
        outcomes.append((policy, pace, after, chunks, disconnected))

    readers = []
    for i, event in enumerate(events):
        if rnd.random() < 0.05:
            after = rnd.choice([None, 0, max(0, i - rnd.randint(0, 50)), i])
            policy = rnd.choice(["wait", "drop", "disconnect"])
            pace = rnd.choice(["fast", "slow", "stalled", "leaves"])
            readers.append(asyncio.create_task(read(policy, after, pace)))
        stream.publish(event)
        if rnd.random() < 0.3:
            await asyncio.sleep(0)
    stream.close()
    closed.set()
    await asyncio.gather(*readers)

    for policy, pace, after, chunks, disconnected in outcomes:
        numbers = check_order(chunks, events)
        if numbers and after is not None:
            assert numbers[0] == after + 1  # right after the chunk it named (or a gap from it)
        if not disconnected and pace != "leaves":
            assert numbers and numbers[-1] == len(events)  # read to the end
        reasons = {c.event.reason for c in chunks if isinstance(c.event, StreamGap)}
        assert reasons <= ({"dropped", "expired"} if policy == "drop" else {"expired"})
