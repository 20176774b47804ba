"""Request and response bodies of the REST API, apart from storage rows and core models.

Every list answers one shape, :class:`Page`: ``{"items": [...], "next_cursor": str | null}``.
Ask for a page with ``?limit=`` (1 to 200, default 50) and pass the ``next_cursor`` of one
page as ``?cursor=`` to get the next; ``next_cursor`` is null on the last page. A cursor is
opaque: it belongs to the list that returned it and may change form between releases.

Each model carries an example, so every route of ``/openapi.json`` shows one; the error
responses of each route are declared by :func:`error_responses`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_template.api.errors import ApiError, error_body
from agent_template.models import ContentPart, TaskPriority, TaskState

__all__ = [
    "AUTH_ERRORS",
    "BODY_ERRORS",
    "CURSOR_ERROR",
    "MAX_PAGE",
    "AssistantReply",
    "ChatRequest",
    "CompactionOut",
    "ErrorBody",
    "ErrorInfo",
    "MessageCreate",
    "MessageOut",
    "MessagePage",
    "MessageReply",
    "Page",
    "PageQuery",
    "Paging",
    "SessionCreate",
    "SessionOut",
    "SessionPage",
    "SessionUpdate",
    "TaskAccepted",
    "TaskCreate",
    "TaskOut",
    "TaskPage",
    "TodoOut",
    "TodoPage",
    "ToolCallOut",
    "ToolCallRequest",
    "ToolCallResult",
    "ToolOut",
    "ToolPage",
    "UsageOut",
    "decode_cursor",
    "encode_cursor",
    "error_responses",
    "invalid_cursor",
    "page_of",
]

T = TypeVar("T")

DEFAULT_PAGE = 50
MAX_PAGE = 200
_MAX_CURSOR_CHARS = 512
_MAX_ID_CHARS = 200  # session ids are the client's choice; this bounds them (as on /ws)
_MAX_TITLE_CHARS = 200

SessionId = Annotated[str, Field(min_length=1, max_length=_MAX_ID_CHARS)]

_EXAMPLE_SESSION = "demo_session"
_EXAMPLE_TASK = "9f1c2e7a4b6d4c0e8a1f3b5d7c9e0a2b"
_EXAMPLE_TIME = 1767225600.0


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# ----------------------------------------------------------------------------- errors


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable identifier to branch on (session_busy, ...).")
    message: str = Field(description="What went wrong and what to do about it.")
    details: dict[str, Any] = Field(default_factory=dict, description="Structured extras.")


class ErrorBody(BaseModel):
    """What every non-2xx response answers."""

    model_config = _examples(
        error_body(
            "session_not_found",
            "Session 'demo_session' does not exist. List sessions to find its id, or create one.",
            {"request_id": "5d2c0f0e9b8a4f7e"},
        )
    )

    error: ErrorInfo


_ERROR_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Bad request", "bad_request", "There was an error parsing the body"),
    401: ("No valid token", "auth_required", "This server requires a token."),
    403: (
        "Not allowed from this address",
        "loopback_only",
        "Without AUTH_REQUIRED=true this server answers clients on this machine only.",
    ),
    404: (
        "Unknown, or not the caller's",
        "session_not_found",
        "Session 'demo_session' does not exist. List sessions to find its id, or create one.",
    ),
    409: (
        "Conflict with the current state",
        "session_busy",
        "The session is running another turn; retry when it ends.",
    ),
    413: (
        "Request body too large",
        "request_too_large",
        "The request body is larger than MAX_REQUEST_BYTES (1048576 bytes); send less.",
    ),
    422: (
        "Invalid request",
        "invalid_request",
        "Invalid request: content: String should have at least 1 character.",
    ),
    429: (
        "Too many requests or tasks; see Retry-After",
        "rate_limited",
        "Too many requests: the limit is 120 a minute per user. Retry in 12 s.",
    ),
    502: (
        "The model failed this run",
        "provider_unavailable",
        "The provider 'openai' is unavailable; retry later.",
    ),
    503: (
        "Starting, stopping or storage unavailable; see Retry-After",
        "not_ready",
        "The server is starting; retry in a moment.",
    ),
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
# Every route behind CurrentUser can answer these.
AUTH_ERRORS = (401, 403, 429, 503)
# A route that reads a body: unreadable (400), too large (413) or invalid (422).
BODY_ERRORS = (400, 413, 422)
# The 400 example of a list: a cursor it did not return.
CURSOR_ERROR = {400: ("invalid_cursor", "The cursor is not one this list returned.")}


def error_responses(
    *statuses: int, examples: dict[int, tuple[str, str]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: the error body for each status, with an example.

    Args:
        statuses: the error statuses the route answers (besides :data:`AUTH_ERRORS`).
        examples: ``status -> (code, message)`` for an example that fits the route better.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *AUTH_ERRORS}):
        description, code, message = _ERROR_EXAMPLES[status]
        if examples and status in examples:
            code, message = examples[status]
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": description,
            "content": {"application/json": {"example": error_body(code, message)}},
        }
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


# ----------------------------------------------------------------------------- pagination


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``?cursor=`` for the next (null: the end)."""

    items: list[T]
    next_cursor: str | None = None


