"""Data the MCP client hands out: server status, elicitation, resources and prompts.

Plain dataclasses of our own, so callers never touch the SDK's types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias

from agent_template.models import AssistantMessage, ToolContext, UserMessage

__all__ = [
    "ElicitationAnswer",
    "ElicitationHandler",
    "ElicitationRequest",
    "McpPrompt",
    "McpPromptArgument",
    "McpPromptResult",
    "McpResource",
    "ServerState",
    "ServerStatus",
]

ServerState: TypeAlias = Literal["starting", "ready", "failed", "stopped", "restarting"]


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """Where one configured server stands.

    ``state``: ``stopped`` (not started: disabled, lazy and not used yet, or closed),
    ``starting``, ``ready``, ``failed`` (never connected; ``error`` says why; retried in the
    background), ``restarting`` (it was ready, went away, and is being started again).
    ``capabilities`` names what the server offers (``tools``, ``resources``, ``prompts``...);
    ``instructions`` is its advice on using it, meant for the system prompt.
    """

    name: str
    transport: Literal["stdio", "http", "sse"]
    state: ServerState
    target: str = ""
    tools: int = 0
    error: str | None = None
    protocol_version: str | None = None
    server_name: str | None = None
    server_version: str | None = None
    capabilities: tuple[str, ...] = ()
    instructions: str | None = None
    enabled: bool = True
    lazy: bool = False
    restarts: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the API."""
        data = asdict(self)
        data["capabilities"] = list(self.capabilities)
        return data


@dataclass(frozen=True, slots=True)
class ElicitationRequest:
    """A server asks the user for input during a call (``elicitation/create``).

    Attributes:
        server: the server's name.
        message: what the server asks, for the user.
        requested_schema: the JSON schema of the answer (flat: strings, numbers, booleans,
            enums); None in ``url`` mode.
        mode: ``form`` (answer in ``content``) or ``url`` (the user visits ``url``).
        url: where to send the user in ``url`` mode.
        context: the tool call of ours the question most likely belongs to (the latest call
            to that server still running), whose run can put the question to its user.
    """

    server: str
    message: str
    requested_schema: dict[str, Any] | None = None
    mode: Literal["form", "url"] = "form"
    url: str | None = None
    context: ToolContext | None = None


@dataclass(frozen=True, slots=True)
class ElicitationAnswer:
    """The user's answer: ``accept`` (with ``content`` in form mode), ``decline``, ``cancel``."""

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


ElicitationHandler: TypeAlias = Callable[[ElicitationRequest], Awaitable[ElicitationAnswer]]


@dataclass(frozen=True, slots=True)
class McpResource:
    """A resource a server offers; read it with ``McpManager.read_resource(server, uri)``."""

    server: str
    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None


@dataclass(frozen=True, slots=True)
class McpPromptArgument:
    name: str
    description: str | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class McpPrompt:
    """A prompt template a server offers; fill it with ``McpManager.get_prompt``."""

    server: str
    name: str
    title: str | None = None
    description: str | None = None
    arguments: tuple[McpPromptArgument, ...] = ()


@dataclass(frozen=True, slots=True)
class McpPromptResult:
    """A filled prompt: messages ready to put in a conversation."""

    server: str
    name: str
    description: str | None = None
    messages: list[UserMessage | AssistantMessage] = field(default_factory=list)
