"""The wire protocol shared by the WebSocket (``/ws``) and SSE responses.

Every server frame is one JSON object, the same envelope for all of them::

    {"type": "stream_data", "data": {"content": "Hel"},
     "session_id": "demo_session", "task_id": "9f1c...", "seq": 3, "last_seq": 3}

``type`` says what it is and ``data`` carries its fields. Frames of a task's stream (the
chunks: text, tool calls, usage, the end...) also carry ``session_id``, ``task_id`` and the
chunk number ``seq`` (``last_seq`` is larger when a client that fell behind got several text
deltas merged into one frame); resume from ``last_seq``. Other frames (task and session
events, errors, heartbeats) carry the ids they concern and no chunk number; a frame that
answers a client message carries that message's ``request_id`` too.

Frames are only ever extended with new fields and new types; clients ignore what they do not
know. ``docs/protocol.md`` lists each frame with an example.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from agent_template.models.run_events import ErrorEvent, ReasoningDelta, TextDelta
from agent_template.models.tasks import TaskPriority

if TYPE_CHECKING:
    from agent_template.core.stream_gen import Chunk
    from agent_template.models.bus_events import BusEventBase

__all__ = [
    "CHUNK_FRAME_TYPES",
    "PROTOCOL_VERSION",
    "ApproveMessage",
    "CancelMessage",
    "ChatMessage",
    "ClientMessage",
    "PingMessage",
    "ServerFrame",
    "SubscribeMessage",
    "UnsubscribeMessage",
    "bus_frame",
    "chunk_frame",
    "chunk_text",
    "client_message_adapter",
    "encode",
    "error_frame",
    "frame",
    "parse_frame",
    "task_data",
]

PROTOCOL_VERSION: Final = 1

# A stream chunk's event type -> the frame type clients see.
CHUNK_FRAME_TYPES: Final[dict[str, str]] = {
    "text_delta": "stream_data",
    "reasoning_delta": "reasoning_data",
    "tool_call_started": "tool_call_started",
    "tool_call_delta": "tool_call_arguments",
    "tool_call_finished": "tool_call_finished",
    "tool_result": "tool_result",
    "usage": "usage",
    "response_finished": "response_finished",
    "error": "error",
    "done": "stream_complete",
    "queued": "queued",
    "gap": "stream_gap",
    "approval_request": "approval_request",
    "approval_resolved": "approval_resolved",
    "subagent": "subagent_event",
}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class ServerFrame(BaseModel):
    """A frame from the server, as clients parse it (see the module's docstring)."""

    model_config = ConfigDict(extra="allow")

    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
    task_id: str | None = None
    seq: int | None = None
    last_seq: int | None = None
    request_id: str | None = None


def parse_frame(raw: str | bytes) -> ServerFrame:
    """A server frame from its JSON text. Raises pydantic.ValidationError."""
    return ServerFrame.model_validate_json(raw)


def encode(payload: dict[str, Any]) -> str:
    """A frame as compact JSON text (``type`` first, as every frame starts)."""
    return _dumps(payload)


def frame(
    type_: str, data: dict[str, Any] | None = None, **ids: str | int | None
) -> dict[str, Any]:
    """A frame that is not a chunk of a stream: ``type``, ``data`` and the ids it concerns."""
    out: dict[str, Any] = {"type": type_, "data": data or {}}
    for key, value in ids.items():
        if value is not None:
            out[key] = value
    return out


def chunk_text(chunk: Chunk) -> str:
    """The frame of a stream chunk as JSON text, made once per chunk and then shared by every
    connection that sends it (WebSocket text frames want ``str``)."""
    wire = chunk.wire
    if wire is not None:
        return wire
    event = chunk.event
    kind = type(event)
    data: dict[str, Any]
    if kind is TextDelta or kind is ReasoningDelta:
        data = {"content": event.text}  # type: ignore[attr-defined]
    else:
        data = event.model_dump(mode="json", exclude={"type"})
        if kind is ErrorEvent:  # the fields of every error frame
            data.setdefault("details", {})
    event_type: str = event.type  # type: ignore[attr-defined]
    info = chunk.info
    wire = chunk.wire = _dumps(
        {
            "type": CHUNK_FRAME_TYPES.get(event_type, event_type),
            "data": data,
            "session_id": info.session_id,
            "task_id": info.task_id,
            "seq": chunk.seq,
            "last_seq": chunk.last_seq,
        }
    )
    return wire


def chunk_frame(chunk: Chunk) -> bytes:
    """The frame of a stream chunk as UTF-8 bytes (for byte transports such as SSE); the JSON
    text is made once per chunk (see :func:`chunk_text`)."""
    return chunk_text(chunk).encode()


def error_frame(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    retryable: bool = False,
    **ids: str | int | None,
) -> dict[str, Any]:
    """An ``error`` frame: the API's error fields (``code``, ``message``, ``details``) and
    whether retrying later may succeed, as ``data``; the ids (``request_id``, ``task_id``...)
    of what failed. A task's own error chunk has the same fields."""
    data = {"code": code, "message": message, "details": details or {}, "retryable": retryable}
    return frame("error", data, **ids)


def task_data(task: Any) -> dict[str, Any]:
    """What task frames and the REST API say about a task."""
    return {
        "task_id": task.task_id,
        "type": task.type,
        "state": str(task.state),
        "session_id": task.session_id,
        "parent_id": task.parent_id,
        "priority": int(task.priority),
        "created_at": task.created_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "error": task.error,
    }


def bus_frame(event: BusEventBase) -> dict[str, Any] | None:
    """The frame of a bus event a client may see; None for events clients do not get."""
    kind = event.type  # type: ignore[attr-defined]
    ids = {"session_id": event.session_id, "task_id": event.task_id}
    if kind == "task_state":
        task = event.task  # type: ignore[attr-defined]
        if event.previous is None:  # type: ignore[attr-defined]
            name = "task_created"
        elif task.done:
            name = "task_completed"
        else:
            name = "task_updated"
        return frame(name, task_data(task), **ids)
    if kind == "session_changed":
        action = event.action  # type: ignore[attr-defined]
        return frame(f"session_{action}", {"session_id": event.session_id}, **ids)
    if kind == "todos_changed":
        items = [item.model_dump(mode="json") for item in event.items]  # type: ignore[attr-defined]
        return frame("todo", {"items": items}, **ids)
    if kind == "context_compacted":
        data = event.model_dump(mode="json", exclude={"type", "ts", "user_id"})
        return frame("compaction", data, **ids)
    return None


# ----------------------------------------------------------------------- client messages


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_id: str | None = None  # echoed in the frames that answer this message


class ChatMessage(_Message):
    """Run a chat turn; its stream is sent on this connection.

    ``priority`` is a number (0 low to 3 critical) or its name (``"high"``).
    """

    type: Literal["chat"]
    content: str = Field(min_length=1)
    session_id: str | None = Field(None, min_length=1, max_length=200)
    model: str | None = None
    priority: TaskPriority | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_by_name(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in TaskPriority.__members__:
            return TaskPriority[value.upper()]
        return value


class CancelMessage(_Message):
    """Cancel a task of this user (by default the connection's latest one)."""

    type: Literal["cancel"]
    task_id: str | None = None


class SubscribeMessage(_Message):
    """Follow a task's stream, or a session's (its current run and the ones after it).

    ``after_seq``: the last chunk number already received; chunks after it are sent (all
    that are retained when omitted).
    """

    type: Literal["subscribe"]
    session_id: str | None = None
    task_id: str | None = None
    after_seq: int | None = Field(None, ge=0)


class UnsubscribeMessage(_Message):
    type: Literal["unsubscribe"]
    session_id: str | None = None
    task_id: str | None = None


class PingMessage(_Message):
    type: Literal["ping"]


class ApproveMessage(_Message):
    """Answer an approval request (an ``approval_request`` frame of one of your runs)."""

    type: Literal["approve"]
    approval_id: str = Field(min_length=1, max_length=64)
    decision: Literal["approve", "deny", "always"]
    message: str | None = Field(None, max_length=2000)
    content: dict[str, Any] | None = None  # the answer to a question (an MCP server's)


ClientMessage: TypeAlias = Annotated[
    ChatMessage
    | CancelMessage
    | SubscribeMessage
    | UnsubscribeMessage
    | PingMessage
    | ApproveMessage,
    Field(discriminator="type"),
]
client_message_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