class PageQuery:
    """``?limit=`` and ``?cursor=`` of a list route."""

    def __init__(
        self,
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE, description="Items per page (1 to 200).")
        ] = DEFAULT_PAGE,
        cursor: Annotated[
            str | None,
            Query(
                max_length=_MAX_CURSOR_CHARS,
                description="The next_cursor of the previous page; omit for the first page.",
            ),
        ] = None,
    ) -> None:
        self.limit = limit
        self.cursor = cursor


Paging = Annotated[PageQuery, Depends()]


def encode_cursor(kind: str, position: Any) -> str:
    """An opaque cursor of the list ``kind`` at ``position`` (any JSON value)."""
    raw = json.dumps([kind, position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str | None) -> Any:
    """The position a cursor of ``kind`` holds; None without a cursor.

    Raises:
        ApiError: 400 ``invalid_cursor`` for a cursor this list did not return.
    """
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, position = json.loads(raw)
        if tag == kind:
            return position
    except (binascii.Error, ValueError, TypeError):
        pass  # not one of ours: answered below
    raise invalid_cursor(cursor)


def invalid_cursor(cursor: str) -> ApiError:
    """400 ``invalid_cursor``: for a cursor that does not decode, or holds no valid position."""
    return ApiError(
        400,
        "invalid_cursor",
        "The cursor is not one this list returned; pass the next_cursor of the previous page, "
        "or omit cursor to start from the first page.",
        {"cursor": cursor[:64]},
    )


def page_of(kind: str, items: Sequence[T], paging: PageQuery) -> tuple[list[T], str | None]:
    """A page of a list held in memory, with its cursor an offset into it."""
    start = decode_cursor(kind, paging.cursor) or 0
    if type(start) is not int or start < 0:
        raise invalid_cursor(paging.cursor or "")
    end = start + paging.limit
    return list(items[start:end]), encode_cursor(kind, end) if end < len(items) else None


# ----------------------------------------------------------------------------- sessions


class SessionCreate(BaseModel):
    model_config = _examples({"title": "Trip planning", "metadata": {"project": "travel"}})

    title: str | None = Field(default=None, min_length=1, max_length=_MAX_TITLE_CHARS)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Anything the client wants kept with the session."
    )


class SessionUpdate(BaseModel):
    """A rename."""

    model_config = _examples({"title": "Trip to Lisbon"})

    title: str = Field(min_length=1, max_length=_MAX_TITLE_CHARS)


_SESSION_EXAMPLE = {
    "session_id": _EXAMPLE_SESSION,
    "title": "Trip planning",
    "metadata": {"project": "travel"},
    "created_at": _EXAMPLE_TIME,
    "updated_at": _EXAMPLE_TIME + 60,
    "last_active_at": _EXAMPLE_TIME + 60,
    "message_count": 4,
}


class SessionOut(BaseModel):
    """A session: times are seconds since the epoch."""

    model_config = _examples(_SESSION_EXAMPLE)

    session_id: str
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float
    last_active_at: float
    message_count: int = Field(description="Stored messages, the answer still streaming included.")

    @classmethod
    def of(cls, session: Any) -> SessionOut:
        return cls(
            session_id=session.session_id,
            title=session.title,
            metadata=session.metadata,
            created_at=session.created_at,
            updated_at=session.updated_at,
            last_active_at=session.last_active_at,
            message_count=session.message_count,
        )


