"""Events on the process's event bus: task lifecycle, model and tool calls, streams, sessions.

These are what hooks, metrics, the server's WebSocket fan-out and (across replicas) the Redis
bus carry. Each has a ``type`` literal; :data:`BusEvent` is their discriminated union.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from agent_template.models.messages import Usage
from agent_template.models.tasks import Task, TaskState
from agent_template.models.todos import TodoItem

__all__ = [
    "BusEvent",
    "BusEventBase",
    "ContextCompacted",
    "ErrorOccurred",
    "ModelCallFinished",
    "ModelCallStarted",
    "SessionChanged",
    "StreamEnded",
    "StreamStarted",
    "TaskQueued",
    "TaskStateChanged",
    "TodoListChanged",
    "ToolExecFinished",
    "ToolExecStarted",
    "bus_event_adapter",
]


class BusEventBase(BaseModel):
    """What every bus event says: when, and whose (session, task and user) it is."""

    ts: float = Field(default_factory=time.time)
    session_id: str | None = None
    task_id: str | None = None
    user_id: str | None = None


class TaskStateChanged(BusEventBase):
    type: Literal["task_state"] = "task_state"
    task: Task
    previous: TaskState | None = None


class TaskQueued(BusEventBase):
    """A task waits for its session, which another task holds (one run per session)."""

    type: Literal["task_queued"] = "task_queued"
    ahead: int = 0
    holder: str | None = None


class ModelCallStarted(BusEventBase):
    type: Literal["model_call_started"] = "model_call_started"
    turn: int = 0


class ModelCallFinished(BusEventBase):
    type: Literal["model_call_finished"] = "model_call_finished"
    turn: int = 0
    provider: str | None = None
    model: str | None = None
    latency_ms: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None


class ToolExecStarted(BusEventBase):
    type: Literal["tool_started"] = "tool_started"
    call_id: str
    name: str


class ToolExecFinished(BusEventBase):
    type: Literal["tool_finished"] = "tool_finished"
    call_id: str
    name: str
    duration_ms: float = 0.0
    is_error: bool = False
    vetoed: bool = False


class StreamStarted(BusEventBase):
    type: Literal["stream_started"] = "stream_started"
    stream_id: str


class StreamEnded(BusEventBase):
    type: Literal["stream_ended"] = "stream_ended"
    stream_id: str
    chunks: int = 0


class SessionChanged(BusEventBase):
    type: Literal["session_changed"] = "session_changed"
    action: Literal["created", "updated", "deleted"]


class ErrorOccurred(BusEventBase):
    type: Literal["error_occurred"] = "error_occurred"
    code: str
    message: str
    source: str = ""


class TodoListChanged(BusEventBase):
    type: Literal["todos_changed"] = "todos_changed"
    items: list[TodoItem]


class ContextCompacted(BusEventBase):
    """A request was compacted to fit the model's context window.

    ``tokens_before`` and ``tokens_after`` are calibrated estimates of the whole request
    (messages and tool definitions); ``limit`` is the budget it had to fit. ``strategy`` names
    the strategies that changed something, joined by ``+`` (``"drop_tool_outputs+summarize"``).
    """

    type: Literal["context_compacted"] = "context_compacted"
    tokens_before: int
    tokens_after: int
    strategy: str
    summarized_messages: int = 0
    dropped_messages: int = 0
    limit: int
    manual: bool = False


BusEvent = Annotated[
    TaskStateChanged
    | TaskQueued
    | ModelCallStarted
    | ModelCallFinished
    | ToolExecStarted
    | ToolExecFinished
    | StreamStarted
    | StreamEnded
    | SessionChanged
    | TodoListChanged
    | ContextCompacted
    | ErrorOccurred,
    Field(discriminator="type"),
]
bus_event_adapter: TypeAdapter[BusEvent] = TypeAdapter(BusEvent)
