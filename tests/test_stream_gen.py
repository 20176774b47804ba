"""StreamGenerator: numbered chunks, fan-out, slow consumers, resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent_template import StreamGenerator
from agent_template.core.stream_gen import ChunkStream
from agent_template.errors import SlowConsumerError, StreamNotFoundError
from agent_template.models import DoneEvent, StreamGap, TextDelta, stream_event_adapter


def texts(n: int, start: int = 0) -> list[TextDelta]:
    return [TextDelta(text=f"t{i} ") for i in range(start, start + n)]


async def source(n: int, *, every: int = 1) -> AsyncIterator[TextDelta | DoneEvent]:
    for i, event in enumerate(texts(n)):
        yield event
        if i % every == 0:
            await asyncio.sleep(0)
    yield DoneEvent(status="completed", output="")


def joined(chunks: list) -> str:  # type: ignore[type-arg]
    return "".join(c.content for c in chunks)


async def test_chunks_are_numbered_in_order_without_duplicates() -> None:
    gen = StreamGenerator()
    chunks = [c async for c in gen.process_stream("s1", source(50))]
    assert [c.seq for c in chunks] == list(range(1, 52))
    assert joined(chunks) == "".join(f"t{i} " for i in range(50))
    assert chunks[-1].type == "done"
    wire = stream_event_adapter.validate_python(json.loads(chunks[0].to_json())["data"])
    assert isinstance(wire, TextDelta)
    assert chunks[0].to_json() is chunks[0].to_json()  # serialised once


async def test_fast_and_slow_consumers_do_not_hold_each_other_up() -> None:
    stream = ChunkStream("s", queue_size=8, retain=100_000)
    fast = stream.subscribe()
    slow = stream.subscribe()
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
    assert slow.lagging  # it read nothing, so it stopped receiving live chunks
    slow_chunks = [c async for c in slow]
    # it catches up from the retained chunks, coalesced, with nothing lost or repeated
    assert joined(slow_chunks) == "".join(e.text for e in texts(2000))
    assert len(slow_chunks) < 2000
    covered = [s for c in slow_chunks for s in range(c.seq, c.last_seq + 1)]
    assert covered == list(range(1, 2001))
    assert slow.coalesced > 0


async def test_drop_policy_signals_the_gap() -> None:
    stream = ChunkStream("s", queue_size=4)
    consumer = stream.subscribe(policy="drop")
    for event in texts(10):
        stream.publish(event)
    stream.close()
    chunks = [c async for c in consumer]
    assert [c.seq for c in chunks[:4]] == [1, 2, 3, 4]
    gap = chunks[4]
    assert isinstance(gap.event, StreamGap)
    assert (gap.event.from_seq, gap.event.to_seq) == (5, 10)
    assert consumer.dropped == 6


async def test_disconnect_policy_raises_after_draining() -> None:
    stream = ChunkStream("s", queue_size=3)
    consumer = stream.subscribe(policy="disconnect")
    for event in texts(5):
        stream.publish(event)
    got = []
    with pytest.raises(SlowConsumerError, match="Reconnect and resume"):
        async for chunk in consumer:
            got.append(chunk.seq)
    assert got == [1, 2, 3]
    assert stream.consumers == 0


async def test_late_join_and_resume_from_a_chunk_number() -> None:
    gen = StreamGenerator()
    stream = gen.create_stream("s")
    for event in texts(10):
        stream.publish(event)
    late = gen.subscribe("s")  # joins late: receives everything retained
    resumed = gen.subscribe("s", after_seq=6)  # reconnects after chunk 6
    for event in texts(5, start=10):
        stream.publish(event)
    stream.close()
    late_chunks = [c async for c in late]
    resumed_chunks = [c async for c in resumed]
    assert [s for c in late_chunks for s in range(c.seq, c.last_seq + 1)] == list(range(1, 16))
    covered = [s for c in resumed_chunks for s in range(c.seq, c.last_seq + 1)]
    assert covered == list(range(7, 16))
    assert joined(resumed_chunks) == "".join(f"t{i} " for i in range(6, 15))


async def test_resume_beyond_retention_reports_expired_chunks() -> None:
    stream = ChunkStream("s", retain=5)
    for event in texts(30):
        stream.publish(event)
    stream.close()
    chunks = [c async for c in stream.subscribe(after_seq=2)]
    assert isinstance(chunks[0].event, StreamGap)
    assert chunks[0].event.reason == "expired"
    assert chunks[0].event.from_seq == 3
    assert chunks[-1].last_seq == 30
    assert chunks[1].seq == chunks[0].event.to_seq + 1


async def test_unknown_stream() -> None:
    gen = StreamGenerator()
    with pytest.raises(StreamNotFoundError):
        gen.subscribe("missing")


async def test_consumer_close_detaches() -> None:
    stream = ChunkStream("s")
    consumer = stream.subscribe()
    assert stream.consumers == 1
    consumer.close()
    assert stream.consumers == 0
    stream.publish(TextDelta(text="x"))  # no consumer, no error
    assert [c async for c in consumer] == []