class SessionPage(Page[SessionOut]):
    model_config = _examples({"items": [_SESSION_EXAMPLE], "next_cursor": None})


# ----------------------------------------------------------------------------- messages


class ToolCallOut(BaseModel):
    id: str
    name: str
    arguments: str = Field(
        default="{}", description="The arguments as the model wrote them (JSON)."
    )


_MESSAGE_EXAMPLES = [
    {
        "seq": 1,
        "role": "user",
        "content": "What is the weather in Lisbon?",
        "status": "complete",
        "task_id": _EXAMPLE_TASK,
        "created_at": _EXAMPLE_TIME,
    },
    {
        "seq": 2,
        "role": "assistant",
        "content": "",
        "status": "complete",
        "tool_calls": [{"id": "call_1", "name": "weather", "arguments": '{"city":"Lisbon"}'}],
        "task_id": _EXAMPLE_TASK,
        "created_at": _EXAMPLE_TIME + 1,
    },
    {
        "seq": 3,
        "role": "tool",
        "content": "22 C, sunny",
        "status": "complete",
        "tool_call_id": "call_1",
        "name": "weather",
        "is_error": False,
        "task_id": _EXAMPLE_TASK,
        "created_at": _EXAMPLE_TIME + 2,
    },
]


class MessageOut(BaseModel):
    """A stored message. ``status`` is ``streaming`` for an answer still being written (its
    text so far), and ``cancelled``, ``failed`` or ``interrupted`` for a partial answer."""

    model_config = _examples(*_MESSAGE_EXAMPLES)

    seq: int = Field(description="Its number in the session, from 1.")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentPart]
    status: str = "complete"
    tool_calls: list[ToolCallOut] = Field(
        default_factory=list, description="An assistant message's tool calls."
    )
    tool_call_id: str | None = Field(default=None, description="A tool result's call.")
    name: str | None = Field(default=None, description="A tool result's tool.")
    is_error: bool | None = Field(default=None, description="Whether a tool result is an error.")
    provider: str | None = None
    model: str | None = None
    task_id: str | None = Field(default=None, description="The task (chat turn) that wrote it.")
    created_at: float

    @classmethod
    def of(cls, record: Any) -> MessageOut:
        message = record.message
        role = message.role
        out = cls(
            seq=record.seq,
            role=role,
            content=message.content,
            status=record.status,
            task_id=record.task_id,
            created_at=record.created_at,
        )
        if role == "assistant":
            out.tool_calls = [
                ToolCallOut(id=c.id, name=c.name, arguments=c.arguments) for c in message.tool_calls
            ]
            out.provider, out.model = message.provider, message.model
        elif role == "tool":
            out.tool_call_id, out.name = message.tool_call_id, message.name
            out.is_error = message.is_error
        return out


class MessagePage(Page[MessageOut]):
    model_config = _examples(
        {"items": _MESSAGE_EXAMPLES, "next_cursor": "WyJtZXNzYWdlcyIsM10", "older": None}
    )

    older: int | None = Field(
        default=None,
        description=(
            "With `before`: pass it as `before` for the page of older messages (null: the "
            "first message is on this page). Always null without `before`."
        ),
    )


class CompactionOut(BaseModel):
    """What compacting a session's context did (token counts are estimates of the whole
    request: instructions, tools and messages). The stored messages never change."""

    model_config = _examples(
        {
            "session_id": "demo_session",
            "compacted": True,
            "tokens_before": 7400,
            "tokens_after": 2100,
            "limit": 6400,
            "strategy": "drop_tool_outputs+summarize",
            "summarized_messages": 12,
            "dropped_messages": 0,
            "cleared_outputs": 3,
            "errors": [],
        }
    )

    session_id: str
    compacted: bool = Field(description="Whether anything was summarised, dropped or cleared.")
    tokens_before: int
    tokens_after: int
    limit: int = Field(description="The context budget the session's requests must fit.")
    strategy: str = Field(description="What changed the context, joined by `+`; `none`: nothing.")
    summarized_messages: int = 0
    dropped_messages: int = 0
    cleared_outputs: int = 0
    errors: list[str] = Field(
        default_factory=list, description="Steps that failed (the summary's model call...)."
    )


