"""StreamGenerator: a run's events as numbered chunks for any number of consumers.

A :class:`ChunkStream` numbers every event it is given (from 1) and keeps the most recent ones
(``retain``). Each consumer reads through its own :class:`AsyncQueue`, so a slow consumer never
slows the producer or the others. When a consumer's queue is full its policy decides:

* ``wait``: it stops receiving live chunks and later catches up from the retained chunks,
  with consecutive text deltas coalesced into one chunk; nothing is lost while retained.
* ``drop``: chunks that do not fit are dropped and a ``gap`` chunk says which.
* ``disconnect``: it is disconnected with :class:`SlowConsumerError` after draining its queue.

A consumer that joins late, or reconnects, passes ``after_seq`` (the last chunk number it has)
and receives every later chunk, without gap or duplicate while they are retained.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterable
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel

from agent_template.core.async_queue import AsyncQueue
from agent_template.errors import QueueClosedError, SlowConsumerError, StreamNotFoundError
from agent_template.models import StreamEnded, StreamGap, StreamStarted, Task, TextDelta

__all__ = ["Chunk", "ChunkStream", "ConsumerPolicy", "StreamConsumer", "StreamGenerator"]

ConsumerPolicy: TypeAlias = Literal["wait", "drop", "disconnect"]
DEFAULT_RETAIN = 10_000  # chunks kept per stream for late joiners and reconnects
DEFAULT_QUEUE_SIZE = 1024  # chunks buffered per consumer before its policy applies
DEFAULT_LINGER_S = 300.0  # a finished stream stays resumable this long


class Chunk:
    """One numbered event of a stream; ``last_seq`` > ``seq`` when deltas were coalesced."""

    __slots__ = ("_json", "event", "last_seq", "seq", "stream_id")

    def __init__(self, stream_id: str, seq: int, event: BaseModel, last_seq: int = 0) -> None:
        self.stream_id = stream_id
        self.seq = seq
        self.last_seq = last_seq or seq
        self.event = event
        self._json: bytes | None = None

    @property
    def type(self) -> str:
        return self.event.type  # type: ignore[attr-defined, no-any-return]

    @property
    def content(self) -> str:
        """The text of a text delta; empty for every other kind of chunk."""
        event = self.event
        return event.text if type(event) is TextDelta else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "seq": self.seq,
            "last_seq": self.last_seq,
            "type": self.type,
            "data": self.event.model_dump(mode="json"),
        }

    def to_json(self) -> bytes:
        """The chunk as JSON, serialised once however many consumers send it."""
        if self._json is None:
            self._json = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        return self._json

    def __repr__(self) -> str:
        span = f"{self.seq}" if self.last_seq == self.seq else f"{self.seq}-{self.last_seq}"
        return f"Chunk({self.stream_id!r}, {span}, {self.type})"


class StreamConsumer:
    """One reader of a :class:`ChunkStream`; iterate it for chunks. Close it when done."""

    __slots__ = (
        "_error",
        "_gap_from",
        "_stream",
        "coalesced",
        "cursor",
        "dropped",
        "lagging",
        "last_delivered",
        "policy",
        "queue",
    )

    def __init__(self, stream: ChunkStream, cursor: int, policy: ConsumerPolicy, size: int) -> None:
        self._stream = stream
        self.policy = policy
        self.queue: AsyncQueue[Chunk] = AsyncQueue(
            size, strategy="drop_newest", name=f"stream {stream.stream_id}"
        )
        self.cursor = cursor  # number of the next chunk this consumer should receive
        self.last_delivered = cursor - 1
        self.lagging = cursor < stream.next_seq
        self.dropped = 0
        self.coalesced = 0
        self._gap_from: int | None = None
        self._error: SlowConsumerError | None = None

    # producer side: called for every chunk, so it stays small
    def _offer(self, chunk: Chunk) -> None:
        if self.lagging:
            return
        queue = self.queue
        if self._gap_from is None and queue.put_nowait(chunk):
            self.cursor = chunk.seq + 1
            return
        if self.policy == "wait":
            self.lagging = True
        elif self.policy == "drop":
            self.dropped += 1
            self._stream.dropped += 1
            if self._gap_from is None:
                self._gap_from = chunk.seq
            self.cursor = chunk.seq + 1
        else:
            self._error = SlowConsumerError(self._stream.stream_id, queue.qsize())
            self._stream._detach(self)
            queue.close()

    def _stream_closed(self) -> None:
        if not self.lagging and self._gap_from is None:
            self.queue.close()

    def _refill(self) -> None:
        """Catch up from the retained chunks (reader side, only when the queue is empty)."""
        stream, queue = self._stream, self.queue
        if self._gap_from is not None:
            gap = StreamGap(from_seq=self._gap_from, to_seq=self.cursor - 1, reason="dropped")
            queue.put_nowait(Chunk(stream.stream_id, self._gap_from, gap, self.cursor - 1))
            self._gap_from = None
        elif self.lagging:
            base = stream.base_seq
            if self.cursor < base:
                gap = StreamGap(from_seq=self.cursor, to_seq=base - 1, reason="expired")
                queue.put_nowait(Chunk(stream.stream_id, self.cursor, gap, base - 1))
                self.cursor = base
            log, end, room = stream._log, stream.next_seq, queue.maxsize - queue.qsize()
            i = self.cursor - base
            while i < len(log) and room > 0:
                chunk = log[i]
                j = i + 1
                if type(chunk.event) is TextDelta:
                    while j < len(log) and type(log[j].event) is TextDelta:
                        j += 1
                if j - i > 1:  # behind: merge the run of text deltas into one chunk
                    text = "".join(c.event.text for c in log[i:j])  # type: ignore[attr-defined]
                    chunk = Chunk(stream.stream_id, chunk.seq, TextDelta(text=text), log[j - 1].seq)
                    self.coalesced += j - i - 1
                    stream.coalesced += j - i - 1
                queue.put_nowait(chunk)
                room -= 1
                i = j
            self.cursor = base + i
            self.lagging = self.cursor < end
        if stream.closed and not self.lagging:
            queue.close()

    def __aiter__(self) -> StreamConsumer:
        return self

    async def __anext__(self) -> Chunk:
        queue = self.queue
        if queue.qsize():  # the common case under load: no coroutine, no suspension
            chunk = queue.get_nowait()
            self.last_delivered = chunk.last_seq
            return chunk
        if self.lagging or self._gap_from is not None:
            self._refill()
        try:
            chunk = await queue.get()
        except QueueClosedError:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        self.last_delivered = chunk.last_seq
        return chunk

    def close(self) -> None:
        self._stream._detach(self)
        self.queue.close()

    async def __aenter__(self) -> StreamConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ChunkStream:
    """A numbered, retained, multi-consumer stream of events."""

    def __init__(
        self,
        stream_id: str,
        *,
        retain: int = DEFAULT_RETAIN,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        policy: ConsumerPolicy = "wait",
    ) -> None:
        self.stream_id = stream_id
        self.retain = max(1, retain)
        self.queue_size = queue_size
        self.policy: ConsumerPolicy = policy
        self.next_seq = 1
        self.base_seq = 1  # number of the oldest retained chunk
        self.closed = False
        self.closed_at: float | None = None
        self.dropped = 0  # chunks dropped for slow consumers (policy "drop"), all consumers
        self.coalesced = 0  # text deltas merged for consumers catching up
        self._log: list[Chunk] = []
        self._consumers: list[StreamConsumer] = []
        self._closed_event: asyncio.Event | None = None

    def publish(self, event: BaseModel) -> Chunk:
        """Number ``event``, retain it and offer it to every consumer."""
        if self.closed:
            raise QueueClosedError(f"stream {self.stream_id}")
        chunk = Chunk(self.stream_id, self.next_seq, event)
        self.next_seq += 1
        log = self._log
        log.append(chunk)
        if len(log) >= 2 * self.retain:  # trim in halves: amortised O(1) per chunk
            cut = len(log) - self.retain
            del log[:cut]
            self.base_seq += cut
        for consumer in self._consumers:
            consumer._offer(chunk)
        return chunk

    def close(self) -> None:
        """No more chunks; consumers drain what they have, then stop."""
        if self.closed:
            return
        self.closed = True
        self.closed_at = time.monotonic()
        for consumer in list(self._consumers):
            consumer._stream_closed()
        if self._closed_event is not None:
            self._closed_event.set()

    async def wait_closed(self) -> None:
        if not self.closed:
            if self._closed_event is None:
                self._closed_event = asyncio.Event()
            await self._closed_event.wait()

    def subscribe(
        self,
        *,
        after_seq: int | None = None,
        policy: ConsumerPolicy | None = None,
        queue_size: int | None = None,
    ) -> StreamConsumer:
        """A new consumer receiving every chunk after ``after_seq`` (default: all retained)."""
        cursor = self.base_seq if after_seq is None else max(after_seq + 1, 1)
        consumer = StreamConsumer(
            self, min(cursor, self.next_seq), policy or self.policy, queue_size or self.queue_size
        )
        if self.closed:
            consumer._refill()
        else:
            self._consumers.append(consumer)
        return consumer

    def _detach(self, consumer: StreamConsumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    @property
    def consumers(self) -> int:
        return len(self._consumers)

    def stats(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "chunks": self.next_seq - 1,
            "retained": len(self._log),
            "consumers": len(self._consumers),
            "closed": self.closed,
            "dropped": self.dropped,
            "coalesced": self.coalesced,
        }


class StreamGenerator:
    """Streams by id: create them, feed them from a source, and serve consumers.

    Args:
        retain: chunks kept per stream for late joiners and reconnects.
        queue_size: per-consumer queue size before the consumer's policy applies.
        policy: the default consumer policy.
        linger_s: how long a finished stream stays available for resumes.
        bus: where stream start and end events go (any object with ``publish``).
    """

    def __init__(
        self,
        *,
        retain: int = DEFAULT_RETAIN,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        policy: ConsumerPolicy = "wait",
        linger_s: float = DEFAULT_LINGER_S,
        bus: Any = None,
    ) -> None:
        self.retain = retain
        self.queue_size = queue_size
        self.policy: ConsumerPolicy = policy
        self.linger_s = linger_s
        self.bus = bus
        self._streams: dict[str, ChunkStream] = {}
        self._pumps: set[asyncio.Task[None]] = set()

    def _expire(self) -> None:
        now = time.monotonic()
        stale = [
            sid
            for sid, s in self._streams.items()
            if s.closed_at is not None and now - s.closed_at > self.linger_s and not s.consumers
        ]
        for sid in stale:
            del self._streams[sid]

    def create_stream(self, stream_id: str | None = None) -> ChunkStream:
        self._expire()
        stream_id = stream_id or uuid.uuid4().hex
        stream = ChunkStream(
            stream_id, retain=self.retain, queue_size=self.queue_size, policy=self.policy
        )
        self._streams[stream_id] = stream
        return stream

    def attach(self, stream_id: str, stream: ChunkStream) -> ChunkStream:
        """Serve an existing stream (for example a task's) under ``stream_id`` too."""
        self._expire()
        self._streams[stream_id] = stream
        return stream

    def get_stream(self, stream_id: str) -> ChunkStream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise StreamNotFoundError(stream_id) from None

    def start(self, stream_id: str, source: AsyncIterable[BaseModel]) -> ChunkStream:
        """Create a stream and feed it from ``source`` in a background task."""
        stream = self.create_stream(stream_id)
        task = asyncio.create_task(self._pump(stream, source), name=f"stream {stream_id}")
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return stream

    async def _pump(self, stream: ChunkStream, source: AsyncIterable[BaseModel]) -> None:
        bus = self.bus
        if bus is not None:
            bus.publish(StreamStarted(stream_id=stream.stream_id))
        try:
            async for event in source:
                stream.publish(event)
        finally:
            stream.close()
            if bus is not None:
                bus.publish(StreamEnded(stream_id=stream.stream_id, chunks=stream.next_seq - 1))

    def _resolve(self, stream_id: str, source: object) -> ChunkStream:
        if source is None:
            return self.get_stream(stream_id)
        if isinstance(source, ChunkStream):
            return self.attach(stream_id, source)
        if isinstance(source, Task):
            task_stream = source.stream
            if not isinstance(task_stream, ChunkStream):
                raise StreamNotFoundError(stream_id)
            return self.attach(stream_id, task_stream)
        existing = self._streams.get(stream_id)
        if existing is not None:
            return existing
        return self.start(stream_id, source)  # type: ignore[arg-type]

    def process_stream(
        self,
        stream_id: str,
        source: Task | ChunkStream | AsyncIterable[BaseModel] | None = None,
        *,
        after_seq: int | None = None,
        policy: ConsumerPolicy | None = None,
    ) -> StreamConsumer:
        """The chunks of ``stream_id``, to iterate with ``async for`` until the stream ends.

        ``source`` is a task made by ``AgentLoop.create_task`` (its run's events), a
        :class:`ChunkStream`, any async iterable of events (fed in the background), or None
        to join a stream that already exists. Close the returned consumer to leave early.
        """
        return self._resolve(stream_id, source).subscribe(after_seq=after_seq, policy=policy)

    def subscribe(
        self,
        stream_id: str,
        *,
        after_seq: int | None = None,
        policy: ConsumerPolicy | None = None,
        queue_size: int | None = None,
    ) -> StreamConsumer:
        return self.get_stream(stream_id).subscribe(
            after_seq=after_seq, policy=policy, queue_size=queue_size
        )

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self._streams),
            "open": sum(1 for s in self._streams.values() if not s.closed),
            "consumers": sum(s.consumers for s in self._streams.values()),
        }

    async def aclose(self) -> None:
        for task in list(self._pumps):
            task.cancel()
        if self._pumps:
            await asyncio.wait(self._pumps)
        for stream in self._streams.values():
            stream.close()
