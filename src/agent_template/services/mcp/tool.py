"""An MCP server's tool as a registry :class:`Tool`, named ``server__tool``.

Nothing here imports the SDK: the tool hands each call to its server's connection.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Protocol

from agent_template.models import ContentPart, ToolContext, ToolDefinition
from agent_template.services.tool_manager import Tool

__all__ = ["TOOL_NAME_MAX", "McpTool", "tool_name"]

TOOL_NAME_MAX = 64  # the providers take tool names matching ^[a-zA-Z0-9_-]{1,64}$
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DIGEST_LEN = 8


def tool_name(server: str, tool: str, *, hashed: bool = False) -> str:
    """The registry name of ``tool`` on ``server``: ``server__tool``, as the providers take it.

    Characters the providers reject become ``_``. A name over 64 characters (or any name when
    ``hashed``, to tell apart two that sanitise alike) is cut and ends with a short hash of
    the original, so it stays unique and stable across restarts.
    """
    original = f"{server}__{tool}"
    name = _UNSAFE.sub("_", original)
    if len(name) <= TOOL_NAME_MAX and not hashed:
        return name
    digest = hashlib.sha256(original.encode()).hexdigest()[:_DIGEST_LEN]
    return f"{name[: TOOL_NAME_MAX - _DIGEST_LEN - 1]}_{digest}"


class ToolCaller(Protocol):
    """What runs a tool's calls: its server's connection."""

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        as_name: str,
        context: ToolContext | None = None,
    ) -> str | list[ContentPart]: ...


class McpTool(Tool):
    """One tool of an MCP server, callable by the model.

    The arguments are only checked to be a JSON object; the server validates them against
    its schema and answers with an error the model can read. An ``isError`` result raises
    :class:`~agent_template.services.mcp.errors.McpToolError` with the server's text.

    Attributes:
        server: the server's name in the config file.
        tool_name: the tool's own name on the server.
        annotations: the server's hints (``readOnlyHint``, ``destructiveHint``...), as sent.
    """

    __slots__ = (
        "_caller",
        "annotations",
        "definition",
        "description",
        "name",
        "server",
        "timeout",
        "tool_name",
    )

    takes_context = False
    source = "mcp"

    def __init__(
        self,
        *,
        name: str,
        server: str,
        tool_name: str,
        description: str,
        parameters: dict[str, Any],
        timeout: float | None,
        caller: ToolCaller,
        annotations: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.server = server
        self.tool_name = tool_name
        self.description = description
        self.timeout = timeout
        self.annotations = annotations or {}
        self._caller = caller
        self.definition = ToolDefinition(name=name, description=description, parameters=parameters)

    async def __call__(self, arguments: str, context: ToolContext | None = None) -> Any:
        return await self._caller.call_tool(
            self.tool_name, self.parse_arguments(arguments), as_name=self.name, context=context
        )

    @property
    def origin(self) -> str:
        return f"MCP server {self.server!r} (tool {self.tool_name!r})"

    def same_as(self, other: McpTool) -> bool:
        """The same tool as the model sees it: name, description, schema and server."""
        return (
            self.definition == other.definition
            and self.server == other.server
            and self.tool_name == other.tool_name
            and self.timeout == other.timeout
        )

    def __repr__(self) -> str:
        return f"McpTool({self.name!r})"