class TodoOut(BaseModel):
    content: str
    status: Literal["pending", "in_progress", "completed"]


class TodoPage(Page[TodoOut]):
    model_config = _examples(
        {
            "items": [
                {"content": "Find flights", "status": "completed"},
                {"content": "Book a hotel", "status": "in_progress"},
            ],
            "next_cursor": None,
        }
    )


class ChatRequest(BaseModel):
    """A chat turn: ``content`` from the user to the agent in ``session_id``.

    Without ``session_id`` a new session is made; a ``session_id`` that does not exist yet
    is created for the caller. ``wait_for_session`` false refuses (409 ``session_busy``)
    rather than queueing behind a turn the session is already running.
    """

    model_config = _examples({"content": "Hello, AI assistant!", "session_id": _EXAMPLE_SESSION})

    content: str = Field(min_length=1, description="The user's message.")
    session_id: SessionId | None = None
    model: str | None = Field(
        default=None,
        max_length=_MAX_ID_CHARS,
        description="A model for this turn (provider:model).",
    )
    priority: TaskPriority | None = Field(
        default=None, description="0 low, 1 normal (default), 2 high, 3 critical."
    )
    wait_for_session: bool = True


class MessageCreate(ChatRequest):
    """A chat turn. With ``wait`` (the default) the answer comes back when the turn ends;
    ``wait`` false answers 202 at once with the task, to follow on
    ``GET /api/v1/tasks/{id}/stream`` or poll on ``GET /api/v1/tasks/{id}``."""

    model_config = _examples(
        {"content": "Hello, AI assistant!", "session_id": _EXAMPLE_SESSION},
        {"content": "Summarise our chat", "session_id": _EXAMPLE_SESSION, "wait": False},
    )

    wait: bool = Field(default=True, description="Answer when the turn ends (false: 202 at once).")


class UsageOut(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    requests: int = Field(default=0, description="Model calls made.")

    @classmethod
    def of(cls, usage: Any) -> UsageOut:
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
            requests=usage.requests,
        )


class AssistantReply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(description="The final answer's text.")


class MessageReply(BaseModel):
    """The outcome of a chat turn that completed."""

    model_config = _examples(
        {
            "task_id": _EXAMPLE_TASK,
            "session_id": _EXAMPLE_SESSION,
            "session_created": False,
            "status": "completed",
            "message": {"role": "assistant", "content": "Hello! How can I help?"},
            "usage": {"input_tokens": 42, "output_tokens": 7, "total_tokens": 49, "requests": 1},
            "turns": 1,
        }
    )

    task_id: str
    session_id: str
    session_created: bool = Field(description="The session was made for this message.")
    status: Literal["completed"] = "completed"
    message: AssistantReply
    usage: UsageOut
    turns: int = Field(description="Model calls of the turn (one more per round of tool calls).")


# ----------------------------------------------------------------------------- tasks

_TASK_EXAMPLE: dict[str, Any] = {
    "task_id": _EXAMPLE_TASK,
    "type": "chat",
    "state": "completed",
    "session_id": _EXAMPLE_SESSION,
    "parent_id": None,
    "priority": 1,
    "created_at": _EXAMPLE_TIME,
    "started_at": _EXAMPLE_TIME + 0.01,
    "finished_at": _EXAMPLE_TIME + 2.5,
    "error": None,
    "output": "Hello! How can I help?",
}


