"""Numbered chunk streams: a run's events for any number of consumers.

A :class:`ChunkStream` numbers every event it is given (from 1) and keeps the most recent ones,
bounded by count (``retain``, give or take an eighth) and by an estimate of their size in memory
(``retain_bytes``).
Each consumer reads the kept chunks through its own cursor: publishing appends one chunk and
wakes the consumers that wait, whatever their number, so a slow consumer never slows the
producer or the others. A consumer that falls more than ``queue_size`` chunks behind is dealt
with by its policy:

* ``wait``: it catches up from the retained chunks, with consecutive text deltas coalesced
  into one chunk; nothing is lost while retained.
* ``drop``: it receives the ``queue_size`` chunks after its place, then a ``gap`` chunk for
  those that came while it was that far behind, and goes on from the newest.
* ``disconnect``: it receives those ``queue_size`` chunks, then :class:`SlowConsumerError`.

A consumer that joins late, or reconnects, passes ``after_seq`` (the last chunk number it has)
and receives every later chunk, without gap or duplicate while they are retained (catching up
coalesced, as above); a ``gap`` chunk with reason ``expired`` says which chunks were no longer
retained.

Once every consumer has read past them, runs of text deltas are folded into one retained chunk
each (with where each delta's text ends, so a reader can still resume after any of them): a
long answer is kept as a few objects rather than a chunk and an event per delta, which saves
memory and spares the garbage collector from walking them again and again.

Streams live in a :class:`~agent_template.core.stream_store.StreamStore`, which also decides
when a finished stream is released. :class:`StreamGenerator` is the front door: it serves a
task's stream, or feeds a new stream from any async iterable of events.
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from itertools import accumulate, groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel

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
DEFAULT_RETAIN = 10_000  # chunk numbers kept per stream for late joiners and reconnects
DEFAULT_RETAIN_BYTES = 4 * 1024 * 1024  # and at most about this much memory per stream
DEFAULT_QUEUE_SIZE = 1024  # chunks a consumer may fall behind before its policy applies
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


def _kind(event: BaseModel) -> str:
    """An event's ``type`` (every stream event has one; a bare model goes by its class name)."""
    kind = getattr(event, "type", None)
    return kind if isinstance(kind, str) else type(event).__name__


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
    __slots__ = ("_json", "event", "info", "last_seq", "seq", "type", "wire")

    def __init__(self, info: StreamInfo, seq: int, event: BaseModel, last_seq: int = 0) -> None:
        self.info = info
        self.seq = seq
        self.last_seq = last_seq or seq
        self.event = event
        self.type: str = _kind(event)  # the event's type, read by every consumer
        self._json: bytes | None = None
        # A transport's encoding of this chunk (the server's frame), made once and shared by
        # every connection that sends it.
        self.wire: str | None = None

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    @property
    def task_id(self) -> str | None:
        return self.info.task_id

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


_SPAN_ITEM_BYTES = 4  # what a folded delta still costs besides its text: its end offset
_FOLD_EVERY = 64  # single chunks published between two tries to fold
_FOLD_MIN = 32  # the fewest chunks worth folding
_SEQ = attrgetter("seq")
_KIND = attrgetter("type")
_TEXT = attrgetter("event.text")


def _text(chunk: Chunk) -> str:
    return chunk.event.text  # type: ignore[attr-defined, no-any-return]


class _Span(Chunk):
    """Text deltas folded into one retained chunk (``seq`` to ``last_seq``), with where each
    delta's text ends in the joined text, so that a reader can start at any of them."""

    __slots__ = ("ends",)

    def __init__(self, info: StreamInfo, seq: int, text: str, ends: array[int]) -> None:
        super().__init__(info, seq, TextDelta(text=text), seq + len(ends) - 1)
        self.ends = ends

    def since(self, seq: int) -> Chunk:
        """This span from chunk number ``seq`` (within it) on."""
        k = seq - self.seq
        if k <= 0:
            return self
        start = self.ends[k - 1]
        rest = array("I", [end - start for end in self.ends[k:]])
        return _Span(self.info, seq, _text(self)[start:], rest)


def _entry_size(chunk: Chunk) -> int:
    """Estimated bytes a retained chunk holds (a span: its text and an offset per delta)."""
    return event_size(chunk.event) + _SPAN_ITEM_BYTES * (chunk.last_seq - chunk.seq)


