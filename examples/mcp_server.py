"""An MCP server's tools in an agent: ``mcp-server-time`` over stdio.

``McpManager`` starts the server as a subprocess, lists its tools and offers them as
``server__tool``; ``sync`` puts them in the agent's tool registry. In an app the servers come
from ``.mcp.json`` instead (see docs/mcp.md), for example::

    {"mcpServers": {"time": {"command": "python", "args": ["-m", "mcp_server_time"]}}}

``mcp-server-time`` is in the dev extra (``pip install mcp-server-time`` elsewhere).

Run: python examples/mcp_server.py
"""

from __future__ import annotations

import asyncio
import json
import sys

from agent_template import Agent
from agent_template.services.mcp import McpManager, StdioServerConfig

TIME_SERVER = StdioServerConfig(
    name="time",
    command=sys.executable,
    args=("-m", "mcp_server_time", "--local-timezone", "UTC"),
)


async def main() -> None:
    async with McpManager([TIME_SERVER]) as mcp:
        (status,) = mcp.status()
        print(f"{status.name}: {status.state}")
        if status.state != "ready":
            raise SystemExit(f"the time server did not start: {status.error}")
        for found in mcp.tools():
            print(f"  {found.name}: {found.description.splitlines()[0]}")

        # model="test" is the offline model, which calls a tool on "call NAME {json}".
        async with Agent("You tell the time.", model="test") as agent:
            mcp.sync(agent.tools)
            arguments = {"timezone": "Asia/Tokyo"}
            result = await agent.run(f"call time__get_current_time {json.dumps(arguments)}")
    print(result.output)


if __name__ == "__main__":
    asyncio.run(main())
