"""The MCP client: servers from ``.mcp.json``, their tools in the registry.

Importing this package does not import the MCP SDK; a manager imports it once the config
names a server. See ``docs/mcp.md``.
"""

from agent_template.services.mcp.config import (
    HttpServerConfig,
    McpServerConfig,
    StdioServerConfig,
    load_mcp_config,
    parse_mcp_config,
)
from agent_template.services.mcp.errors import McpConfigError, McpServerError, McpToolError
from agent_template.services.mcp.manager import McpManager
from agent_template.services.mcp.models import (
    ElicitationAnswer,
    ElicitationHandler,
    ElicitationRequest,
    McpPrompt,
    McpPromptArgument,
    McpPromptResult,
    McpResource,
    ServerState,
    ServerStatus,
)
from agent_template.services.mcp.tool import McpTool, tool_name

__all__ = [
    "ElicitationAnswer",
    "ElicitationHandler",
    "ElicitationRequest",
    "HttpServerConfig",
    "McpConfigError",
    "McpManager",
    "McpPrompt",
    "McpPromptArgument",
    "McpPromptResult",
    "McpResource",
    "McpServerConfig",
    "McpServerError",
    "McpTool",
    "McpToolError",
    "ServerState",
    "ServerStatus",
    "StdioServerConfig",
    "load_mcp_config",
    "parse_mcp_config",
    "tool_name",
]
