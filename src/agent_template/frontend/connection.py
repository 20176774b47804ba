"""The client's WebSocket link to an ``agent-server`` (``/ws``, see ``docs/protocol.md``).

:class:`Connection` keeps one WebSocket open, hands every server frame to a single consumer
(:meth:`Connection.events`) and survives outages: when the link drops it reconnects with
capped exponential backoff and jitter, follows its sessions again and resumes every stream
it was reading from the last chunk number it delivered, so text is never lost or doubled.
Messages sent while reconnecting wait in a bounded queue and go out once the link is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from agent_template.api.protocol import PROTOCOL_VERSION, ServerFrame, parse_frame

__all__ = ["ClientError", "Connection", "Hello", "LinkChanged", "LinkState", "ws_url"]

TOKEN_HINT: Final = (
    "Create a token with `agent-template token create --user NAME`, then pass it with "
    "--token or AGENT_CLIENT_TOKEN."
)
UNREACHABLE_HINT: Final = (
    "Start one with `agent-server`, check --url, or leave --url out to run a local server."
)
_UNAUTHORIZED: Final = frozenset({"auth_required", "invalid_token", "loopback_only"})
_RETRY_LATER: Final = frozenset({"not_ready", "shutting_down", "rate_limited"})
_CLOSE_RESTART: Final = 1012
_CLOSE_TRY_LATER: Final = 1013
_CLOSE_POLICY: Final = 1008
_OPEN_TIMEOUT_S: Final = 10.0
_OUTBOX_LIMIT: Final = 256  # messages kept while reconnecting
_DONE_KEPT: Final = 512  # finished streams whose last chunk number is remembered
_RESUME_TASK: Final = "resume:task:"  # request ids of the re-subscriptions after a reconnect
_RESUME_SESSION: Final = "resume:session:"
_SILENT_BEATS: Final = 2.5  # heartbeat intervals without a frame before the link is dead


class LinkState(StrEnum):
    """The connection's state, as the status bar shows it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The connection's state changed (yielded by :meth:`Connection.events`)."""

    state: LinkState
    detail: str = ""
    attempt: int = 0
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class Hello:
    """What the server's ``hello`` frame says."""

    user_id: str
    protocol: int
    server_version: str
    heartbeat_s: float
    max_message_bytes: int