class StreamConsumer:
    """One reader of a :class:`ChunkStream`; iterate it for chunks. Close it when done.

    It reads the stream's retained chunks through its own cursor, so publishing costs the
    producer nothing per consumer and a consumer that falls behind holds up nobody. More than
    ``queue_size`` chunks behind, its policy applies (see the module docstring). Chunks it has
    yet to read that the stream is about to trim are kept for it, up to ``queue_size`` past its
    cursor (what a queue of that size would have held), so trimming never takes them silently.

    A consumer that has read to the end, or is closed, no longer counts as a reader of its
    stream, so the store may release the stream once it stops lingering.
    """

    __slots__ = (
        "_closed",
        "_counted",
        "_error",
        "_held",
        "_mark",
        "_plain",
        "_reading",
        "_size",
        "_stream",
        "_waiter",
        "coalesced",
        "cursor",
        "dropped",
        "lagging",
        "policy",
    )

    def __init__(self, stream: ChunkStream, cursor: int, policy: ConsumerPolicy, size: int) -> None:
        self._stream = stream
        self.policy = policy
        self._size = max(1, size)
        self.cursor = cursor  # number of the next chunk this consumer receives
        # Catching up from the retained chunks (it joined behind, or fell behind with policy
        # "wait"): runs of text deltas come coalesced until it is level with the stream.
        self.lagging = cursor < stream.next_seq
        self.dropped = 0
        self.coalesced = 0
        self._held: deque[Chunk] = deque()  # kept from trimming: read before the stream
        self._mark: int | None = None  # "drop"/"disconnect": where its policy takes over
        self._counted = 0  # chunks of the pending drop already counted (at the stream's close)
        self._error: SlowConsumerError | None = None
        self._closed = False
        self._reading = True
        self._waiter: asyncio.Future[None] | None = None
        # Nothing to do but read the next chunk from the stream as it is: the fast path.
        self._plain = not self.lagging

    @property
    def stream(self) -> ChunkStream:
        return self._stream

    @property
    def last_delivered(self) -> int:
        """The number of the last chunk received (``cursor - 1``)."""
        return self.cursor - 1

    @property
    def pending(self) -> int:
        """Chunk numbers readable now without waiting; 0 means the next read waits for the
        stream (or, once it has ended, stops)."""
        if self._closed:
            return 0
        return max(0, self._stream.next_seq - self.cursor)

    @property
    def queue(self) -> _Pending:
        """:attr:`pending` as ``queue.qsize()``, for readers written against the queue each
        consumer had before it read through a cursor."""
        return _Pending(self)

    def __aiter__(self) -> StreamConsumer:
        return self

    async def __anext__(self) -> Chunk:
        if self._plain:  # the common case: the next chunk as published, no suspension
            stream = self._stream
            cursor = self.cursor
            if 0 < stream.next_seq - cursor <= self._size:
                self.cursor = cursor + 1
                return stream._log[cursor - stream.tail_seq]
        return await self._next()

    async def _next(self) -> Chunk:
        while True:
            chunk = self._take()
            if chunk is not None:
                return chunk
            if self._error is not None:
                self._finished()
                raise self._error from None
            stream = self._stream
            if self._closed or (stream.closed and self.cursor >= stream.next_seq):
                self._finished()
                raise StopAsyncIteration
            await self._wait()

    def _take(self) -> Chunk | None:
        """The next chunk if there is one to be had without waiting (off the fast path)."""
        if self._closed or self._error is not None:
            return None
        stream = self._stream
        end = stream.next_seq
        self._settle(end)
        held = self._held
        if held:
            chunk = held.popleft()
            self.cursor = chunk.last_seq + 1
            if not held:
                self._replain()
            return chunk
        cursor = self.cursor
        mark = self._mark
        if mark is not None and cursor >= mark:
            return self._apply_policy(end)
        if cursor < stream.base_seq:
            self.cursor = stream.base_seq
            return self._gap(cursor, stream.base_seq - 1, "expired")
        if cursor >= end:
            if self.lagging:
                self.lagging = False
                self._replain()
            return None
        if self.lagging or cursor < stream.tail_seq:
            chunk = stream._run_from(cursor)
            merged = chunk.last_seq - chunk.seq
            if merged:
                self.coalesced += merged
                stream.coalesced += merged
        else:
            chunk = stream._log[cursor - stream.tail_seq]
        self.cursor = chunk.last_seq + 1
        if self.lagging and self.cursor >= end:
            self.lagging = False
            self._replain()
        return chunk

    def _settle(self, end: int) -> None:
        """Apply the policy if the stream got more than ``queue_size`` chunks ahead.

        Exact however late it is called: between two reads the cursor stays put and the
        stream only grows, so being too far behind now means the chunk ``queue_size`` past
        the cursor did not fit when it came.
        """
        if self.lagging or self._mark is not None or end - self.cursor <= self._size:
            return
        if self.policy == "wait":
            self.lagging = True
        else:
            self._mark = self.cursor + self._size
        self._plain = False

    def _apply_policy(self, end: int) -> Chunk | None:
        """At the mark: a gap for what was dropped, or the disconnect (after the rest)."""
        self._mark = None
        stream = self._stream
        cursor = self.cursor
        if self.policy == "drop":
            missed = end - cursor
            self.dropped += missed - self._counted
            stream.dropped += missed - self._counted
            self._counted = 0
            self.cursor = end
            self._replain()
            return self._gap(cursor, end - 1, "dropped")
        self._error = SlowConsumerError(stream.stream_id, end - cursor)
        stream._detach(self)
        return None

    def _gap(self, first: int, last: int, reason: Literal["dropped", "expired"]) -> Chunk:
        gap = StreamGap(from_seq=first, to_seq=last, reason=reason)
        return Chunk(self._stream.info, first, gap, last)

    def _replain(self) -> None:
        self._plain = not (
            self._held
            or self.lagging
            or self._mark is not None
            or self._closed
            or self._error is not None
            or self.cursor < self._stream.tail_seq
        )

    # producer side: called when the stream folds or trims, never per chunk
    def _pin(self) -> int:
        """The first chunk this consumer has yet to read as it was published: the stream
        folds only the chunks before it (its next chunk number when there is none)."""
        stream = self._stream
        end = stream.next_seq
        if self._closed or self._error is not None:
            return end
        self._settle(end)
        if self.lagging:
            return end  # it reads runs of text coalesced: folded ones will do
        held = self._held
        mark = self._mark
        if mark is not None:  # it reads one by one up to its mark: keep those for it
            self._hold(held[-1].last_seq + 1 if held else self.cursor, mark)
            return end
        return held[-1].last_seq + 1 if held else self.cursor

    def _save(self, new_base: int) -> None:
        """The stream is about to trim the single chunks before ``new_base``: keep those
        this consumer has yet to read, up to ``queue_size`` past its cursor."""
        held = self._held
        start = held[-1].last_seq + 1 if held else self.cursor
        if start >= new_base or self._closed or self.lagging:
            return  # catching up reads what is retained; an expired gap says the rest
        self._settle(self._stream.next_seq)
        # what a queue of queue_size chunks from its place would hold (up to its mark)
        limit = self._mark if self._mark is not None else self.cursor + self._size
        self._hold(start, min(limit, new_base))

    def _hold(self, start: int, stop: int) -> None:
        """Keep the single chunks ``start`` to ``stop`` (exclusive) for this consumer. They
        are single still: a consumer that reads one by one pins them against folding."""
        stream = self._stream
        tail = stream.tail_seq
        start = max(start, tail)
        if start < stop:
            self._held.extend(stream._log[start - tail : stop - tail])
            self._plain = False

    def _stream_closed(self) -> None:
        """Count a pending drop now that the stream's length is final (for its stats)."""
        if self.policy == "drop" and not self._closed:
            end = self._stream.next_seq
            self._settle(end)
            if self._mark is not None and not self._counted:
                self._counted = end - self._mark
                self.dropped += self._counted
                self._stream.dropped += self._counted

    # reader side
    async def _wait(self) -> None:
        """Sleep until the stream publishes or closes, or this consumer is closed.

        Cancellation-safe: the cursor moves only when a chunk is returned, so a read that is
        cancelled here loses nothing.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._stream._waiters
        waiters.append(fut)
        self._waiter = fut
        try:
            await fut
        except asyncio.CancelledError:
            if fut in waiters:
                waiters.remove(fut)
            raise
        finally:
            self._waiter = None

    def _finished(self) -> None:
        if self._reading:
            self._reading = False
            self._stream._reader_left(self)

    def close(self) -> None:
        """Stop reading (later reads end the iteration); safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._plain = False
            self._held.clear()
            self._stream._detach(self)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._finished()

    async def __aenter__(self) -> StreamConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Pending:
    """A consumer's :attr:`~StreamConsumer.pending` count behind ``qsize()``."""

    __slots__ = ("_consumer",)

    def __init__(self, consumer: StreamConsumer) -> None:
        self._consumer = consumer

    def qsize(self) -> int:
        return self._consumer.pending


