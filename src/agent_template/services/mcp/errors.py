"""The errors of the MCP client: a bad config file, a server that is down, a tool that failed."""

from __future__ import annotations

from pathlib import Path

from agent_template.errors import AgentTemplateError, ConfigurationError, ToolError

__all__ = ["McpConfigError", "McpServerError", "McpToolError"]


class McpConfigError(ConfigurationError):
    """The MCP config file cannot be used: invalid JSON, a wrong shape, an unset variable.

    The message is one line naming the file, the server when there is one, and the problem.

    Attributes:
        path: the config file.
        server: the server whose entry is wrong, or None for the file as a whole.
        problem: what is wrong, without the file's name.
    """

    code = "mcp_config_invalid"

    def __init__(self, path: Path, problem: str, *, server: str | None = None) -> None:
        self.path = path
        self.server = server
        self.problem = problem
        where = f"{path}: server {server!r}" if server else str(path)
        super().__init__(f"Invalid MCP config {where}: {problem}")


class McpServerError(ToolError):
    """An MCP server could not serve a call: it is down, restarting, or went away mid-call.

    The message starts with the server (``MCP server 'git' is restarting ...``): the registry
    already names the tool when it reports the error to the model.

    Attributes:
        server: the server's name in the config file.
    """

    code = "mcp_server_unavailable"

    def __init__(self, tool: str, server: str, detail: str) -> None:
        self.tool = tool
        self.server = server
        self.detail = f"MCP server {server!r} {detail}"
        Exception.__init__(self, self.detail)


class McpToolError(AgentTemplateError):
    """An MCP tool answered with an error (``isError``); the message is the server's text.

    The registry turns it into an error result, so the model reads what the server said.

    Attributes:
        tool: the tool's name in the registry (``server__tool``).
        server: the server's name.
        text: the server's error text.
    """

    code = "mcp_tool_error"

    def __init__(self, tool: str, server: str, text: str) -> None:
        self.tool = tool
        self.server = server
        self.text = text
        super().__init__(text)
