"""Tool definitions as the model sees them, and the context a tool call runs in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ToolContext", "ToolDefinition"]


class ToolDefinition(BaseModel):
    """A tool's name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class ToolContext:
    """What a tool may learn about the call (declare a parameter of this type).

    Every call gets its own context: the run's (session, task, user, deps) with the call's id.
    ``emit``, when the run streams to clients (a task of the agent loop), puts an event into
    the run's stream while the call is still running: a subagent's nested events, an approval
    request. ``depth`` is 0 for a top-level run and one more for each level of subagents.
    """

    session_id: str | None = None
    call_id: str = ""
    task_id: str | None = None
    user_id: str | None = None
    deps: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    emit: Callable[[Any], object] | None = None
    depth: int = 0