class ClientError(Exception):
    """A failure the user must see: ``code`` to branch on, ``message`` saying what went wrong
    and ``hint`` saying what to do about it."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class _Retry(Exception):
    """The attempt failed in a way that may pass: try again after ``delay`` seconds."""

    def __init__(self, detail: str, delay: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.delay = delay


def ws_url(url: str) -> str:
    """The WebSocket URL of a server given by its ``http(s)://`` base or ``ws(s)://`` URL.

    Raises:
        ClientError: ``invalid_url`` for anything else.
    """
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ClientError(
            "invalid_url",
            f"'{url}' is not a server URL.",
            "Give one like http://127.0.0.1:8000 or ws://127.0.0.1:8000/ws.",
        )
    path = parts.path.rstrip("/")
    if parts.scheme.lower() in ("http", "https") or not path.endswith("/ws"):
        path = f"{path}/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _refusal(frame: ServerFrame) -> ClientError | _Retry:
    data = frame.data
    code = str(data.get("code") or "refused")
    message = str(data.get("message") or "The server refused the connection.")
    if code in _UNAUTHORIZED:
        hint = TOKEN_HINT
        if code == "loopback_only":
            hint = "Run the server with AUTH_REQUIRED=true and connect with a token."
        return ClientError("unauthorized", message, hint)
    if code in _RETRY_LATER or data.get("retryable"):
        delay = (data.get("details") or {}).get("retry_after_s")
        return _Retry(message, float(delay) if isinstance(delay, (int, float)) else None)
    return ClientError(code, message, "")


def _hello(frame: ServerFrame) -> Hello:
    data = frame.data
    protocol = data.get("protocol")
    if protocol != PROTOCOL_VERSION:
        raise ClientError(
            "protocol_mismatch",
            f"The server speaks protocol {protocol}; this client speaks {PROTOCOL_VERSION}.",
            "Upgrade agent-template so the client and the server are the same release.",
        )
    return Hello(
        user_id=str(data.get("user_id") or ""),
        protocol=PROTOCOL_VERSION,
        server_version=str(data.get("server_version") or ""),
        heartbeat_s=float(data.get("heartbeat_s") or 20.0),
        max_message_bytes=int(data.get("max_message_bytes") or 1 << 20),
    )


class Connection:
    """A resilient WebSocket link to one server (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        reconnect: bool = True,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.url = ws_url(url)
        self.token = token
        self.reconnect = reconnect
        self.max_backoff_s = max_backoff_s
        self.state = LinkState.CLOSED
        self.hello: Hello | None = None
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue[ServerFrame | LinkChanged | None] = asyncio.Queue()
        self._outbox: deque[str] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._ids = itertools.count(1)
        self._sessions: dict[str, None] = {}  # followed sessions, in order
        self._live: dict[str, str | None] = {}  # streams being read: task_id -> session_id
        self._delivered: OrderedDict[str, int] = OrderedDict()  # task_id -> last chunk number
        self._last_frame = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> Hello:
        """Connect and start reading: the first time, or again after the link was closed
        (a refusal, or ``reconnect=False`` and a drop). Sessions followed before are
        followed again, from the last chunk delivered.

        Raises:
            ClientError: ``server_unreachable``, ``unauthorized``, ``protocol_mismatch``...
        """
        if self._runner is not None and not self._runner.done():
            assert self.hello is not None
            return self.hello
        self._closing = False
        self._set(LinkState.CONNECTING)
        attempt = 0
        while True:
            try:
                hello = await self._connect()
                break
            except _Unreachable as exc:
                self._set(LinkState.CLOSED, exc.detail)
                raise _unreachable_error(exc) from None
            except _Retry as retry:  # the server is starting or busy: wait a little
                attempt += 1
                if attempt > 5:
                    self._set(LinkState.CLOSED, retry.detail)
                    raise ClientError(
                        "server_busy", retry.detail, "Try again in a moment."
                    ) from None
                await asyncio.sleep(retry.delay or min(0.5 * 2**attempt, 5.0))
            except ClientError as error:
                self._set(LinkState.CLOSED, error.message)
                raise
        self._set(LinkState.CONNECTED)
        self._runner = asyncio.create_task(self._run(), name="agent-client link")
        return hello

    async def close(self) -> None:
        """Close the link for good; :meth:`events` ends after what is queued."""
        self._closing = True
        runner, self._runner = self._runner, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        if self.state is not LinkState.CLOSED:
            self._set(LinkState.CLOSED, "closed")
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[ServerFrame | LinkChanged]:
        """Every server frame in order (duplicates dropped) and every state change; ends
        after :meth:`close`. Only one consumer may iterate."""
        while True:
            item = await self._events.get()
            if item is None:
                return
            yield item

    # ------------------------------------------------------------------ messages

    async def chat(
        self,
        content: str,
        *,
        session_id: str | None,
        model: str | None = None,
        priority: str | None = None,
    ) -> str:
        """Start a chat turn; returns its ``request_id`` (the frames answering it carry it)."""
        rid = f"c{next(self._ids)}"
        message: dict[str, Any] = {"type": "chat", "content": content, "request_id": rid}
        if session_id is not None:
            message["session_id"] = session_id
            self._follow(session_id)
        if model:
            message["model"] = model
        if priority is not None:
            message["priority"] = priority
        await self._send(message)
        return rid

    async def cancel(self, task_id: str) -> None:
        """Cancel a task; its stream ends with ``stream_complete`` (status ``cancelled``)."""
        await self._send({"type": "cancel", "task_id": task_id, "request_id": self._rid("x")})

    async def approve(
        self,
        approval_id: str,
        decision: Literal["approve", "deny", "always"],
        message: str | None = None,
    ) -> None:
        """Answer an approval request of one of the user's runs."""
        payload: dict[str, Any] = {
            "type": "approve",
            "approval_id": approval_id,
            "decision": decision,
            "request_id": self._rid("a"),
        }
        if message:
            payload["message"] = message
        await self._send(payload)

    async def subscribe(self, session_id: str, after_seq: int | None = None) -> None:
        """Follow a session: its events, its current run and every later one."""
        self._follow(session_id)
        payload: dict[str, Any] = {
            "type": "subscribe",
            "session_id": session_id,
            "request_id": self._rid("s"),
        }
        if after_seq is not None:
            payload["after_seq"] = after_seq
        await self._send(payload)

    async def unsubscribe(self, session_id: str) -> None:
        """Stop following a session and the runs it was streaming."""
        self._sessions.pop(session_id, None)
        for task_id in [t for t, s in self._live.items() if s == session_id]:
            del self._live[task_id]
        await self._send(
            {"type": "unsubscribe", "session_id": session_id, "request_id": self._rid("u")}
        )

    def _rid(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _follow(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._sessions[session_id] = None

    async def _send(self, message: dict[str, Any]) -> None:
        if self._closing or self.state is LinkState.CLOSED:
            raise ClientError(
                "not_connected", "The client is not connected to the server.", "Reconnect."
            )
        text = json.dumps(message, ensure_ascii=False)
        ws = self._ws
        if ws is not None and self.state is LinkState.CONNECTED and not self._outbox:
            try:
                await ws.send(text)
                return
            except ConnectionClosed:
                pass  # the reader notices and reconnects; the message waits for it
        if len(self._outbox) >= _OUTBOX_LIMIT:
            raise ClientError(
                "outbox_full",
                f"{_OUTBOX_LIMIT} messages are waiting for the connection to come back.",
                "Wait for the link to return before sending more.",
            )
        self._outbox.append(text)

    # ------------------------------------------------------------------ the link

    def _set(self, state: LinkState, detail: str = "", **extra: Any) -> None:
        self.state = state
        self._events.put_nowait(LinkChanged(state, detail, **extra))

    async def _connect(self) -> Hello:
        """One connection attempt up to the ``hello`` frame. Raises _Retry or ClientError."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                max_size=None,
                open_timeout=_OPEN_TIMEOUT_S,
                close_timeout=2.0,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ClientError(
                    "unauthorized", f"The server refused the connection ({status}).", TOKEN_HINT
                ) from None
            if status in (429, 502, 503, 504):
                raise _Retry(f"the server answered {status}") from None
            raise ClientError(
                "server_unreachable",
                f"{self.url} is not an agent-server WebSocket (it answered {status}).",
                UNREACHABLE_HINT,
            ) from None
        except InvalidURI as exc:
            raise ClientError("invalid_url", str(exc), "Check --url.") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Unreachable(self.url, exc) from None
        try:
            raw = await asyncio.wait_for(ws.recv(), _OPEN_TIMEOUT_S)
            first = parse_frame(raw)
        except (ConnectionClosed, TimeoutError, ValidationError, ValueError) as exc:
            await ws.close()
            raise _Retry(f"no hello from the server: {exc}") from None
        if first.type == "error":
            await ws.close()
            raise _refusal(first)
        if first.type != "hello":
            await ws.close()
            raise ClientError(
                "protocol_mismatch",
                f"The server's first frame is '{first.type}', not 'hello'.",
                "Check --url names an agent-server.",
            )
        try:
            hello = _hello(first)
        except ClientError:
            await ws.close()
            raise
        self._ws, self.hello = ws, hello
        self._last_frame = time.monotonic()
        return hello

    async def _run(self) -> None:
        """Read frames; on a lost link reconnect, resume and go on, until closed."""
        while not self._closing:
            ws = self._ws
            assert ws is not None
            reason = await self._read(ws)
            self._ws = None
            if self._closing:
                return
            if not self.reconnect:
                self._set(LinkState.CLOSED, reason[0])
                return
            if not await self._reconnect(*reason):
                return

    async def _read(self, ws: ClientConnection) -> tuple[str, float | None]:
        """Deliver the link's frames until it drops: why, and how soon to retry."""
        watchdog = asyncio.create_task(self._watch(ws))
        try:
            await self._resume(ws)
            async for raw in ws:
                self._last_frame = time.monotonic()
                try:
                    frame = parse_frame(raw)
                except (ValidationError, ValueError):
                    continue  # not a frame of this protocol: ignore it, as for unknown types
                self._deliver(frame)
        except ConnectionClosed:
            pass
        except OSError as exc:
            return f"connection lost: {exc}", None
        finally:
            watchdog.cancel()
        close = ws.protocol.close_rcvd
        if close is None:
            return "connection lost", None
        if close.code == _CLOSE_RESTART:
            return "server restarting", 0.2
        if close.code == _CLOSE_TRY_LATER:
            return f"server busy: {close.reason or 'try again later'}", 2.0
        if close.code == _CLOSE_POLICY:
            return f"refused: {close.reason}", None
        return f"connection closed ({close.code}{' ' + close.reason if close.reason else ''})", None

    async def _watch(self, ws: ClientConnection) -> None:
        """Close a link that went silent: no frame for a few heartbeat intervals."""
        beat = self.hello.heartbeat_s if self.hello else 20.0
        limit = beat * _SILENT_BEATS
        while True:
            await asyncio.sleep(beat / 2)
            if time.monotonic() - self._last_frame > limit:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(1001, "no frame from the server"), 1.0)
                ws.transport.abort()
                return

    async def _reconnect(self, detail: str, first_delay: float | None) -> bool:
        """Reconnect with backoff until it works (True) or cannot (False: closed)."""
        attempt = 0
        delay = first_delay
        while not self._closing:
            attempt += 1
            if delay is None:
                delay = min(self.max_backoff_s, 0.25 * 2 ** min(attempt, 16))
                delay *= random.uniform(0.7, 1.0)
            self._set(LinkState.RECONNECTING, detail, attempt=attempt, retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)
            delay = None
            try:
                await self._connect()
            except _Retry as retry:  # unreachable, starting, busy: keep trying
                detail, delay = retry.detail, retry.delay
                continue
            except ClientError as error:  # a revoked token, an upgraded server...
                self._set(LinkState.CLOSED, f"{error.message} {error.hint}".strip())
                return False
            self._set(LinkState.CONNECTED, "reconnected", attempt=attempt)
            return True
        return False

    async def _resume(self, ws: ClientConnection) -> None:
        """Follow again what the link followed before, then send the waiting messages."""
        for task_id, session_id in list(self._live.items()):
            after = self._delivered.get(task_id)
            message: dict[str, Any] = {"type": "subscribe", "task_id": task_id}
            if after is not None:
                message["after_seq"] = after
            message["request_id"] = f"{_RESUME_TASK}{task_id}"
            await ws.send(json.dumps(message))
            if session_id is not None:
                self._follow(session_id)
        for session_id in list(self._sessions):
            message = {"type": "subscribe", "session_id": session_id}
            message["request_id"] = f"{_RESUME_SESSION}{session_id}"
            await ws.send(json.dumps(message))
        while self._outbox:
            await ws.send(self._outbox[0])
            self._outbox.popleft()

    def _deliver(self, frame: ServerFrame) -> None:
        task_id = frame.task_id
        kind = frame.type
        if frame.seq is not None and task_id is not None:
            last = frame.last_seq or frame.seq
            seen = self._delivered.get(task_id, 0)
            if last <= seen:
                return  # delivered already (a replay after a reconnect)
            self._delivered[task_id] = last
            if kind == "stream_complete":
                self._live.pop(task_id, None)
                self._delivered.move_to_end(task_id)
                while len(self._delivered) > _DONE_KEPT:
                    oldest = next(iter(self._delivered))
                    if oldest in self._live:
                        break
                    del self._delivered[oldest]
            else:
                self._live.setdefault(task_id, frame.session_id)
        elif kind == "task_created" and task_id is not None:
            if task_id not in self._delivered:
                self._live[task_id] = frame.session_id
            if frame.session_id:
                self._follow(frame.session_id)
        elif kind == "session_created" and frame.session_id:
            self._follow(frame.session_id)
        elif kind == "session_deleted" and frame.session_id:
            self._sessions.pop(frame.session_id, None)
        elif kind == "error" and frame.request_id and frame.request_id.startswith("resume:"):
            reported = self._resume_failed(frame)
            if reported is not None:
                self._events.put_nowait(reported)
            return
        self._events.put_nowait(frame)

    def _resume_failed(self, frame: ServerFrame) -> ServerFrame | None:
        """A refused re-subscription: a session that is gone is no longer followed (nothing
        to tell); a stream no longer kept (the server restarted, or it ended long ago) is
        reported as an error of that task: the rest of its answer is in the history."""
        rid = frame.request_id or ""
        if rid.startswith(_RESUME_SESSION):
            self._sessions.pop(rid.removeprefix(_RESUME_SESSION), None)
            return None
        task_id = rid.removeprefix(_RESUME_TASK)
        session_id = self._live.pop(task_id, None)
        data = {
            **frame.data,
            "message": "The rest of this answer can no longer be streamed; it is in the "
            "session's history.",
        }
        return frame.model_copy(update={"task_id": task_id, "session_id": session_id, "data": data})


class _Unreachable(_Retry):
    """The server could not be reached (refused, timed out): retried after a reconnect,
    a ClientError at the first :meth:`Connection.open`."""

    def __init__(self, url: str, exc: BaseException) -> None:
        super().__init__(f"cannot reach {url}: {exc}")
        self.url = url


def _unreachable_error(exc: _Unreachable) -> ClientError:
    return ClientError(
        "server_unreachable", f"No agent-server answers at {exc.url}.", UNREACHABLE_HINT
    )
