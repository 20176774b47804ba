"""What the run loop asks of a model provider, and the collected answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent_template.models.messages import AssistantMessage, Message, Usage
from agent_template.models.tools import ToolDefinition

__all__ = ["ModelRequest", "ModelResponse"]


@dataclass(slots=True)
class ModelRequest:
    """One request to a model. ``model`` overrides the provider's default when set."""

    messages: Sequence[Message]
    tools: Sequence[ToolDefinition] = ()
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(slots=True)
class ModelResponse:
    message: AssistantMessage
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
