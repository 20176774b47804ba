"""Conversation messages and token usage: what is sent to a model and what comes back."""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "AssistantMessage",
    "Message",
    "MessageStatus",
    "SystemMessage",
    "ToolCall",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "message_adapter",
]

MessageStatus: TypeAlias = Literal["complete", "streaming", "cancelled", "failed", "interrupted"]


class Usage(BaseModel):
    """Tokens spent; summed across the model calls of a run."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            requests=self.requests + other.requests,
        )


class ToolCall(BaseModel):
    """A model's request to run one tool; ``arguments`` is the raw JSON text the model wrote."""

    id: str
    name: str
    arguments: str = "{}"


class SystemMessage(BaseModel):
    role: Literal["system"] = "system"
    content: str


class UserMessage(BaseModel):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(BaseModel):
    """A model's answer: text, tool calls, or both.

    ``status`` is ``complete`` for a finished answer; a run that was cancelled, failed or
    interrupted keeps what the model produced up to then, marked with that status.
    """

    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    status: MessageStatus = "complete"
    provider: str | None = None
    model: str | None = None


class ToolResultMessage(BaseModel):
    """The outcome of one tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage,
    Field(discriminator="role"),
]
message_adapter: TypeAdapter[Message] = TypeAdapter(Message)
