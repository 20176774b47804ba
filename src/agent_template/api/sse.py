"""Server-Sent Events: a task's stream of chunks as ``text/event-stream``.

Each chunk is one event, named by its frame type, numbered by its chunk number and carrying
the same JSON frame the WebSocket sends (:func:`~agent_template.api.protocol.chunk_frame`,
encoded once per chunk whoever sends it)::

    event: stream_data
    id: 7
    data: {"type":"stream_data","data":{"content":"Hel"},"session_id":"s","task_id":"t",...}

A coalesced chunk (several text deltas merged for a client that fell behind) carries the
number of its last delta, so ``Last-Event-ID`` always names the last chunk received and a
reconnect resumes right after it. Events that are not chunks (``task_created``) have no
``id``. While nothing happens, a comment line (``: keepalive``) goes out every
``keepalive_s`` seconds so proxies and clients do not time the connection out.

The stream ends after the ``stream_complete`` event. A client that disconnects stops only its
own reading: the task runs on, and its answer is stored all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.responses import StreamingResponse

from agent_template.api.protocol import CHUNK_FRAME_TYPES, ServerFrame, chunk_frame, encode

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from agent_template.core.stream_gen import Chunk, StreamConsumer

__all__ = [
    "KEEPALIVE",
    "SSE_MEDIA_TYPE",
    "SSE_RESPONSE",
    "SSEResponse",
    "chunk_event",
    "chunk_events",
    "event",
]

SSE_MEDIA_TYPE: Final = "text/event-stream"
KEEPALIVE: Final = b": keepalive\n\n"
_NAMES: Final = {kind: name.encode() for kind, name in CHUNK_FRAME_TYPES.items()}
_BATCH: Final = 64  # queued chunks sent in one write
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


_SSE_EXAMPLE = (
    "event: task_created\n"
    'data: {"type":"task_created","data":{"task_id":"9f1c...","state":"pending",'
    '"session_created":false,...},"session_id":"demo_session","task_id":"9f1c..."}\n\n'
    "event: stream_data\nid: 1\n"
    'data: {"type":"stream_data","data":{"content":"Hel"},"session_id":"demo_session",'
    '"task_id":"9f1c...","seq":1,"last_seq":1}\n\n'
    ": keepalive\n\n"
    "event: stream_complete\nid: 4\n"
    'data: {"type":"stream_complete","data":{"status":"completed","output":"Hello",...},'
    '"session_id":"demo_session","task_id":"9f1c...","seq":4,"last_seq":4}\n\n'
)
# The 200 of a streaming route (its ``responses=``), documented by hand: the schema of one
# event, as OpenAPI 3.1 tools read the schema of an event stream (3.2 calls it
# ``itemSchema``). Such a route declares the plain ``Response`` class and answers its own
# ``SSEResponse``: given a class with a media type, FastAPI would document the stream as one
# string instead.
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-Sent Events: `event` is the frame type, `id` the chunk number (resume "
            "with `Last-Event-ID` on GET /api/v1/tasks/{task_id}/stream), `data` the JSON "
            "frame, as on the WebSocket. Ends after `stream_complete`."
        ),
        "content": {
            SSE_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "description": "The frame type."},
                        "id": {"type": "string", "description": "The chunk number."},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": ServerFrame.model_json_schema(),
                        },
                        "retry": {"type": "integer", "minimum": 0},
                    },
                },
                "example": _SSE_EXAMPLE,
            }
        },
    }
}


def chunk_event(chunk: Chunk) -> bytes:
    """The SSE event of a chunk: its frame type, its (last) chunk number and its frame."""
    kind: str = chunk.event.type  # type: ignore[attr-defined]
    name = _NAMES.get(kind) or kind.encode()
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name, chunk.last_seq, chunk_frame(chunk))


def event(frame: Mapping[str, Any]) -> bytes:
    """The SSE event of a frame that is not a chunk (no ``id``: it cannot be resumed from)."""
    return b"event: %s\ndata: %s\n\n" % (str(frame["type"]).encode(), encode(dict(frame)).encode())


async def chunk_events(
    consumer: StreamConsumer, *, head: Iterable[bytes] = (), keepalive_s: float
) -> AsyncIterator[bytes]:
    """``head``, then the consumer's chunks as SSE events until its stream ends, with a
    keepalive comment after each ``keepalive_s`` seconds without a chunk. Closes the consumer
    however it ends."""
    try:
        for item in head:
            yield item
        take = consumer.__anext__
        while True:
            if consumer.pending:
                # Chunks are waiting (taking them never suspends): send them as one write,
                # then let the loop run, so a client that left is noticed before the next.
                parts: list[bytes] = []
                while consumer.pending and len(parts) < _BATCH:
                    parts.append(chunk_event(await take()))
                yield b"".join(parts)
                await asyncio.sleep(0)
                continue
            try:
                async with asyncio.timeout(keepalive_s):
                    chunk = await take()  # cancel-safe: a chunk handed over stays queued
            except TimeoutError:
                yield KEEPALIVE
                continue
            yield chunk_event(chunk)
    except StopAsyncIteration:
        return
    finally:
        consumer.close()


class SSEResponse(StreamingResponse):
    """A ``text/event-stream`` response of ``events``; ``on_close`` runs once the response
    ends, whether the stream finished, the client went away or the server is stopping.

    (Starlette cancels the sending when the client disconnects, which may leave the
    generator suspended rather than finished: it is closed here, so its ``finally`` runs now
    instead of whenever it is collected.)
    """

    media_type = SSE_MEDIA_TYPE

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        on_close: Callable[[], None] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(events, status_code=status_code, headers={**_HEADERS, **(headers or {})})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._events, "aclose", None)
            if close is not None:
                await close()
            if self._on_close is not None:
                self._on_close()
