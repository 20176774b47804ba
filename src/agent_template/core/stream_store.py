"""Where streams live: numbering, retention, fan-out and release, behind one interface.

The scheduler and the server see only :class:`StreamStore`: :class:`MemoryStreamStore` keeps
streams in this process; a store on Redis (one stream readable from every replica) implements
the same interface and passes the same contract tests.

Memory stays bounded however long a service runs: each stream retains at most ``retain``
chunks and ``retain_bytes`` of them; a finished stream stays resumable for ``linger_s``
seconds and is released once its readers have read to the end; and finished streams are
released oldest first whenever more than ``max_streams`` are kept or their retained chunks
together pass ``max_bytes`` (open streams are bounded one by one, and by the concurrency
limit). Readers attached to a released stream still finish reading it; only new joins are
refused.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from agent_template.core.stream_gen import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_RETAIN,
    DEFAULT_RETAIN_BYTES,
    ChunkStream,
    ConsumerPolicy,
    StreamConsumer,
    StreamInfo,
)
from agent_template.errors import StreamNotFoundError

__all__ = [
    "DEFAULT_LINGER_S",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_STREAMS",
    "MemoryStreamStore",
    "StreamStore",
    "default_stream_store",
    "set_default_stream_store",
]

DEFAULT_LINGER_S = 300.0  # a finished stream stays resumable this long
DEFAULT_MAX_STREAMS = 1_000  # finished streams kept for resumes, newest first
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # all retained chunks together, about


class StreamStore(ABC):
    """Creates streams, finds them by id for their owner, and releases them.

    A stream's producer publishes on the :class:`ChunkStream` that :meth:`create` returns;
    consumers come from :meth:`subscribe`. Ownership: a caller that names a ``user_id`` finds
    only that user's streams; to it any other stream does not exist, so ids reveal nothing.
    Trusted in-process callers pass no ``user_id`` and find every stream.
    """

    @abstractmethod
    def create(
        self,
        stream_id: str | None = None,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        parent_id: str | None = None,
    ) -> ChunkStream:
        """A new open stream (a fresh id when ``stream_id`` is None).

        Raises:
            ValueError: a stream with this id exists.
        """

    @abstractmethod
    def get(self, stream_id: str, *, user_id: str | None = None) -> ChunkStream:
        """The stream with this id.

        Raises:
            StreamNotFoundError: no such stream, it was released, or it is another user's.
        """

    @abstractmethod
    def alias(self, alias_id: str, stream_id: str) -> None:
        """Serve the stream ``stream_id`` under ``alias_id`` too, until it is released.

        An alias that named another stream now names this one.

        Raises:
            StreamNotFoundError: no stream ``stream_id``.
            ValueError: ``alias_id`` is another stream's own id.
        """

    @abstractmethod
    def attach(self, stream_id: str, stream: ChunkStream) -> None:
        """Keep a stream made elsewhere under ``stream_id``."""

    @abstractmethod
    def release(self, stream_id: str) -> None:
        """Forget a stream (and its aliases): it can no longer be joined or resumed."""

    @abstractmethod
    def __contains__(self, stream_id: object) -> bool: ...

    def subscribe(
        self,
        stream_id: str,
        *,
        after_seq: int | None = None,
        policy: ConsumerPolicy | None = None,
        queue_size: int | None = None,
        user_id: str | None = None,
    ) -> StreamConsumer:
        """A consumer of every chunk after ``after_seq`` (all retained ones by default).

        Raises:
            StreamNotFoundError: as :meth:`get`.
        """
        stream = self.get(stream_id, user_id=user_id)
        return stream.subscribe(after_seq=after_seq, policy=policy, queue_size=queue_size)

    @abstractmethod
    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None:  # noqa: B027 - a store in memory holds no connections
        """Release connections (a store on a server)."""


class MemoryStreamStore(StreamStore):
    """Streams in this process, with bounded retention (see the module docstring).

    Args:
        retain: chunks kept per stream.
        retain_bytes: estimated bytes of chunks kept per stream.
        max_bytes: estimated bytes of chunks that finished streams keep together; past it,
            the oldest are released. (An open stream is bounded by ``retain_bytes``.)
        max_streams: finished streams kept; past it, the oldest are released.
        linger_s: seconds a finished stream stays resumable after its readers are done.
        queue_size: per-consumer queue size.
        policy: the default consumer policy.
    """

    def __init__(
        self,
        *,
        retain: int = DEFAULT_RETAIN,
        retain_bytes: int = DEFAULT_RETAIN_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_streams: int = DEFAULT_MAX_STREAMS,
        linger_s: float = DEFAULT_LINGER_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        policy: ConsumerPolicy = "wait",
    ) -> None:
        self.retain = retain
        self.retain_bytes = retain_bytes
        self.max_bytes = max_bytes
        self.max_streams = max_streams
        self.linger_s = linger_s
        self.queue_size = queue_size
        self.policy: ConsumerPolicy = policy
        self._streams: dict[str, ChunkStream] = {}  # ids and aliases
        self._names: dict[int, list[str]] = {}  # id(stream) -> every key it is kept under
        self._open: dict[int, ChunkStream] = {}
        # Finished streams still kept, oldest first (dicts by id: a stream can leave either
        # at once when it is released).
        self._finished: dict[int, ChunkStream] = {}  # lingering, in the order they closed
        self._held: dict[int, ChunkStream] = {}  # past their linger, still being read
        self._closed_bytes = 0  # retained by the finished streams still kept
        self.released = 0

    def create(
        self,
        stream_id: str | None = None,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        parent_id: str | None = None,
    ) -> ChunkStream:
        self.sweep()
        stream_id = stream_id or uuid.uuid4().hex
        if stream_id in self._streams:
            raise ValueError(f"a stream with id {stream_id!r} exists")
        info = StreamInfo(stream_id, user_id, session_id, task_id, parent_id)
        stream = ChunkStream(
            stream_id,
            retain=self.retain,
            retain_bytes=self.retain_bytes,
            queue_size=self.queue_size,
            policy=self.policy,
            info=info,
            on_close=self._closed,
        )
        self._keep(stream_id, stream)
        self._open[id(stream)] = stream
        return stream

    def _keep(self, key: str, stream: ChunkStream) -> None:
        self._streams[key] = stream
        self._names.setdefault(id(stream), []).append(key)

    def get(self, stream_id: str, *, user_id: str | None = None) -> ChunkStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamNotFoundError(stream_id)
        if user_id is not None and stream.info.user_id != user_id:
            raise StreamNotFoundError(stream_id)
        return stream

    def alias(self, alias_id: str, stream_id: str) -> None:
        stream = self.get(stream_id)
        current = self._streams.get(alias_id)
        if current is stream:
            return
        if current is not None:
            if current.stream_id == alias_id:
                raise ValueError(f"a stream with id {alias_id!r} exists")
            self._names[id(current)].remove(alias_id)  # an alias moves to the newer stream
        self._keep(alias_id, stream)

    def attach(self, stream_id: str, stream: ChunkStream) -> None:
        current = self._streams.get(stream_id)
        if current is stream:
            return
        if current is not None:
            raise ValueError(f"a stream with id {stream_id!r} exists")
        self._keep(stream_id, stream)
        if stream.closed:
            self._closed_bytes += stream.retained_bytes
            self._finished[id(stream)] = stream
        else:
            self._open[id(stream)] = stream
            stream._on_close = self._closed

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    def release(self, stream_id: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._forget(stream)

    def _forget(self, stream: ChunkStream) -> None:
        names = self._names.pop(id(stream), None)
        if names is None:
            return
        for key in names:
            if self._streams.get(key) is stream:
                del self._streams[key]
        ident = id(stream)
        if self._open.pop(ident, None) is None:
            self._closed_bytes -= stream.retained_bytes
        self._finished.pop(ident, None)
        self._held.pop(ident, None)
        stream.on_idle = None
        self.released += 1

    def _closed(self, stream: ChunkStream) -> None:
        if self._open.pop(id(stream), None) is not None:
            self._closed_bytes += stream.retained_bytes
        self._finished[id(stream)] = stream
        self.sweep()

    def _idle(self, stream: ChunkStream) -> None:
        """The last reader of a finished stream left after its linger had passed."""
        self._forget(stream)

    def sweep(self) -> None:
        """Release finished streams that nobody can resume any more, oldest first."""
        finished, held = self._finished, self._held
        cutoff = time.monotonic() - self.linger_s
        while finished:
            head = next(iter(finished.values()))
            if (head.closed_at or 0.0) > cutoff:
                break  # the rest closed later still
            del finished[id(head)]
            if head.readers:
                head.on_idle = self._idle  # released when its last reader is done
                held[id(head)] = head
            else:
                self._forget(head)
        kept = len(finished) + len(held)
        total = self._closed_bytes  # finished streams no longer change size
        for queue in (held, finished):  # the held ones closed first
            while queue and (kept > self.max_streams or total > self.max_bytes):
                head = next(iter(queue.values()))
                total -= head.retained_bytes
                kept -= 1
                self._forget(head)

    def stats(self) -> dict[str, Any]:
        self.sweep()
        streams = {id(s): s for s in self._streams.values()}.values()
        return {
            "streams": len(streams),
            "open": sum(1 for s in streams if not s.closed),
            "consumers": sum(s.consumers for s in streams),
            "retained_bytes": sum(s.retained_bytes for s in streams),
            "released": self.released,
        }


_default_store: StreamStore | None = None


def default_stream_store(make: Callable[[], StreamStore] | None = None) -> StreamStore:
    """The process's store for callers that compose nothing themselves (``AgentLoop()``,
    ``StreamGenerator()``); an app's composition root builds and passes its own.

    ``make`` builds it when there is none yet (``AgentLoop()`` builds it from its settings).
    """
    global _default_store
    if _default_store is None:
        _default_store = make() if make is not None else MemoryStreamStore()
    return _default_store


def set_default_stream_store(store: StreamStore | None) -> None:
    """Replace the process's default store (tests); None resets it to lazy creation."""
    global _default_store
    _default_store = store
