"""A local HTTP server that speaks the OpenAI and Anthropic wire formats, for provider tests.

The official SDKs talk to it over real HTTP, so the error paths (429, 5xx, malformed SSE, a
stalled or dropped connection) run through the same code as against the real services::

    def test_something(wire_server: WireServer) -> None:
        wire_server.script(Reply("hello"), Fault(429, retry_after=2))
        client = AsyncOpenAI(base_url=wire_server.openai_base_url, api_key="k", max_retries=0)

Scripted items are consumed one per request, in order, by either route. With the script empty the
server echoes the last user message. Every request is recorded in :attr:`WireServer.requests`. A
request the real API would refuse is rejected with 400 in the provider's error format (such a
request consumes no script item): tool calls and results that do not pair up, content parts of an
unknown shape, ``reasoning_content`` sent back to the OpenAI route, and on the Anthropic route
thinking blocks that are not in front of the turn's other blocks or whose signature (or redacted
data) this server did not issue with exactly that text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "Drop",
    "Fault",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Stall",
    "WireServer",
    "wire_server",
]

_STARTUP_TIMEOUT_S = 5.0
_SHUTDOWN_GRACE_S = 1  # stalled handlers need not finish; nobody waits for their answers
_STALL_POLL_S = 0.05  # how soon a stalled handler notices that the server stops

Wire: TypeAlias = Literal["openai", "anthropic"]


# --------------------------------------------------------------------------- script items


@dataclass(slots=True)
class Reply:
    """A successful answer: text streamed in ``text_chunk``-character deltas, then tool calls.

    Each tool call's arguments (a dict, or raw JSON text) arrive in ``args_chunk``-character
    pieces. ``usage`` is (input tokens, output tokens); ``model`` defaults to the request's.
    ``delay`` is the pause in seconds before each streamed chunk, to imitate a slow model.

    ``reasoning`` comes before the text, in ``text_chunk``-character pieces: on the OpenAI route
    as ``reasoning_field`` (DeepSeek's ``reasoning_content``, or ``reasoning``), on the Anthropic
    route as a ``thinking`` block signed with ``signature`` (``signature_delta`` when streamed),
    followed by a ``redacted_thinking`` block for each item of ``redacted``.

    ``keepalive`` SSE comment lines (``: keep-alive``) come first, each after ``delay``: bytes
    that keep a read timeout from firing, though no event arrives.
    """

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    usage: tuple[int, int] = (10, 5)
    text_chunk: int = 4
    args_chunk: int = 3
    model: str | None = None
    delay: float = 0.0
    reasoning: str = ""
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    signature: str = "wire-signature"
    redacted: list[str] = field(default_factory=list)
    keepalive: int = 0


@dataclass(slots=True)
class Fault:
    """An HTTP error in the provider's own error-body format, with ``Retry-After`` if given."""

    status: int
    retry_after: float | None = None
    message: str = "scripted failure"


@dataclass(slots=True)
class Drop:
    """A 200 SSE stream that sends ``after_chunks`` events of ``reply`` and then breaks off.

    ``reply`` defaults to the echo answer. The first chunk carries no text (OpenAI's role chunk,
    Anthropic's ``message_start``), so ``Drop(1)`` breaks before any text was sent.
    """

    after_chunks: int
    reply: Reply | None = None


@dataclass(slots=True)
class Malformed:
    """A 200 SSE stream whose data line is not JSON."""


@dataclass(slots=True)
class Stall:
    """Wait ``seconds`` (without blocking other requests), then answer with ``then`` or the echo."""

    seconds: float
    then: Reply | Fault | None = None


ScriptItem: TypeAlias = Reply | Fault | Drop | Malformed | Stall


class RecordedRequest(NamedTuple):
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


# --------------------------------------------------------------------------- the server


class WireServer:
    """Starlette app served by uvicorn on 127.0.0.1 and an ephemeral port, in its own thread.

    Usable from sync and async tests (it has its own event loop) and from subprocesses (point
    ``OPENAI_BASE_URL`` at :attr:`openai_base_url` or ``ANTHROPIC_BASE_URL`` at
    :attr:`anthropic_base_url`).
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: deque[ScriptItem] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self._stopping = False
        # Thinking this server sent (signature -> text) and redacted data, which alone may
        # come back: the real API checks signatures the same way.
        self._signed: dict[str, str] = {}
        self._redacted: set[str] = set()
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> WireServer:
        """Bind an ephemeral port and serve in a background thread; returns when it accepts."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        config = uvicorn.Config(
            self.app,
            http="h11",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="wire-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the wire server did not start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._stopping = True
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=_SHUTDOWN_GRACE_S + 5)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None
        self._stopping = False

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the wire server is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # ------------------------------------------------------------------ scripting

    def script(self, *items: ScriptItem) -> None:
        """Queue answers for the next requests, one item per request, in order."""
        with self._lock:
            self._script.extend(items)

    def clear(self) -> None:
        """Forget the recorded requests, unconsumed script items and issued signatures."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self._signed.clear()
            self._redacted.clear()

    @property
    def pending(self) -> int:
        """Script items not yet consumed."""
        return len(self._script)

    def paths(self) -> list[str]:
        """The paths of the recorded requests, in order."""
        return [r.path for r in self.requests]

    def _record(self, request: RecordedRequest, *, consume: bool) -> tuple[ScriptItem | None, int]:
        """Record a request; take the next script item for it unless it is rejected."""
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            item = self._script.popleft() if consume and self._script else None
            return item, self._counter

    # ------------------------------------------------------------------ routes

    async def _stall(self, seconds: float) -> None:
        """Sleep, but give up when the server stops, so shutdown need not cancel anybody."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, _STALL_POLL_S))

    def _check_thinking(self, body: dict[str, Any]) -> str | None:
        """Thinking blocks sent back must be ours, unchanged, and before the turn's other blocks."""
        for i, message in enumerate(body.get("messages") or []):
            content = message.get("content")
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            kinds = [b.get("type") for b in content if isinstance(b, dict)]
            thoughts = [k for k in kinds if k in ("thinking", "redacted_thinking")]
            if kinds[: len(thoughts)] != thoughts:
                return (
                    f"messages.{i}.content: thinking blocks must come before the other blocks "
                    "of the assistant turn"
                )
            for j, block in enumerate(content[: len(thoughts)]):
                if block.get("type") == "thinking":
                    signed = self._signed.get(block.get("signature") or "")
                    if signed is None or signed != block.get("thinking"):
                        return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                elif block.get("data") not in self._redacted:
                    return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
        return None

    async def _openai(self, request: Request) -> Response:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: Request) -> Response:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: Request, wire: Wire) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(wire, 400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(wire, 400, "the request body is not a JSON object")
        if wire == "openai":
            problem = _validate_openai(body)
        else:
            problem = _validate_anthropic(body) or self._check_thinking(body)
        recorded = RecordedRequest(request.url.path, body, dict(request.headers))
        item, number = self._record(recorded, consume=not problem)
        if problem:
            return _error(wire, 400, problem)
        if isinstance(item, Stall):
            await self._stall(item.seconds)
            item = item.then
        if isinstance(item, Fault):
            return _error(wire, item.status, item.message, item.retry_after)
        if isinstance(item, Malformed):
            event = "" if wire == "openai" else "event: content_block_delta\n"
            return _SSEResponse([f"{event}data: {{not json\n\n".encode()])
        drop_after: int | None = None
        if isinstance(item, Drop):
            drop_after, item = item.after_chunks, item.reply
        reply = item if item is not None else Reply(f"echo: {_last_user_text(body, wire)}")
        model = reply.model or str(body.get("model", "wire-model"))
        if wire == "anthropic":
            with self._lock:
                if reply.reasoning:
                    self._signed[reply.signature] = reply.reasoning
                self._redacted.update(reply.redacted)
        if not body.get("stream"):
            build = _openai_json if wire == "openai" else _anthropic_json
            return JSONResponse(build(reply, model, number))
        if wire == "openai":
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = list(_openai_chunks(reply, model, number, include_usage))
        else:
            chunks = list(_anthropic_chunks(reply, model, number))
        chunks = [b": keep-alive\n\n"] * reply.keepalive + chunks
        if drop_after is not None:
            return _SSEResponse(chunks[:drop_after], drop=True)
        return _SSEResponse(chunks, delay=reply.delay)


class _DropConnection(Exception):
    """Raised inside the response so uvicorn closes the connection mid-body."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging the deliberate drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DropConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class _SSEResponse(Response):
    """Sends each chunk as its own body part; with ``drop`` it breaks off instead of ending."""

    def __init__(self, chunks: list[bytes], *, drop: bool = False, delay: float = 0.0) -> None:
        # No super().__init__: it would declare a Content-Length; the body is sent chunked.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]
        self.chunks = chunks
        self.drop = drop
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if self.delay:
            await self._send_slowly(receive, send)
            return
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.drop:
            # After the response started, uvicorn answers an exception by closing the socket
            # without the final empty chunk, so the client sees a body cut short.
            raise _DropConnection
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_slowly(self, receive: Receive, send: Send) -> None:
        """Pause before each chunk; stop as soon as the client goes away."""
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            for chunk in self.chunks:
                await asyncio.sleep(self.delay)
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


# --------------------------------------------------------------------------- errors

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error(wire: Wire, status: int, message: str, retry_after: float | None = None) -> Response:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
    if wire == "openai":
        kind, code = _OPENAI_ERROR_TYPES.get(status, ("server_error", "server_error"))
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "code": code}}
    else:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


# --------------------------------------------------------------------------- history checks


def _validate_openai(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    if not body.get("model"):
        return "'model' is required"
    waiting: dict[str, None] = {}  # calls of the last assistant message not yet answered
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}]: unknown role {role!r}"
        if problem := _openai_content_problem(i, message):
            return problem
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                return (
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceding "
                    f"message with 'tool_calls'; no tool call has id {call_id!r}"
                )
            del waiting[call_id]
            continue
        if waiting:
            return (
                "an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing: {', '.join(waiting)}"
            )
        if role == "assistant":
            calls = message.get("tool_calls") or []
            waiting = {str(call.get("id")): None for call in calls}
            if not calls and message.get("content") is None:
                return f"messages[{i}]: an assistant message needs content or tool_calls"
    if waiting:
        return (
            "an assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'; missing: {', '.join(waiting)}"
        )
    return None


def _openai_content_problem(i: int, message: dict[str, Any]) -> str | None:
    """What is wrong with a message's content parts, as the API would say it, or None."""
    if "reasoning_content" in message:
        return f"messages[{i}]: reasoning_content must not be sent back in the input"
    content = message.get("content")
    if not isinstance(content, list):
        return None
    allowed = {"text"} if message.get("role") in ("tool", "system") else {"text", "image_url"}
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            return f"messages[{i}].content[{j}]: invalid content part type {kind!r}"
        if kind == "text" and not isinstance(part.get("text"), str):
            return f"messages[{i}].content[{j}].text: must be a string"
        if kind == "image_url" and not str((part.get("image_url") or {}).get("url", "")).strip():
            return f"messages[{i}].content[{j}].image_url.url: required"
    return None


_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _anthropic_block_problem(where: str, block: Any) -> str | None:
    if not isinstance(block, dict):
        return f"{where}: must be an object"
    kind = block.get("type")
    if kind == "text" and not block.get("text"):
        return f"{where}.text: text content blocks must be non-empty"
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in _IMAGE_TYPES or not source.get("data"):
                return f"{where}.source: base64 images need media_type and data"
        elif source.get("type") != "url" or not source.get("url"):
            return f"{where}.source: expected a base64 or url source"
    if kind == "tool_result" and isinstance(block.get("content"), list):
        for k, inner in enumerate(block["content"]):
            if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                return f"{where}.content.{k}: tool results take text and image blocks"
            if problem := _anthropic_block_problem(f"{where}.content.{k}", inner):
                return problem
    return None


def _blocks(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def _validate_anthropic(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: must be a non-empty list"
    if not body.get("model"):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    expected: set[str] = set()  # tool_use ids of the previous assistant message
    seen: set[str] = set()  # every tool_use id so far: the API wants them unique
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant' (got {role!r})"
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if problem := _anthropic_block_problem(f"messages.{i}.content.{j}", block):
                return problem
        results = {b.get("tool_use_id") for b in _blocks(message, "tool_result")}
        if role == "assistant" and results:
            return f"messages.{i}: tool_result blocks belong in a user message"
        if unexpected := results - expected:
            return (
                f"messages.{i}.content: unexpected tool_use_id found in tool_result blocks: "
                f"{', '.join(sorted(map(str, unexpected)))}. Each tool_result block must have a "
                "corresponding tool_use block in the previous message."
            )
        if missing := expected - results:
            return (
                f"messages.{i}: tool_use ids were found without tool_result blocks immediately "
                f"after: {', '.join(sorted(missing))}. Each tool_use block must have a "
                "corresponding tool_result block in the next message."
            )
        uses = _blocks(message, "tool_use") if role == "assistant" else []
        expected = {str(b.get("id")) for b in uses}
        if repeated := expected & seen:
            return f"messages.{i}: tool_use ids must be unique: {', '.join(sorted(repeated))}"
        seen |= expected
    if expected:
        return (
            "tool_use ids were found without tool_result blocks immediately after: "
            f"{', '.join(sorted(expected))}"
        )
    return None


def _last_user_text(body: dict[str, Any], wire: Wire) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content or [] if b.get("type") == "text"]
        if texts:
            return "".join(texts)
    return ""


# --------------------------------------------------------------------------- answers


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _arguments(args: dict[str, Any] | str) -> str:
    return args if isinstance(args, str) else json.dumps(args)


def _openai_chunks(reply: Reply, model: str, number: int, include_usage: bool) -> Iterator[bytes]:
    base = {
        "id": f"chatcmpl-wire-{number}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.reasoning, reply.text_chunk):
        yield chunk({reply.reasoning_field: piece})
    for piece in _pieces(reply.text, reply.text_chunk):
        yield chunk({"content": piece})
    for index, (name, args) in enumerate(reply.tool_calls):
        start = {"index": index, "id": f"call_{number}_{index}", "type": "function"}
        yield chunk({"tool_calls": [{**start, "function": {"name": name, "arguments": ""}}]})
        for piece in _pieces(_arguments(args), reply.args_chunk):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if include_usage:
        prompt, completion = reply.usage
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _openai_json(reply: Reply, model: str, number: int) -> dict[str, Any]:
    calls = [
        {
            "id": f"call_{number}_{index}",
            "type": "function",
            "function": {"name": name, "arguments": _arguments(args)},
        }
        for index, (name, args) in enumerate(reply.tool_calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message[reply.reasoning_field] = reply.reasoning
    if calls:
        message["tool_calls"] = calls
    prompt, completion = reply.usage
    return {
        "id": f"chatcmpl-wire-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


def _anthropic_chunks(reply: Reply, model: str, number: int) -> Iterator[bytes]:
    message = _anthropic_json(Reply(usage=(reply.usage[0], 1)), model, number)
    message.update(content=[], stop_reason=None)
    yield _sse("message_start", {"message": message})
    index = 0
    if reply.reasoning:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        yield _sse("content_block_start", {"index": index, "content_block": block})
        for piece in _pieces(reply.reasoning, reply.text_chunk):
            delta = {"type": "thinking_delta", "thinking": piece}
            yield _sse("content_block_delta", {"index": index, "delta": delta})
        delta = {"type": "signature_delta", "signature": reply.signature}
        yield _sse("content_block_delta", {"index": index, "delta": delta})
        yield _sse("content_block_stop", {"index": index})
        index += 1
    for data in reply.redacted:
        block = {"type": "redacted_thinking", "data": data}
        yield _sse("content_block_start", {"index": index, "content_block": block})
        yield _sse("content_block_stop", {"index": index})
        index += 1
    if reply.text:
        yield _sse(
            "content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}
        )
        for piece in _pieces(reply.text, reply.text_chunk):
            yield _sse(
                "content_block_delta",
                {"index": index, "delta": {"type": "text_delta", "text": piece}},
            )
        yield _sse("content_block_stop", {"index": index})
        index += 1
    for offset, (name, args) in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": f"toolu_{number}_{offset}", "name": name, "input": {}}
        yield _sse("content_block_start", {"index": index, "content_block": block})
        for piece in _pieces(_arguments(args), reply.args_chunk):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _sse("content_block_delta", {"index": index, "delta": delta})
        yield _sse("content_block_stop", {"index": index})
        index += 1
    stop = "tool_use" if reply.tool_calls else "end_turn"
    yield _sse(
        "message_delta",
        {
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": reply.usage[1]},
        },
    )
    yield _sse("message_stop", {})


def _anthropic_json(reply: Reply, model: str, number: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        content.append(
            {"type": "thinking", "thinking": reply.reasoning, "signature": reply.signature}
        )
    content.extend({"type": "redacted_thinking", "data": data} for data in reply.redacted)
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for offset, (name, args) in enumerate(reply.tool_calls):
        tool_input = json.loads(args) if isinstance(args, str) else args
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{number}_{offset}",
                "name": name,
                "input": tool_input,
            }
        )
    return {
        "id": f"msg_wire_{number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]},
    }


# --------------------------------------------------------------------------- fixture

_SERVER_KEY = pytest.StashKey[WireServer]()


def _shared(config: pytest.Config) -> WireServer:
    server = config.stash.get(_SERVER_KEY, None)
    if server is None:
        server = WireServer().start()
        config.stash[_SERVER_KEY] = server
        config.add_cleanup(server.stop)
    return server


@pytest.fixture
def wire_server(request: pytest.FixtureRequest) -> Iterator[WireServer]:
    """The session's wire server, with an empty script and no recorded requests."""
    server = _shared(request.config)
    server.clear()
    yield server
    server.clear()
