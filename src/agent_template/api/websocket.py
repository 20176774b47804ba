"""The WebSocket endpoint ``/ws``: chat, follow tasks and sessions, cancel, on one connection.

The frames and messages are ``api.protocol``'s, described in ``docs/protocol.md``. A connection:

* authenticates when it opens (``Authorization: Bearer`` or ``?token=``); a refused one gets
  an ``error`` frame and is closed 1008 (1013 while the server starts or is busy, 1012 while
  it shuts down), so browsers, which never see a refused handshake's status, learn why;
* sends every frame through its own bounded outbox, drained by one writer task. A task's
  stream is read at the socket's pace: while the outbox is full its reader waits, its stream
  consumer falls behind and later catches up with text deltas merged (nothing is lost while
  the stream retains it), so a slow client never holds up the run or anyone else. Other
  frames (events, replies, heartbeats) never wait; a client so slow that they pile up past a
  reserve, or that takes no frame for ``STALL_BEATS`` heartbeats, is closed 1013;
* answers its messages in order; a malformed one gets an ``error`` frame and the connection
  stays open. Closing it (or losing it) stops nothing: its tasks run on and are stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from agent_template.api.chat import start_chat
from agent_template.api.deps import authenticate, bearer_token, is_loopback
from agent_template.api.errors import ApiError, status_of
from agent_template.api.protocol import (
    PROTOCOL_VERSION,
    ApproveMessage,
    CancelMessage,
    ChatMessage,
    ClientMessage,
    PingMessage,
    SubscribeMessage,
    UnsubscribeMessage,
    bus_frame,
    chunk_text,
    client_message_adapter,
    encode,
    error_frame,
    frame,
    task_data,
)
from agent_template.errors import SessionNotFoundError, StreamNotFoundError, TaskNotFoundError
from agent_template.models.bus_events import BusEventBase, SessionChanged, TaskStateChanged

if TYPE_CHECKING:
    from agent_template.api.state import ServerState
    from agent_template.core.stream_gen import StreamConsumer

__all__ = ["CLOSE_CODES", "STALL_BEATS", "Connection", "router"]

log = logging.getLogger("agent_template.websocket")

router = APIRouter()

CLOSE_NORMAL: Final = 1000
CLOSE_POLICY: Final = 1008
CLOSE_ERROR: Final = 1011
CLOSE_RESTART: Final = 1012
CLOSE_TRY_LATER: Final = 1013
CLOSE_CODES: Final[dict[int, str]] = {
    CLOSE_NORMAL: "closed normally",
    CLOSE_POLICY: "refused: no valid token, a remote client without auth, or a foreign origin",
    CLOSE_ERROR: "the server failed unexpectedly",
    CLOSE_RESTART: "the server is shutting down: reconnect and resume",
    CLOSE_TRY_LATER: "starting, rate limited, or the client reads too slowly: retry, resume",
}
STALL_BEATS: Final = 2  # heartbeats without a frame taken while frames wait: a stuck client
CLOSE_TIMEOUT_S: Final = 5.0  # the most a close waits for queued frames to leave
MAX_FOLLOWED: Final = 64  # streams, and sessions, one connection follows at most
_REASON_BYTES = 123  # the most a close frame's reason may hold
_RUN_STATES = ("pending", "running")
_KNOWN_TYPES = "chat, cancel, subscribe, unsubscribe, ping, approve"
_BUS_TYPES = ("task_state", "session_changed", "todos_changed", "context_compacted")
_RETRYABLE = frozenset({429, 503})  # statuses whose errors go away by retrying later
_CLOSE_FOR_STATUS = {401: CLOSE_POLICY, 403: CLOSE_POLICY, 429: CLOSE_TRY_LATER}


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """One client's connection (see the module's docstring and ``docs/protocol.md``)."""
    await websocket.accept()
    state: ServerState | None = getattr(websocket.app.state, "server", None)
    try:
        if state is None or not state.ready:
            raise ApiError(503, "not_ready", "The server is starting; reconnect in a moment.")
        user_id = await _admit(state, websocket)
    except Exception as exc:
        error = status_of(exc)
        if error.code == "internal_error":
            log.error("a WebSocket connection could not be admitted", exc_info=exc)
        code = _CLOSE_FOR_STATUS.get(error.status, CLOSE_TRY_LATER)
        if error.code == "shutting_down":
            code = CLOSE_RESTART
        elif error.status >= 500 and error.code == "internal_error":
            code = CLOSE_ERROR
        await _refuse(websocket, code, error)
        return
    await Connection(websocket, state, user_id).serve()


async def _admit(state: ServerState, websocket: WebSocket) -> str:
    """The connecting user. Raises ApiError as the REST API would answer."""
    if state.shutting_down:
        raise ApiError(503, "shutting_down", "The server is shutting down; reconnect shortly.")
    headers, query = websocket.headers, websocket.query_params
    origin = headers.get("origin")
    if origin and bearer_token(headers, query) is None and not _origin_allowed(state, origin):
        raise ApiError(
            403,
            "origin_not_allowed",
            f"A page from {origin} may not use this server without a token; add the origin "
            "to CORS_ORIGINS or connect with ?token=.",
        )
    host = websocket.client.host if websocket.client else None
    user_id = await authenticate(state, headers, query, host)
    await _check_rate(state, user_id)
    return user_id


def _origin_allowed(state: ServerState, origin: str) -> bool:
    allowed = state.settings.cors_origins
    if "*" in allowed or origin in allowed:
        return True
    try:
        return is_loopback(urlsplit(origin).hostname)
    except ValueError:
        return False


async def _check_rate(state: ServerState, user_id: str) -> None:
    retry = await state.limits.hit(user_id)
    if retry is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests: the limit is {state.limits.per_minute} a minute per user. "
            f"Retry in {int(retry)} s.",
            {"limit_per_minute": state.limits.per_minute, "retry_after_s": int(retry)},
        )


def _reason(text: str) -> str:
    """``text`` cut to what a close frame can carry (123 bytes of UTF-8)."""
    raw = text.encode()
    if len(raw) <= _REASON_BYTES:
        return text
    return raw[: _REASON_BYTES - 3].decode(errors="ignore") + "..."


async def _refuse(websocket: WebSocket, code: int, error: ApiError) -> None:
    try:
        retryable = error.status in _RETRYABLE
        data = error_frame(error.code, error.message, error.details, retryable=retryable)
        await websocket.send_text(encode(data))
        await websocket.close(code, _reason(f"{error.code}: {error.message}"))
    except (WebSocketDisconnect, RuntimeError):  # the client left already: nobody to tell
        pass


class _Outbox:
    """Text frames waiting for the connection's writer.

    Stream frames (:meth:`put`) wait while ``limit`` frames wait, so their readers fall behind
    instead of the outbox growing; other frames (:meth:`push`) never wait, up to twice that.
    """

    __slots__ = ("_items", "_ready", "_room", "closed", "hard_limit", "limit")

    def __init__(self, limit: int) -> None:
        self._items: deque[str] = deque()
        self.limit = limit
        self.hard_limit = 2 * limit
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()  # set exactly while fewer than ``limit`` frames wait
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, text: str) -> bool:
        """Queue a frame now; False when ``hard_limit`` frames wait (it is not queued)."""
        items = self._items
        if self.closed:
            return True  # closing: nothing more is sent
        if len(items) >= self.hard_limit:
            return False
        items.append(text)
        if len(items) >= self.limit:
            self._room.clear()
        self._ready.set()
        return True

    async def put(self, text: str) -> None:
        """Queue a frame once fewer than ``limit`` wait."""
        items = self._items
        while len(items) >= self.limit and not self.closed:
            await self._room.wait()
        if self.closed:
            return
        items.append(text)
        if len(items) >= self.limit:
            self._room.clear()
        self._ready.set()

    async def get(self) -> str | None:
        """The next frame; None once closed and empty."""
        items = self._items
        while not items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        text = items.popleft()
        if len(items) < self.limit:
            self._room.set()
        return text

    def close(self) -> None:
        """Take no more frames; the writer sends those queued, then the close frame."""
        self.closed = True
        self._ready.set()
        self._room.set()


@dataclass(slots=True)
class _Reader:
    task: asyncio.Task[None]
    session_id: str | None


class Connection:
    """One WebSocket client: its user, what it follows, its outbox and its tasks.

    Registered in ``state.connections`` while open; :meth:`close` is what shutdown calls.
    """

    def __init__(self, websocket: WebSocket, state: ServerState, user_id: str) -> None:
        settings = state.settings
        self.websocket = websocket
        self.state = state
        self.user_id = user_id
        self.outbox = _Outbox(settings.ws_queue_frames)
        self.max_bytes = settings.max_request_bytes
        self.heartbeat_s = settings.ws_heartbeat_s
        self.sent = 0  # frames the socket took
        self.client_gone = False
        self.close_sent = False
        self.tasks: set[str] = set()  # tasks whose events this connection gets
        self.sessions: dict[str, None] = {}  # sessions whose events it gets, oldest first
        self.session_runs: set[str] = set()  # sessions whose every run it streams
        self._readers: dict[str, _Reader] = {}  # task id -> the reader sending its stream
        self._completions: dict[str, str] = {}  # task_completed frames held for the stream end
        self._deferred: dict[str, str] = {}  # runs created while a chat starts, announced after
        self._chats = 0  # chat messages being started
        self._latest: str | None = None  # the last task a chat of this connection started
        self._sending = False
        self._close_with: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life

    async def serve(self) -> None:
        """Run the connection until the client leaves or it is closed."""
        state = self.state
        state.connections.add(self)
        hub = _hub(state)
        hub.add(self)
        self._writer = asyncio.create_task(self._write(), name="ws writer")
        beat = asyncio.create_task(self._beat(), name="ws heartbeat")
        receiver = asyncio.create_task(self._receive(), name="ws receiver")
        from agent_template import __version__

        hello = {
            "protocol": PROTOCOL_VERSION,
            "server_version": __version__,
            "user_id": self.user_id,
            "heartbeat_s": self.heartbeat_s,
            "max_message_bytes": self.max_bytes,
        }
        self.push(encode(frame("hello", hello)))
        try:
            await asyncio.wait((receiver, self._writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hub.discard(self)
            state.connections.discard(self)
            await self._stop(receiver, beat)

    async def _stop(self, *tasks: asyncio.Task[None]) -> None:
        writer = self._writer
        pending = [*tasks, *(reader.task for reader in self._readers.values())]
        if writer is not None:
            pending.append(writer)
        for task in pending:
            task.cancel()
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, Exception):  # a bug: the connection's own errors are caught
                log.error("a task of a WebSocket connection failed", exc_info=result)
        if self._close_with is not None and not (self.close_sent or self.client_gone):
            code, reason = self._close_with
            try:  # the writer was stuck: one last try, which a stalled socket also refuses
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.websocket.close(code, _reason(reason))
            except (TimeoutError, WebSocketDisconnect, RuntimeError):
                log.debug("could not send the close frame to a stuck client")
        log.info(
            "WebSocket of %s closed after %d frames",
            self.user_id,
            self.sent,
            extra={"user_id": self.user_id, "close": self._close_with},
        )

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send what the followed streams still have (within ``CLOSE_TIMEOUT_S``), then a
        close frame with ``code`` and ``reason``."""
        if self._close_with is None:
            self._close_with = (code, reason)
            readers = [reader.task for reader in self._readers.values()]
            if readers:
                await asyncio.wait(readers, timeout=CLOSE_TIMEOUT_S)
            self.outbox.close()
        writer = self._writer
        if writer is not None and not writer.done():
            done, _ = await asyncio.wait([writer], timeout=CLOSE_TIMEOUT_S)
            if not done:
                self._abort(code, reason)

    def _abort(self, code: int, reason: str) -> None:
        """Close without waiting for the client (it is too slow, or stuck)."""
        if self._close_with is None:
            self._close_with = (code, reason)
            log.info("closing the WebSocket of %s: %s", self.user_id, reason)
        self.outbox.close()
        if self._writer is not None:
            self._writer.cancel()

    @property
    def pending(self) -> int:
        """Frames waiting to be sent."""
        return len(self.outbox)

    # ------------------------------------------------------------------ sending

    def push(self, text: str) -> None:
        """Queue a frame that must not wait; a client that lets too many pile up is closed."""
        if not self.outbox.push(text):
            self._abort(
                CLOSE_TRY_LATER,
                f"client too slow: {len(self.outbox)} frames unsent; reconnect and resume",
            )

    def _reply(self, type_: str, data: dict[str, Any], **ids: str | int | None) -> None:
        self.push(encode(frame(type_, data, **ids)))

    async def _write(self) -> None:
        outbox, send = self.outbox, self.websocket.send
        try:
            while (text := await outbox.get()) is not None:
                self._sending = True
                await send({"type": "websocket.send", "text": text})
                self._sending = False
                self.sent += 1
            code, reason = self._close_with or (CLOSE_NORMAL, "")
            await send({"type": "websocket.close", "code": code, "reason": _reason(reason)})
            self.close_sent = True
        except (WebSocketDisconnect, RuntimeError):  # the client is gone: nothing more to send
            self.client_gone = True

    async def _beat(self) -> None:
        last, stalled = -1, 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.sent == last and (self._sending or len(self.outbox)):
                stalled += 1
                if stalled >= STALL_BEATS:
                    waited = f"{stalled * self.heartbeat_s:g}"
                    self._abort(
                        CLOSE_TRY_LATER,
                        f"client too slow: took no frame for {waited} s; reconnect and resume",
                    )
                    return
            else:
                stalled = 0
            last = self.sent
            self._reply("heartbeat", {"ts": time.time()})

    # ------------------------------------------------------------------ streams

    def _open(
        self, task_id: str, *, after_seq: int | None = None, restart: bool = False
    ) -> StreamConsumer | None:
        """A consumer of the task's stream for this user (None: streamed already).

        Raises:
            StreamNotFoundError: no such stream of this user.
            ApiError: 429 when the connection follows ``MAX_FOLLOWED`` streams.
        """
        reader = self._readers.get(task_id)
        if reader is not None and not restart:
            return None
        if reader is None and len(self._readers) >= MAX_FOLLOWED:
            raise ApiError(
                429,
                "too_many_subscriptions",
                f"This connection follows {MAX_FOLLOWED} streams, the most it may; "
                "unsubscribe from one, or open another connection.",
                {"task_id": task_id},
            )
        consumer = self.state.loop.subscribe(
            task_id, user_id=self.user_id, after_seq=after_seq, policy="wait"
        )
        if reader is not None:
            reader.task.cancel()
        self.tasks.add(task_id)
        return consumer

    def _start(self, task_id: str, consumer: StreamConsumer) -> None:
        task = asyncio.create_task(self._read(task_id, consumer), name=f"ws stream {task_id}")
        self._readers[task_id] = _Reader(task, consumer.stream.info.session_id)

    def _start_run(self, task_id: str, created: str) -> None:
        """Stream a new run of a session this connection follows, after its task_created."""
        try:
            consumer = self._open(task_id)
        except (StreamNotFoundError, ApiError) as exc:
            code = exc.code if isinstance(exc, ApiError) else "not_found"
            self.push(encode(error_frame(code, str(exc), task_id=task_id)))
            return
        self.push(created)
        if consumer is not None:
            self._start(task_id, consumer)

    async def _read(self, task_id: str, consumer: StreamConsumer) -> None:
        put = self.outbox.put
        ended = False
        try:
            async for chunk in consumer:
                await put(chunk_text(chunk))
            ended = True
        finally:
            consumer.close()
            reader = self._readers.get(task_id)
            if reader is not None and reader.task is asyncio.current_task():
                del self._readers[task_id]
                if ended:  # the task is over: its task_completed follows its stream_complete
                    completion = self._completions.pop(task_id, None)
                    if completion is not None:
                        self.push(completion)
                    self.tasks.discard(task_id)

    # ------------------------------------------------------------------ bus events

    def follows(self, event: BusEventBase) -> bool:
        """Whether this connection gets ``event`` (its user's, checked by the hub)."""
        sid = event.session_id
        if isinstance(event, TaskStateChanged):
            if event.task_id in self.tasks:
                return True
            return (
                event.previous is None
                and sid in self.session_runs
                and event.task.parent_id is None
                and event.task_id not in self._deferred
            )
        return sid is not None and sid in self.sessions

    def on_bus(self, event: BusEventBase, text: str) -> None:
        """Send a followed event's frame (called inline by the bus: never waits or raises)."""
        if isinstance(event, TaskStateChanged):
            tid = event.task_id or ""
            if tid not in self.tasks:  # a new run of a followed session
                if self._chats:
                    self._deferred[tid] = text  # after the chat's own task_created
                else:
                    self._start_run(tid, text)
                return
            if event.task.done:
                if tid in self._readers:
                    self._completions[tid] = text  # sent after the stream's last frame
                    return
                self.tasks.discard(tid)
            self.push(text)
            return
        self.push(text)
        if isinstance(event, SessionChanged) and event.action == "deleted" and event.session_id:
            self.sessions.pop(event.session_id, None)
            self.session_runs.discard(event.session_id)

    def _watch(self, session_id: str) -> None:
        sessions = self.sessions
        sessions.pop(session_id, None)
        sessions[session_id] = None
        if len(sessions) > MAX_FOLLOWED:
            oldest = next((s for s in sessions if s not in self.session_runs), None)
            if oldest is not None:
                del sessions[oldest]

    # ------------------------------------------------------------------ client messages

    async def _receive(self) -> None:
        receive = self.websocket.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.client_gone = True
                return
            text = message.get("text")
            await self._handle(text if text is not None else message.get("bytes") or b"")

    async def _handle(self, raw: str | bytes) -> None:
        size = len(raw)
        if size > self.max_bytes or (
            isinstance(raw, str)
            and size * 4 > self.max_bytes
            and len(raw.encode()) > self.max_bytes
        ):
            self._error(
                "message_too_large",
                f"The message is larger than MAX_REQUEST_BYTES ({self.max_bytes} bytes); "
                "send less.",
                {"limit_bytes": self.max_bytes},
            )
            return
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            self._error("invalid_message", f"The message is not JSON ({exc}); send one object.")
            return
        if not isinstance(payload, dict):
            self._error("invalid_message", 'A message is a JSON object with a "type".')
            return
        rid = payload.get("request_id")
        rid = rid if isinstance(rid, str) else None
        try:
            message = client_message_adapter.validate_python(payload)
        except ValidationError as exc:
            self._invalid(exc, rid)
            return
        try:
            await self._dispatch(message)
        except (SessionNotFoundError, TaskNotFoundError, StreamNotFoundError) as exc:
            self._error("not_found", str(exc), request_id=rid)
        except Exception as exc:
            error = status_of(exc)
            if error.code == "internal_error":
                log.error("a WebSocket message of %s failed", self.user_id, exc_info=exc)
            self._error(
                error.code,
                error.message,
                error.details,
                retryable=error.status in _RETRYABLE,
                request_id=rid,
            )

    def _error(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retryable: bool = False,
        **ids: str | None,
    ) -> None:
        self.push(encode(error_frame(code, message, details, retryable=retryable, **ids)))

    def _invalid(self, exc: ValidationError, rid: str | None) -> None:
        errors = exc.errors(include_url=False)
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or "type", "problem": err["msg"]}
            for err in errors
        ]
        first = errors[0]
        if first["type"] == "union_tag_invalid":
            tag = first.get("ctx", {}).get("tag")
            message = f"Unknown message type {tag!r}; send one of: {_KNOWN_TYPES}."
        elif first["type"] == "union_tag_not_found":
            message = f'A message needs a "type", one of: {_KNOWN_TYPES}.'
        else:
            kind, field, problem = first["loc"][0], problems[0]["field"], problems[0]["problem"]
            message = f"Invalid {kind} message: {field}: {problem}."
        self._error("invalid_message", message, {"errors": problems}, request_id=rid)

    async def _dispatch(self, message: ClientMessage) -> None:
        match message:
            case ChatMessage():
                await self._chat(message)
            case CancelMessage():
                await self._cancel(message)
            case SubscribeMessage():
                await self._subscribe(message)
            case UnsubscribeMessage():
                self._unsubscribe(message)
            case PingMessage():
                self._reply("pong", {"ts": time.time()}, request_id=message.request_id)
            case ApproveMessage():
                await self._approve(message)

    async def _approve(self, message: ApproveMessage) -> None:
        from agent_template.api.routes.approvals import ApprovalOut

        record = await self.state.loop.approvals.answer(
            message.approval_id,
            message.decision,
            user_id=self.user_id,
            message=message.message,
            content=message.content,
        )
        self._reply(
            "approval_answered",
            ApprovalOut.of(record).model_dump(mode="json"),
            session_id=record.session_id,
            task_id=record.task_id,
            request_id=message.request_id,
        )

    async def _chat(self, message: ChatMessage) -> None:
        await _check_rate(self.state, self.user_id)
        rid = message.request_id
        self._chats += 1
        started = None
        try:
            started = await start_chat(
                self.state,
                self.user_id,
                message.content,
                session_id=message.session_id,
                model=message.model,
                priority=message.priority,
            )
        finally:
            self._chats -= 1
            if started is not None:
                task, sid = started.task, started.task.session_id
                self._deferred.pop(task.task_id, None)
                if started.session_created:
                    self._reply(
                        "session_created", {"session_id": sid}, session_id=sid, request_id=rid
                    )
                if sid is not None:
                    self._watch(sid)
                self._latest = task.task_id
                created = frame(
                    "task_created",
                    task_data(task),
                    session_id=sid,
                    task_id=task.task_id,
                    request_id=rid,
                )
                self._start_run(task.task_id, encode(created))
            if not self._chats:
                deferred, self._deferred = self._deferred, {}
                for task_id, text in deferred.items():
                    self._start_run(task_id, text)

    async def _cancel(self, message: CancelMessage) -> None:
        task_id = message.task_id or self._latest
        if task_id is None:
            raise ApiError(
                422,
                "invalid_message",
                "This connection started no task to cancel; name the task_id.",
                {"errors": [{"field": "task_id", "problem": "Field required"}]},
            )
        task = await self.state.loop.cancel_task(task_id, user_id=self.user_id)
        if task_id not in self.tasks:  # else its task_completed comes with its stream
            self._reply(
                "task_completed",
                task_data(task),
                session_id=task.session_id,
                task_id=task_id,
                request_id=message.request_id,
            )

    async def _subscribe(self, message: SubscribeMessage) -> None:
        if (message.task_id is None) == (message.session_id is None):
            raise ApiError(
                422,
                "invalid_message",
                "A subscribe names a task_id or a session_id (one of them).",
                {"errors": [{"field": "task_id", "problem": "give task_id or session_id"}]},
            )
        after = message.after_seq
        opened: list[tuple[str, StreamConsumer]] = []
        sid = message.session_id
        if message.task_id is not None:
            task_id = message.task_id
            try:
                consumer = self._open(task_id, after_seq=after, restart=True)
            except StreamNotFoundError:
                self.state.loop.get_task(task_id, user_id=self.user_id)  # not_found if unknown
                raise _not_retained(task_id) from None
            assert consumer is not None  # restart: always a new consumer
            sid = consumer.stream.info.session_id
            opened.append((task_id, consumer))
        else:
            assert sid is not None
            await self.state.sessions.get_session(sid, user_id=self.user_id)
            loop = self.state.loop
            runs = [
                t
                for t in loop.list_tasks(user_id=self.user_id, session_id=sid, state=_RUN_STATES)
                if t.parent_id is None
            ]
            if not runs and after is not None:  # resume the run that ended meanwhile
                runs = [
                    t
                    for t in loop.list_tasks(user_id=self.user_id, session_id=sid)
                    if t.parent_id is None
                ][-1:]
            for i, run in enumerate(runs):
                resume = after is not None and i == 0
                try:
                    consumer = self._open(
                        run.task_id, after_seq=after if resume else None, restart=resume
                    )
                except StreamNotFoundError:
                    if resume:
                        raise _not_retained(run.task_id) from None
                    continue
                if consumer is not None:
                    opened.append((run.task_id, consumer))
            self._watch(sid)
            self.session_runs.add(sid)
        data = {
            "session_id": sid,
            "task_id": message.task_id,
            "after_seq": after,
            "task_ids": [task_id for task_id, _ in opened],
        }
        self._reply(
            "subscribed",
            data,
            session_id=sid,
            task_id=message.task_id,
            request_id=message.request_id,
        )
        for task_id, consumer in opened:
            self._start(task_id, consumer)

    def _unsubscribe(self, message: UnsubscribeMessage) -> None:
        stopped = []
        if message.task_id is not None:
            stopped.append(message.task_id)
            self.tasks.discard(message.task_id)
        if message.session_id is not None:
            sid = message.session_id
            self.sessions.pop(sid, None)
            self.session_runs.discard(sid)
            stopped += [tid for tid, reader in self._readers.items() if reader.session_id == sid]
        for task_id in stopped:
            reader = self._readers.pop(task_id, None)
            self._completions.pop(task_id, None)
            if reader is not None:
                reader.task.cancel()
        data = {"session_id": message.session_id, "task_id": message.task_id}
        self._reply("unsubscribed", data, request_id=message.request_id)


