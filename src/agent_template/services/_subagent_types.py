"""Subagent types: the kinds of helper agent a model may start, and where they come from.

A type is declared in Python (:class:`SubagentType`) or in the JSON file that ``SUBAGENTS_CONFIG``
names (:func:`load_subagent_types`); :data:`GENERAL` is the built-in one used when none is
declared. Every problem with a type is a :class:`~agent_template.errors.ConfigurationError` that
names it, raised when the type is made. The errors a delegation reports to the parent's model
(:class:`SubagentError`, :class:`SubagentDepthError`) live here too, beside the types they name.
:mod:`agent_template.services.subagent` runs the subagents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_template.core.run_loop import ModelClient
from agent_template.errors import AgentTemplateError, ConfigurationError, ToolError

__all__ = [
    "GENERAL",
    "SUBAGENT_TOOL_NAME",
    "SubagentDepthError",
    "SubagentError",
    "SubagentType",
    "load_subagent_types",
]

SUBAGENT_TOOL_NAME = "subagent"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_ENV = "SUBAGENTS_CONFIG"


@dataclass(frozen=True, slots=True)
class SubagentType:
    """A kind of subagent the model may start.

    Args:
        name: what the model passes as ``type`` (letters, digits, ``_`` and ``-``).
        description: when to use it; the model reads it to choose.
        instructions: the child's system prompt.
        tools: names of the parent's tools it may use; None for all of them. A name the
            parent does not have is simply not there.
        model: ``"provider:model"`` (or a provider name) for another model, a model name for
            the parent's provider, or (in Python) a model client or provider instance;
            None for the parent's model.
        max_turns: model turns before the child stops; the parent agent's limit by default.

    Raises:
        ConfigurationError: an invalid name, an empty description or instructions, or a
            ``max_turns`` below 1.
    """

    name: str
    description: str
    instructions: str
    tools: Sequence[str] | None = None
    model: str | ModelClient | None = None
    max_turns: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"Invalid subagent name {self.name!r}: use a letter, then letters, digits, "
                "'_' or '-' (at most 64 characters)."
            )
        for what in ("description", "instructions"):
            if not str(getattr(self, what)).strip():
                raise ConfigurationError(f"The subagent {self.name!r} needs a {what}.")
        if self.tools is not None:
            object.__setattr__(self, "tools", tuple(dict.fromkeys(self.tools)))
        if self.max_turns is not None and self.max_turns < 1:
            raise ConfigurationError(f"The subagent {self.name!r}: max_turns must be at least 1.")


GENERAL = SubagentType(
    "general",
    description=(
        "A general-purpose helper with your tools, for a self-contained piece of work: "
        "research across many files, a multi-step change, or a question that needs a lot "
        "of searching. It reports back what it found or did."
    ),
    instructions=(
        "You carry out one task for another agent, which sees only your final message. "
        "Use your tools as the task needs, then reply with a complete, self-contained answer: "
        "what you found or did, with the details (file paths, names, figures) the other agent "
        "needs. You cannot ask questions: where the task is unclear, make a reasonable choice "
        "and say which."
    ),
)


class SubagentError(ToolError):
    """A subagent did not deliver an answer (it failed, was cancelled or interrupted).

    The parent's model reads the message as the tool call's error result.

    Attributes:
        agent: the subagent type.
        task_id: the child's task, if it was started.
        state: the child's final state (``failed``, ``cancelled``, ``interrupted``).
    """

    code = "subagent_failed"

    def __init__(
        self, agent: str, message: str, *, task_id: str | None = None, state: str | None = None
    ) -> None:
        self.tool, self.detail = SUBAGENT_TOOL_NAME, message
        self.agent, self.task_id, self.state = agent, task_id, state
        AgentTemplateError.__init__(self, message)


class SubagentDepthError(SubagentError):
    """A run at the deepest level allowed asked for a subagent."""

    code = "subagent_depth_exceeded"

    def __init__(self, agent: str, depth: int, max_depth: int) -> None:
        if max_depth == 0:
            why = "Subagents are turned off (SUBAGENT_MAX_DEPTH=0)"
        else:
            why = (
                f"Subagents nest at most {max_depth} level(s) deep and this run is at depth "
                f"{depth}, so it cannot start the subagent '{agent}'"
            )
        super().__init__(agent, f"{why}. Do the task yourself with the tools you have.")
        self.depth, self.max_depth = depth, max_depth


# --------------------------------------------------------------------------- configuration


class _TypeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = Field(min_length=1)
    instructions: str = Field(min_length=1)
    tools: list[str] | None = None
    model: str | None = Field(None, min_length=1)
    max_turns: int | None = Field(None, ge=1)


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    subagents: dict[str, _TypeSpec] = Field(min_length=1)


def load_subagent_types(path: Path | str) -> list[SubagentType]:
    """The subagent types a JSON file declares (``{"subagents": {NAME: {...}}}``).

    Raises:
        ConfigurationError: the file is missing, unreadable, not JSON or not in that format;
            the message names the file and every problem.
    """
    where = f"The subagents file '{path}' ({_ENV})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{where} does not exist. Create it or unset {_ENV}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{where} cannot be read: {exc}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    try:
        spec = _FileSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e["type"], e["loc"], e["msg"]) for e in exc.errors())
        raise ConfigurationError(f"{where} is invalid: {problems}.") from None
    try:
        return [SubagentType(name, **entry.model_dump()) for name, entry in spec.subagents.items()]
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where} is invalid: {exc}") from None


def _problem(kind: str, loc: tuple[int | str, ...], message: str) -> str:
    at = ".".join(str(part) for part in loc)
    if kind == "extra_forbidden":
        known = ", ".join(_FileSpec.model_fields if len(loc) == 1 else _TypeSpec.model_fields)
        return f"unknown key '{at}' (known keys: {known})"
    if not loc:
        return 'it must be a JSON object such as {"subagents": {"name": {...}}}'
    if kind == "missing":
        return f"'{at}' is missing"
    if kind == "model_type":
        return f"'{at}' must be an object"
    return f"'{at}': {message[0].lower()}{message[1:]}"
