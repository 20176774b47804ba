"""What the run loop asks of a model provider, and the collected answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from agent_template.models.messages import AssistantMessage, Message, Usage
from agent_template.models.tools import ToolDefinition

__all__ = ["ModelRequest", "ModelResponse", "ToolChoice"]

# "auto": the model decides; "none": no tool calls; "required": at least one call;
# any other string: the name of the one tool the model must call.
ToolChoice: TypeAlias = Literal["auto", "none", "required"] | str


@dataclass(slots=True)
class ModelRequest:
    """One request to a model. ``model`` overrides the provider's default when set.

    Every option defaults to None, which leaves it to the provider. A provider maps each
    option its API supports and ignores the others (each provider's docstring lists them).
    Rebuild a request from another with :func:`dataclasses.replace`, so no option is lost.

    Attributes:
        tool_choice: whether and which tools the model must call (see :data:`ToolChoice`).
        stop: sequences at which the model stops writing.
        top_p: nucleus-sampling probability mass.
        seed: a seed for reproducible sampling, where supported.
        response_format: the answer's format in OpenAI's shape, such as
            ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``.
        parallel_tool_calls: whether the model may call several tools in one turn.
    """

    messages: Sequence[Message]
    tools: Sequence[ToolDefinition] = ()
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tool_choice: ToolChoice | None = None
    stop: list[str] | None = None
    top_p: float | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


@dataclass(slots=True)
class ModelResponse:
    message: AssistantMessage
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