def _not_retained(task_id: str) -> ApiError:
    return ApiError(
        410,
        "not_retained",
        f"The stream of task '{task_id}' is no longer kept, so it cannot be replayed; the "
        "answer is in the session's messages.",
        {"task_id": task_id},
    )


class _Hub:
    """Hands bus events to the connections that follow them: one bus listener per server,
    each event's frame encoded once however many connections get it."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.by_user: dict[str, set[Connection]] = {}
        self._remove: Callable[[], None] | None = None

    def add(self, connection: Connection) -> None:
        if self._remove is None:
            self._remove = self.bus.add_listener(self._on_event, types=_BUS_TYPES)
        self.by_user.setdefault(connection.user_id, set()).add(connection)

    def discard(self, connection: Connection) -> None:
        mine = self.by_user.get(connection.user_id)
        if mine is not None:
            mine.discard(connection)
            if not mine:
                del self.by_user[connection.user_id]
        if not self.by_user and self._remove is not None:
            self._remove()
            self._remove = None

    def _on_event(self, event: BusEventBase) -> None:
        user = event.user_id
        if user is not None:
            targets: Any = self.by_user.get(user)
            if not targets:
                return
        else:  # an event that names no user (compaction): its session was checked as theirs
            targets = [c for mine in self.by_user.values() for c in mine]
        text: str | None = None
        for connection in tuple(targets):
            if connection.follows(event):
                if text is None:
                    payload = bus_frame(event)
                    if payload is None:
                        return
                    text = encode(payload)
                connection.on_bus(event, text)


_hubs: weakref.WeakKeyDictionary[ServerState, _Hub] = weakref.WeakKeyDictionary()


def _hub(state: ServerState) -> _Hub:
    hub = _hubs.get(state)
    if hub is None:
        hub = _hubs[state] = _Hub(state.bus)
    return hub
