"""StreamGenerator: a stream fed from any async iterable, its outcome, and the defaults.

What every stream store must do (numbering, policies, resume, retention, release) is pinned by
the contract suite in test_stream_store.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator

import pytest

from agent_template import StreamGenerator
from agent_template.core.stream_gen import CHUNK_OVERHEAD_BYTES, ChunkStream
from agent_template.core.stream_store import MemoryStreamStore
from agent_template.errors import StreamNotFoundError
from agent_template.models import DoneEvent, ErrorEvent, TextDelta, stream_event_adapter


def texts(n: int) -> list[TextDelta]:
    return [TextDelta(text=f"t{i} ") for i in range(n)]


async def source(n: int) -> AsyncIterator[TextDelta | DoneEvent]:
    for event in texts(n):
        yield event
        await asyncio.sleep(0)
    yield DoneEvent(status="completed", output="")


async def test_an_async_iterable_becomes_a_numbered_stream() -> None:
    gen = StreamGenerator()
    chunks = [c async for c in gen.process_stream("s1", source(50))]
    assert [c.seq for c in chunks] == list(range(1, 52))
    assert "".join(c.content for c in chunks) == "".join(f"t{i} " for i in range(50))
    assert chunks[-1].type == "done"
    wire = stream_event_adapter.validate_python(json.loads(chunks[0].to_json())["data"])
    assert isinstance(wire, TextDelta)
    rejoined = [c async for c in gen.process_stream("s1", after_seq=49)]  # same id: joins it
    assert [c.seq for c in rejoined] == [50, 51]


async def test_a_failing_producer_ends_the_stream_with_an_error_not_a_normal_end() -> None:
    async def broken() -> AsyncIterator[TextDelta]:
        yield TextDelta(text="partial ")
        raise RuntimeError("the source broke")

    gen = StreamGenerator(MemoryStreamStore())
    chunks = [c async for c in gen.process_stream("s", broken())]
    assert [c.type for c in chunks] == ["text_delta", "error", "done"]
    error = chunks[1].event
    assert isinstance(error, ErrorEvent)
    assert "the source broke" in error.message
    assert isinstance(chunks[2].event, DoneEvent) and chunks[2].event.status == "failed"


async def test_a_cancelled_producer_says_so() -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[TextDelta]:
        while True:
            yield TextDelta(text="x")
            started.set()
            await asyncio.sleep(0.01)

    gen = StreamGenerator(MemoryStreamStore())
    consumer = gen.process_stream("s", endless())
    await started.wait()
    await gen.aclose()
    chunks = [c async for c in consumer]
    assert chunks[-1].type == "done"
    assert chunks[-1].event.status == "cancelled"


async def test_unknown_stream() -> None:
    gen = StreamGenerator()
    with pytest.raises(StreamNotFoundError):
        gen.subscribe("missing")


async def test_options_give_a_generator_its_own_store() -> None:
    shared = StreamGenerator()
    assert StreamGenerator().store is shared.store  # what AgentLoop() uses too
    own = StreamGenerator(retain=5)
    assert own.store is not shared.store


async def test_a_long_answer_read_live_is_kept_compactly() -> None:
    """Deltas every reader has had are folded: a few objects per run of text, not three per
    delta, so retention costs little memory and the garbage collector little time."""
    stream = ChunkStream("s")
    reader = stream.subscribe()
    got = []
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5000):
        stream.publish(TextDelta(text=f"t{i} "))
        if i % 8 == 7:
            while reader.pending:
                got.append((await reader.__anext__()).seq)
    gc.collect()
    assert len(gc.get_objects()) - before < 1000
    assert got == list(range(1, 5001))  # the live reader had each delta on its own
    assert stream.retained == 5000
    assert stream.retained_bytes < 5000 * CHUNK_OVERHEAD_BYTES // 4
    stream.close()
    resumed = [c async for c in stream.subscribe(after_seq=2500)]
    assert "".join(c.content for c in resumed) == "".join(f"t{i} " for i in range(2500, 5000))