class TaskOut(BaseModel):
    """A task: a chat turn or another registered type of work. Times are epoch seconds."""

    model_config = _examples(_TASK_EXAMPLE)

    task_id: str
    type: str
    state: TaskState
    session_id: str | None = None
    parent_id: str | None = None
    priority: int = Field(default=1, description="0 low, 1 normal, 2 high, 3 critical.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    output: str | None = Field(default=None, description="A finished task's text result.")

    @classmethod
    def of(cls, task: Any) -> TaskOut:
        """From a live task, or a stored task record (which has no priority or result)."""
        result = getattr(task, "result", None)
        return cls(
            task_id=task.task_id,
            type=task.type,
            state=task.state,
            session_id=task.session_id,
            parent_id=task.parent_id,
            priority=int(getattr(task, "priority", TaskPriority.NORMAL)),
            created_at=task.created_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            error=task.error,
            output=result if isinstance(result, str) else None,
        )


class TaskAccepted(TaskOut):
    """A task just queued: follow ``stream_url`` (SSE) or poll ``GET /api/v1/tasks/{id}``."""

    model_config = _examples(
        {
            **_TASK_EXAMPLE,
            "state": "pending",
            "started_at": None,
            "finished_at": None,
            "output": None,
            "session_created": True,
            "stream_url": f"/api/v1/tasks/{_EXAMPLE_TASK}/stream",
        }
    )

    session_created: bool = Field(default=False, description="The task's session was made for it.")
    stream_url: str = Field(description="Where its chunks stream as Server-Sent Events.")

    @classmethod
    def of(cls, task: Any, *, session_created: bool = False) -> TaskAccepted:
        return cls(
            **TaskOut.of(task).model_dump(),
            session_created=session_created,
            stream_url=f"/api/v1/tasks/{task.task_id}/stream",
        )


class TaskPage(Page[TaskOut]):
    model_config = _examples({"items": [_TASK_EXAMPLE], "next_cursor": None})


_RESERVED_PAYLOAD = frozenset({"type", "user_id", "session_id", "parent_id", "priority"})


class TaskCreate(BaseModel):
    """A task. ``chat`` (the default) needs ``message`` and takes ``session_id`` and
    ``model``; other registered types take their inputs in ``payload``."""

    model_config = _examples(
        {"type": "chat", "message": "Draft a packing list", "session_id": _EXAMPLE_SESSION},
    )

    type: str = Field(default="chat", min_length=1, max_length=100)
    message: str | None = Field(default=None, min_length=1, description="A chat task's message.")
    session_id: SessionId | None = None
    model: str | None = Field(default=None, max_length=_MAX_ID_CHARS)
    priority: TaskPriority | None = None
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Inputs of a task type other than chat."
    )

    @field_validator("payload")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(_RESERVED_PAYLOAD.intersection(value))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} may not be in payload; give them as fields of the task"
            )
        return value


# ----------------------------------------------------------------------------- tools

_TOOL_EXAMPLE = {
    "name": "todo_read",
    "description": "Return your todo list for this conversation, in order.",
    "parameters": {"type": "object", "properties": {}},
}


class ToolOut(BaseModel):
    """A tool the agent may call, with the JSON schema of its arguments."""

    model_config = _examples(_TOOL_EXAMPLE)

    name: str
    description: str = ""
    parameters: dict[str, Any]
    source: str = Field(
        "function",
        description="Where it comes from: function, builtin, mcp (named server__tool), subagent.",
    )


class ToolPage(Page[ToolOut]):
    model_config = _examples({"items": [_TOOL_EXAMPLE], "next_cursor": None})


class ToolCallRequest(BaseModel):
    """Run one tool as the agent would. A tool that works on a session (the todo tools)
    needs ``session_id``, which must be the caller's."""

    model_config = _examples(
        {
            "name": "todo_write",
            "arguments": {"todos": [{"content": "Book a hotel", "status": "pending"}]},
            "session_id": _EXAMPLE_SESSION,
        }
    )

    name: str = Field(min_length=1, max_length=_MAX_ID_CHARS)
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="Arguments matching the tool's parameters schema."
    )
    session_id: SessionId | None = None


class ToolCallResult(BaseModel):
    """What the tool returned. ``is_error`` is true when the tool itself failed or timed
    out; ``content`` then says why, as the model would read it."""

    model_config = _examples(
        {
            "call_id": "api_3f2b9c1d",
            "name": "todo_write",
            "content": "Todo list saved: 1 items, 0 completed.",
            "is_error": False,
            "duration_ms": 3.2,
        }
    )

    call_id: str
    name: str
    content: str | list[ContentPart]
    is_error: bool = False
    duration_ms: float = 0.0