_new_chunk = object.__new__


class ChunkStream:
    """A numbered, retained, multi-consumer stream of events (one producer).

    Publishing appends a chunk and wakes the consumers waiting for one; each consumer reads
    through its own cursor. Once every consumer has read past them (or reads them coalesced
    anyway), runs of text deltas are folded into one retained chunk each, so a long answer
    costs a few objects rather than a chunk and an event per delta: less memory, and less
    for the garbage collector to walk again and again.

    Args:
        stream_id: the stream's id (a task's stream has the task's id).
        retain: chunk numbers kept for late readers (up to an eighth more between trims).
        retain_bytes: the most memory (estimated) the kept chunks may take.
        queue_size: how many chunks a consumer may fall behind before its policy applies.
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
        self.tail_seq = 1  # number of the oldest chunk kept as it was published
        self.retained_bytes = 0
        self.closed = False
        self.closed_at: float | None = None
        self.dropped = 0  # chunks dropped for slow consumers (policy "drop"), all consumers
        self.coalesced = 0  # text deltas merged for consumers catching up
        self.readers = 0  # consumers that have not read to the end or closed
        self.on_idle: Callable[[ChunkStream], None] | None = None  # the last reader left
        self._folded: list[Chunk] = []  # base_seq .. tail_seq - 1, text runs folded
        self._log: list[Chunk] = []  # tail_seq .. next_seq - 1, one chunk per number
        self._fold_at = _FOLD_EVERY  # chunk number at which to try folding next
        self._check_at = min(self._fold_at, self._trim_at)  # next one to fold or trim at
        # Consumers attached (not closed or disconnected); a tuple, replaced on change, so a
        # consumer that leaves during a trim cannot make the loop skip the next one.
        self._consumers: tuple[StreamConsumer, ...] = ()
        self._waiters: list[asyncio.Future[None]] = []  # consumers asleep until the next chunk
        self._closed_event: asyncio.Event | None = None
        self._on_close = on_close

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    def publish(self, event: BaseModel) -> Chunk:
        """Number ``event``, retain it and wake the consumers waiting for it."""
        if self.closed:
            raise QueueClosedError(f"stream {self.stream_id}")
        seq = self.next_seq
        self.next_seq = seq + 1
        # Chunk(self.info, seq, event), without the cost of calling __init__: the hot path.
        chunk = _new_chunk(Chunk)
        chunk.info = self.info
        chunk.seq = chunk.last_seq = seq
        chunk.event = event
        chunk._json = chunk.wire = None
        log = self._log
        log.append(chunk)
        if type(event) is TextDelta:  # one token
            chunk.type = "text_delta"
            size = self.retained_bytes + CHUNK_OVERHEAD_BYTES + len(event.text)
        else:
            chunk.type = _kind(event)
            size = self.retained_bytes + event_size(event)
        self.retained_bytes = size
        if seq >= self._check_at or size > self.retain_bytes:
            self._housekeep(seq)
        if self._waiters:
            self._wake()
        return chunk

    def _wake(self) -> None:
        waiters = self._waiters
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    def _housekeep(self, seq: int) -> None:
        """Fold every ``_FOLD_EVERY`` chunks; trim past ``retain`` or the bytes budget."""
        if seq >= self._fold_at:
            self._fold()
            self._fold_at = seq + _FOLD_EVERY
        if seq - self.base_seq >= self._trim_at or self.retained_bytes > self.retain_bytes:
            self._trim()
        self._check_at = min(self._fold_at, self.base_seq + self._trim_at)

    def _fold(self) -> None:
        """Fold the single chunks that no consumer still needs one by one."""
        keep = self.next_seq
        for consumer in self._consumers:
            pin = consumer._pin()
            if pin < keep:
                keep = pin
        log, folded, info = self._log, self._folded, self.info
        n = keep - self.tail_seq
        if n >= _FOLD_MIN:
            for kind, group in groupby(log[:n], _KIND):
                if kind != "text_delta":
                    folded.extend(group)
                    continue
                run = list(group)
                if len(run) == 1:
                    folded.append(run[0])
                    continue
                texts = list(map(_TEXT, run))
                ends = array("I", accumulate(map(len, texts)))
                folded.append(_Span(info, run[0].seq, "".join(texts), ends))
                # len(run) chunks became one, plus an offset for each
                self.retained_bytes -= (len(run) - 1) * (CHUNK_OVERHEAD_BYTES - _SPAN_ITEM_BYTES)
            del log[:n]
            self.tail_seq += n

    def _run_from(self, seq: int) -> Chunk:
        """The chunk from number ``seq`` on for a consumer catching up: the run of text
        deltas starting there as one chunk (folded and single ones alike), else the chunk."""
        folded, log, tail = self._folded, self._log, self.tail_seq
        if seq >= tail:
            first, parts, k = log[seq - tail], log, seq - tail + 1
        else:
            i = bisect_right(folded, seq, key=_SEQ) - 1
            first, parts, k = folded[i], folded, i + 1
            if isinstance(first, _Span):
                first = first.since(seq)
        if type(first.event) is not TextDelta:
            return first
        run = [first]
        while True:
            while k < len(parts) and type(parts[k].event) is TextDelta:
                run.append(parts[k])
                k += 1
            if parts is log or k < len(parts):
                break
            parts, k = log, 0  # the folded ones were text to the end: on into the singles
        if len(run) == 1:
            return first
        text = "".join(_text(c) for c in run)
        return Chunk(self.info, seq, TextDelta(text=text), run[-1].last_seq)

    def _trim(self) -> None:
        """Drop the oldest chunks: down to ``retain`` chunk numbers and 3/4 of
        ``retain_bytes`` (always keeping the newest chunk).

        Consumers behind a cut into the single chunks first keep what they have yet to read
        (see :class:`StreamConsumer`).
        """
        folded, log = self._folded, self._log
        keep_from = self.base_seq
        if self.next_seq - keep_from > self._trim_at:
            keep_from = self.next_seq - self.retain
        target = self.retain_bytes * 3 // 4
        size = self.retained_bytes
        k = 0
        last = len(folded) if log else len(folded) - 1
        while k < last and (folded[k].last_seq < keep_from or size > target):
            size -= _entry_size(folded[k])
            k += 1
        if k:
            del folded[:k]
        if folded:
            first = folded[0]
            if first.seq < keep_from and isinstance(first, _Span):
                rest = first.since(keep_from)
                size += _entry_size(rest) - _entry_size(first)
                folded[0] = rest
            self.base_seq = folded[0].seq
        else:
            tail = self.tail_seq
            cut = max(0, min(keep_from - tail, len(log) - 1))
            for i in range(cut):
                event = log[i].event
                if type(event) is TextDelta:
                    size -= CHUNK_OVERHEAD_BYTES + len(event.text)
                else:
                    size -= event_size(event)
            while cut < len(log) - 1 and size > target:
                size -= event_size(log[cut].event)
                cut += 1
            if cut:
                tail += cut
                for consumer in self._consumers:
                    if consumer.cursor < tail:
                        consumer._save(tail)
                del log[:cut]
                self.tail_seq = tail
            self.base_seq = tail
        self.retained_bytes = size

    def close(self) -> None:
        """No more chunks; consumers read what is left, then stop."""
        if self.closed:
            return
        self.closed = True
        self.closed_at = time.monotonic()
        consumers, self._consumers = self._consumers, ()
        for consumer in consumers:
            consumer._stream_closed()
        self._wake()
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
        if not self.closed:
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
        """Consumers attached to the open stream (not closed, disconnected or finished)."""
        return len(self._consumers)

    @property
    def retained(self) -> int:
        """Chunk numbers retained (folded text runs count each of their deltas)."""
        return self.next_seq - self.base_seq

    def stats(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "chunks": self.next_seq - 1,
            "retained": self.next_seq - self.base_seq,
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
