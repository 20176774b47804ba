"""The typed events of a run, as one discriminated union.

A provider's stream yields the model events (text and tool-call deltas, usage, the finish);
the run loop passes them on and adds tool results, errors and the final ``done``. Every consumer
(the CLI, a WebSocket, an SSE response, the tests) reads these same types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, Field, TypeAdapter

from agent_template.models.messages import AssistantMessage, ToolCall, Usage

__all__ = [
    "ApprovalRequested",
    "ApprovalResolved",
    "DoneEvent",
    "ErrorEvent",
    "ModelEvent",
    "ReasoningDelta",
    "ResponseFinished",
    "RunEvent",
    "RunQueued",
    "RunStatus",
    "StreamEvent",
    "StreamGap",
    "SubagentEvent",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallReady",
    "ToolCallStarted",
    "ToolResultEvent",
    "UsageEvent",
    "run_event_adapter",
    "stream_event_adapter",
]

# "interrupted": the process stopped (shutdown, crash) before the run finished.
RunStatus: TypeAlias = Literal["completed", "cancelled", "failed", "interrupted"]


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ReasoningDelta(BaseModel):
    """A piece of the model's reasoning (thinking), streamed before or between its text."""

    type: Literal["reasoning_delta"] = "reasoning_delta"
    text: str


class ToolCallStarted(BaseModel):
    type: Literal["tool_call_started"] = "tool_call_started"
    index: int
    id: str
    name: str


class ToolCallDelta(BaseModel):
    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    arguments_delta: str


class ToolCallReady(BaseModel):
    """A tool call whose arguments are complete."""

    type: Literal["tool_call_finished"] = "tool_call_finished"
    index: int
    call: ToolCall


class ToolResultEvent(BaseModel):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool = False
    duration_ms: float = 0.0


class UsageEvent(BaseModel):
    type: Literal["usage"] = "usage"
    usage: Usage


class ResponseFinished(BaseModel):
    """The end of one model response (one turn): why it stopped and what it said."""

    type: Literal["response_finished"] = "response_finished"
    finish_reason: str
    message: AssistantMessage


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str
    retryable: bool = False


class DoneEvent(BaseModel):
    """The last event of every run."""

    type: Literal["done"] = "done"
    status: RunStatus
    output: str = ""
    usage: Usage = Field(default_factory=Usage)
    turns: int = 0


class RunQueued(BaseModel):
    """The run waits for its session: another run on the same session goes first.

    ``ahead`` counts the runs of this session queued before it in this process (0 when it
    waits only for a run held elsewhere, such as another server replica); ``holder`` is the
    task holding the session, when known.
    """

    type: Literal["queued"] = "queued"
    reason: Literal["session_busy"] = "session_busy"
    ahead: int = 0
    holder: str | None = None


class StreamGap(BaseModel):
    """Chunks ``from_seq`` to ``to_seq`` were not delivered to this consumer."""

    type: Literal["gap"] = "gap"
    from_seq: int
    to_seq: int
    reason: Literal["dropped", "expired"] = "dropped"


class ApprovalRequested(BaseModel):
    """A tool call waits for a person: approve it, deny it, or approve it for the session.

    ``parts`` are the commands of a shell call that need the answer (its other commands are
    allowed already); ``expires_at`` (seconds since the epoch) is when no answer means deny.

    ``kind`` ``question``: an MCP server asks the user something during the call (``reason``
    is its question): approve with ``content`` fitting ``requested_schema`` (or, with a
    ``url``, once done there), deny to decline.
    """

    type: Literal["approval_request"] = "approval_request"
    approval_id: str
    call_id: str
    tool: str
    arguments: str = "{}"
    reason: str = ""
    parts: list[str] = Field(default_factory=list)
    expires_at: float | None = None
    kind: Literal["tool_call", "question"] = "tool_call"
    requested_schema: dict[str, Any] | None = None
    url: str | None = None


class ApprovalResolved(BaseModel):
    """The answer to an approval request (``timeout``: nobody answered in time)."""

    type: Literal["approval_resolved"] = "approval_resolved"
    approval_id: str
    call_id: str
    decision: Literal["approve", "deny", "always", "timeout"]
    message: str = ""


class SubagentEvent(BaseModel):
    """An event of a subagent's run, nested in its parent's stream.

    ``task_id`` is the child's task, ``call_id`` the parent's tool call that started it and
    ``event`` the child's own event (any stream event, a nested ``subagent`` one included).
    """

    type: Literal["subagent"] = "subagent"
    task_id: str
    call_id: str
    agent: str
    depth: int = 1
    event: dict[str, Any]


ModelEvent: TypeAlias = (
    TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallDelta
    | ToolCallReady
    | UsageEvent
    | ResponseFinished
)

# What a run yields: the model's events, and the tool results, errors and end it adds.
_RunEventTypes: TypeAlias = ModelEvent | ToolResultEvent | ErrorEvent | DoneEvent
RunEvent = Annotated[_RunEventTypes, Field(discriminator="type")]
# What a task's stream carries besides: a wait for its session, gaps a consumer missed, and
# what its tool calls put in while they run (approval requests, subagents' events).
StreamEvent = Annotated[
    _RunEventTypes | RunQueued | StreamGap | ApprovalRequested | ApprovalResolved | SubagentEvent,
    Field(discriminator="type"),
]
stream_event_adapter: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
run_event_adapter: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
