"""Numbered chunk streams: a run's events for any number of consumers.

A :class:`ChunkStream` numbers every event it is given (from 1) and keeps the most recent ones,
bounded by count (``retain``, give or take an eighth) and by an estimate of their size in memory
(``retain_bytes``).
Each consumer reads through its own :class:`AsyncQueue`, so a slow consumer never slows the
producer or the others. When a consumer's queue is full its policy decides:

* ``wait``: it stops receiving live chunks and later catches up from the retained chunks,
  with consecutive text deltas coalesced into one chunk; nothing is lost while retained.
* ``drop``: chunks that do not fit are dropped and a ``gap`` chunk says which.
* ``disconnect``: it is disconnected with :class:`SlowConsumerError` after draining its queue.

A consumer that joins late, or reconnects, passes ``after_seq`` (the last chunk number it has)
and receives every later chunk, without gap or duplicate while they are retained; a ``gap``
chunk with reason ``expired`` says which chunks were no longer retained.

Streams live in a :class:`~agent_template.core.stream_store.StreamStore`, which also decides
when a finished stream is released. :class:`StreamGenerator` is the front door: it serves a
task's stream, or feeds a new stream from any async iterable of events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel

from agent_template.core.async_queue import AsyncQueue
from agent_template.errors import QueueClosedError, SlowConsumerError
from agent_template.models import (
    DoneEvent,
    ErrorEvent,
    RunStatus,
    StreamEnded,
    StreamGap,
    StreamStarted,
    Task,
    TextDelta,
)

if TYPE_CHECKING:
    from agent_template.core.stream_store import StreamStore

__all__ = [
    "Chunk",
    "ChunkStream",
    "ConsumerPolicy",
    "StreamConsumer",
    "StreamGenerator",
    "StreamInfo",
    "event_size",
]

ConsumerPolicy: TypeAlias = Literal["wait", "drop", "disconnect"]
DEFAULT_RETAIN = 10_000  # chunks kept per stream for late joiners and reconnects
DEFAULT_RETAIN_BYTES = 4 * 1024 * 1024  # and at most about this much memory per stream
DEFAULT_QUEUE_SIZE = 1024  # chunks buffered per consumer before its policy applies
# Measured: a retained one-token text chunk costs about 560 bytes besides its text (the
# Chunk, the pydantic event with its field set, list slots). Sizes are estimates from this.
CHUNK_OVERHEAD_BYTES = 560


def event_size(event: BaseModel) -> int:
    """Estimated bytes a retained chunk of ``event`` holds in memory.

    A fixed overhead plus the text it carries, looked for in its fields and theirs (deltas,
    tool results, finished messages): cheap enough for every chunk, as serialising is not.
    """
    if type(event) is TextDelta:
        return CHUNK_OVERHEAD_BYTES + len(event.text)
    size = CHUNK_OVERHEAD_BYTES
    for value in event.__dict__.values():
        if type(value) is str:
            size += len(value)
        elif isinstance(value, BaseModel):
            for inner in value.__dict__.values():
                kind = type(inner)
                if kind is str:
                    size += len(inner)
                elif kind is list:
                    size += _LIST_ITEM_BYTES * len(inner)
                else:
                    size += _SMALL_OBJECT_BYTES
        else:
            size += _SMALL_OBJECT_BYTES
    return size


_SMALL_OBJECT_BYTES = 48  # an int, a float or an empty object, roughly
_LIST_ITEM_BYTES = 256  # a tool call or a content part, roughly


@dataclass(slots=True)
class StreamInfo:
    """Whose stream it is: the owner and the task and session it belongs to."""

    stream_id: str
    user_id: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    parent_id: str | None = None
    created_at: float = field(default_factory=time.time)


class Chunk:
    """One numbered event of a stream; ``last_seq`` > ``seq`` when deltas were coalesced."""

    # Kept small: a stream retains thousands of these.
    __slots__ = ("_json", "event", "info", "last_seq", "seq", "wire")

    def __init__(self, info: StreamInfo, seq: int, event: BaseModel, last_seq: int = 0) -> None:
        self.info = info
        self.seq = seq
        self.last_seq = last_seq or seq
        self.event = event
        self._json: bytes | None = None
        # A transport's encoding of this chunk (the server's frame), made once and shared by
        # every connection that sends it.
        self.wire: bytes | None = None

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    @property
    def task_id(self) -> str | None:
        return self.info.task_id

    @property
    def type(self) -> str:
        return self.event.type  # type: ignore[attr-defined, no-any-return]

    @property
    def content(self) -> str:
        """The text of a text delta; empty for every other kind of chunk."""
        event = self.event
        return event.text if type(event) is TextDelta else ""

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        return {
            "stream_id": info.stream_id,
            "seq": self.seq,
            "last_seq": self.last_seq,
            "type": self.type,
            "task_id": info.task_id,
            "session_id": info.session_id,
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
    """One reader of a :class:`ChunkStream`; iterate it for chunks. Close it when done.

    A consumer that has read to the end, or is closed, no longer counts as a reader of its
    stream, so the store may release the stream once it stops lingering.
    """

    __slots__ = (
        "_error",
        "_gap_from",
        "_reading",
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
        self._reading = True

    @property
    def stream(self) -> ChunkStream:
        return self._stream

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
        info = stream.info
        if self._gap_from is not None:
            gap = StreamGap(from_seq=self._gap_from, to_seq=self.cursor - 1, reason="dropped")
            queue.put_nowait(Chunk(info, self._gap_from, gap, self.cursor - 1))
            self._gap_from = None
        elif self.lagging:
            base = stream.base_seq
            if self.cursor < base:
                gap = StreamGap(from_seq=self.cursor, to_seq=base - 1, reason="expired")
                queue.put_nowait(Chunk(info, self.cursor, gap, base - 1))
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
                    chunk = Chunk(info, chunk.seq, TextDelta(text=text), log[j - 1].seq)
                    self.coalesced += j - i - 1
                    stream.coalesced += j - i - 1
                queue.put_nowait(chunk)
                room -= 1
                i = j
            self.cursor = base + i
            self.lagging = self.cursor < end
        if stream.closed and not self.lagging:
            queue.close()

    def _finished(self) -> None:
        if self._reading:
            self._reading = False
            self._stream._reader_left(self)

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
            self._finished()
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        self.last_delivered = chunk.last_seq
        return chunk

    def close(self) -> None:
        """Stop reading; safe to call more than once."""
        self._stream._detach(self)
        self.queue.close()
        self._finished()

    async def __aenter__(self) -> StreamConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ChunkStream:
    """A numbered, retained, multi-consumer stream of events (one producer).

    Args:
        stream_id: the stream's id (a task's stream has the task's id).
        retain: chunks kept for late readers (up to an eighth more between trims).
        retain_bytes: the most memory (estimated) the kept chunks may take.
        queue_size: per-consumer queue size before the consumer's policy applies.
        policy: the default consumer policy.
        info: who owns the stream; a bare :class:`StreamInfo` when omitted.
        on_close: called once with the stream when it closes (the store's bookkeeping).
    """

    def __init__(
        self,
        stream_id: str,
        *,
        retain: int = DEFAULT_RETAIN,
        retain_bytes: int = DEFAULT_RETAIN_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        policy: ConsumerPolicy = "wait",
        info: StreamInfo | None = None,
        on_close: Callable[[ChunkStream], None] | None = None,
    ) -> None:
        self.info = info or StreamInfo(stream_id)
        self.retain = max(1, retain)
        # Trimming an eighth at a time keeps it amortised O(1) per chunk, at the cost of
        # retaining up to that many chunks more than ``retain`` in between.
        self._trim_at = self.retain + max(1, self.retain // 8)
        self.retain_bytes = max(CHUNK_OVERHEAD_BYTES, retain_bytes)
        self.queue_size = queue_size
        self.policy: ConsumerPolicy = policy
        self.next_seq = 1
        self.base_seq = 1  # number of the oldest retained chunk
        self.retained_bytes = 0
        self.closed = False
        self.closed_at: float | None = None
        self.dropped = 0  # chunks dropped for slow consumers (policy "drop"), all consumers
        self.coalesced = 0  # text deltas merged for consumers catching up
        self.readers = 0  # consumers that have not read to the end or closed
        self.on_idle: Callable[[ChunkStream], None] | None = None  # the last reader left
        self._log: list[Chunk] = []
        # A tuple, replaced on change, so a consumer that leaves during publish (policy
        # "disconnect") cannot make the loop skip the next consumer.
        self._consumers: tuple[StreamConsumer, ...] = ()
        self._closed_event: asyncio.Event | None = None
        self._on_close = on_close

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    def publish(self, event: BaseModel) -> Chunk:
        """Number ``event``, retain it and offer it to every consumer."""
        if self.closed:
            raise QueueClosedError(f"stream {self.stream_id}")
        chunk = Chunk(self.info, self.next_seq, event)
        self.next_seq += 1
        log = self._log
        log.append(chunk)
        if type(event) is TextDelta:  # the hot path: one token
            self.retained_bytes += CHUNK_OVERHEAD_BYTES + len(event.text)
        else:
            self.retained_bytes += event_size(event)
        if len(log) > self._trim_at or self.retained_bytes > self.retain_bytes:
            self._trim()
        for consumer in self._consumers:
            consumer._offer(chunk)
        return chunk

    def _trim(self) -> None:
        """Drop the oldest chunks: down to ``retain`` chunks and 3/4 of ``retain_bytes``."""
        log = self._log
        cut = max(0, len(log) - self.retain)
        freed = sum(event_size(c.event) for c in log[:cut])
        target = self.retain_bytes * 3 // 4
        while cut < len(log) - 1 and self.retained_bytes - freed > target:
            freed += event_size(log[cut].event)
            cut += 1
        if cut:
            del log[:cut]
            self.base_seq += cut
            self.retained_bytes -= freed

    def close(self) -> None:
        """No more chunks; consumers drain what they have, then stop."""
        if self.closed:
            return
        self.closed = True
        self.closed_at = time.monotonic()
        consumers, self._consumers = self._consumers, ()
        for consumer in consumers:
            consumer._stream_closed()
        if self._closed_event is not None:
            self._closed_event.set()
        if self._on_close is not None:
            self._on_close(self)

    def end(self, status: RunStatus | DoneEvent, *, error: ErrorEvent | None = None) -> None:
        """Publish the outcome (an error, then a ``done`` chunk with ``status``) and close."""
        if self.closed:
            return
        if error is not None:
            self.publish(error)
        self.publish(status if isinstance(status, DoneEvent) else DoneEvent(status=status))
        self.close()

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
        self.readers += 1
        if self.closed:
            consumer._refill()
        else:
            self._consumers = (*self._consumers, consumer)
        return consumer

    def _detach(self, consumer: StreamConsumer) -> None:
        if consumer in self._consumers:
            self._consumers = tuple(c for c in self._consumers if c is not consumer)

    def _reader_left(self, consumer: StreamConsumer) -> None:
        self._detach(consumer)
        self.readers -= 1
        if not self.readers and self.closed and self.on_idle is not None:
            self.on_idle(self)

    @property
    def consumers(self) -> int:
        """Consumers receiving live chunks now."""
        return len(self._consumers)

    @property
    def retained(self) -> int:
        return len(self._log)

    def stats(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "chunks": self.next_seq - 1,
            "retained": len(self._log),
            "retained_bytes": self.retained_bytes,
            "consumers": len(self._consumers),
            "readers": self.readers,
            "closed": self.closed,
            "dropped": self.dropped,
            "coalesced": self.coalesced,
        }


class StreamGenerator:
    """Streams by id, for consumers: a task's stream, or one fed from any async iterable.

    Args:
        store: where streams live. Without one, the process's default store (the one a
            no-argument ``AgentLoop()`` uses, so ``process_stream(id, task)`` finds its tasks)
            when no other option is given, else a store of its own built from them.
        retain, retain_bytes, queue_size, policy, linger_s: options of that own store.
        bus: where stream start and end events go (any object with ``publish``).
    """

    def __init__(
        self,
        store: StreamStore | None = None,
        *,
        retain: int | None = None,
        retain_bytes: int | None = None,
        queue_size: int | None = None,
        policy: ConsumerPolicy | None = None,
        linger_s: float | None = None,
        bus: Any = None,
    ) -> None:
        from agent_template.core.stream_store import (
            DEFAULT_LINGER_S,
            MemoryStreamStore,
            default_stream_store,
        )

        options = (retain, retain_bytes, queue_size, policy, linger_s)
        if store is None and all(option is None for option in options):
            store = default_stream_store()
        elif store is None:
            store = MemoryStreamStore(
                retain=DEFAULT_RETAIN if retain is None else retain,
                retain_bytes=DEFAULT_RETAIN_BYTES if retain_bytes is None else retain_bytes,
                queue_size=DEFAULT_QUEUE_SIZE if queue_size is None else queue_size,
                policy=policy or "wait",
                linger_s=DEFAULT_LINGER_S if linger_s is None else linger_s,
            )
        self.store: StreamStore = store
        self.bus = bus
        self._pumps: set[asyncio.Task[None]] = set()

    def create_stream(self, stream_id: str | None = None, **owner: Any) -> ChunkStream:
        """A new stream in the store (``owner``: user_id, session_id, task_id, parent_id)."""
        return self.store.create(stream_id, **owner)

    def get_stream(self, stream_id: str, *, user_id: str | None = None) -> ChunkStream:
        """Raises StreamNotFoundError (also for another user's stream)."""
        return self.store.get(stream_id, user_id=user_id)

    def start(self, stream_id: str | None, source: AsyncIterable[BaseModel]) -> ChunkStream:
        """Create a stream and feed it from ``source`` in a background task.

        A source that raises ends the stream with an ``error`` chunk and a ``done`` chunk with
        status ``failed``; one that is cancelled, with ``done`` status ``cancelled``.
        """
        stream = self.store.create(stream_id)
        task = asyncio.create_task(self._pump(stream, source), name=f"stream {stream.stream_id}")
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
        except asyncio.CancelledError:
            stream.end("cancelled")
            raise
        except Exception as exc:  # the consumers hear of it; it is theirs to report
            code = getattr(exc, "code", "stream_source_failed")
            message = str(exc) or type(exc).__name__
            stream.end("failed", error=ErrorEvent(code=code, message=message))
        finally:
            stream.close()
            if bus is not None:
                bus.publish(StreamEnded(stream_id=stream.stream_id, chunks=stream.next_seq - 1))

    def _resolve(self, stream_id: str, source: object) -> ChunkStream:
        store = self.store
        if source is None:
            return store.get(stream_id)
        if isinstance(source, Task):
            stream = store.get(source.task_id)
            if stream_id != source.task_id:
                store.alias(stream_id, source.task_id)
            return stream
        if isinstance(source, ChunkStream):
            store.attach(stream_id, source)
            return source
        if stream_id in store:
            return store.get(stream_id)
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

        ``source`` is a task made by ``AgentLoop.create_task`` (its run's events, served under
        ``stream_id`` too), a :class:`ChunkStream`, any async iterable of events (fed in the
        background), or None to join a stream that already exists. Close the returned
        consumer to leave early.

        Raises:
            StreamNotFoundError: no such stream (or it was released).
        """
        return self._resolve(stream_id, source).subscribe(after_seq=after_seq, policy=policy)

    def subscribe(
        self,
        stream_id: str,
        *,
        after_seq: int | None = None,
        policy: ConsumerPolicy | None = None,
        queue_size: int | None = None,
        user_id: str | None = None,
    ) -> StreamConsumer:
        return self.store.subscribe(
            stream_id, after_seq=after_seq, policy=policy, queue_size=queue_size, user_id=user_id
        )

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    async def aclose(self) -> None:
        for task in list(self._pumps):
            task.cancel()
        if self._pumps:
            await asyncio.wait(self._pumps)
