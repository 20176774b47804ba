"""An MCP server for the tests, built on the SDK: ``python demo.py [--transport stdio|http|sse]``.

Tools: ``echo``, ``image``, ``report`` (an embedded resource and structured content), ``fail``
(an ``isError`` result), ``hang`` (waits until cancelled and records it), ``grow`` (adds the
tool ``extra`` and says the list changed), ``crash`` (exits with code 3), ``ask`` (asks the
user, by elicitation), ``env`` (reads a variable). Resources ``demo://greeting`` (text) and
``demo://logo`` (binary); the prompt ``review``.

``--legacy`` (stdio) serves only the handshake era (2025-11-25), like servers built before 2026.
``--state DIR`` is where it records what the tests check: ``starts`` (a line per start),
``hang-started`` and ``hang-cancelled``. ``--fail-start`` writes a line to stderr and exits
with code 1; ``--silent`` never answers.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import anyio
import mcp.types as mt
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from pydantic import BaseModel

# A 1x1 transparent PNG.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


class Name(BaseModel):
    name: str


def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def build(state: Path | None) -> MCPServer:
    server = MCPServer("demo", version="1.0.0", instructions="A server for tests.")

    def record(what: str) -> None:
        if state is not None:
            with (state / what).open("a") as f:
                f.write(f"{os.getpid()}\n")

    @server.tool()
    def echo(text: str) -> str:
        """Say the text back."""
        print(f"echo: {text}", file=sys.stderr, flush=True)
        return text

    @server.tool()
    def image() -> mt.CallToolResult:
        """A tiny PNG image."""
        return mt.CallToolResult(content=[mt.ImageContent(data=PNG, mime_type="image/png")])

    @server.tool()
    def report() -> mt.CallToolResult:
        """A report as an embedded resource, with its figures as structured content."""
        doc = mt.TextResourceContents(
            uri="demo://report.txt", mime_type="text/plain", text="3 rows, all good"
        )
        return mt.CallToolResult(
            content=[mt.EmbeddedResource(resource=doc)],
            structured_content={"rows": 3, "ok": True},
        )

    @server.tool()
    def fail() -> mt.CallToolResult:
        """Always fails."""
        return mt.CallToolResult(content=[mt.TextContent(text="the disk is full")], is_error=True)

    @server.tool()
    async def hang() -> str:
        """Waits forever (until cancelled)."""
        record("hang-started")
        try:
            await anyio.sleep(3600)
        except anyio.get_cancelled_exc_class():
            record("hang-cancelled")
            raise
        return "woke up"

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Adds the tool 'extra' and tells the client its tools changed."""

        def extra(x: int) -> int:
            """Doubles x."""
            return 2 * x

        server.add_tool(extra, name="extra")
        await ctx.notify_tools_changed()  # to listen() subscribers (2026-07-28)
        if ctx.protocol_version != "2026-07-28":
            await ctx.session.send_tool_list_changed()  # the handshake era's notification
        return "added extra"

    @server.tool()
    def crash() -> str:
        """Exits the server with code 3."""
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)

    @server.tool()
    async def ask(answer: Annotated[ElicitationResult[Name], Resolve(ask_name)]) -> str:
        """Asks the user for their name (in both protocol eras)."""
        if isinstance(answer, AcceptedElicitation):
            return f"hello {answer.data.name}"
        return answer.action

    @server.tool()
    def env(name: str) -> str:
        """The value of an environment variable, or '<unset>'."""
        return os.environ.get(name, "<unset>")

    @server.resource("demo://greeting", mime_type="text/plain")
    def greeting() -> str:
        """A friendly text."""
        return "hello from demo"

    @server.resource("demo://logo", mime_type="image/png")
    def logo() -> bytes:
        """The logo, as bytes."""
        return base64.b64decode(PNG)

    @server.prompt()
    def review(code: str) -> str:
        """Ask for a code review."""
        return f"Please review this code:\n{code}"

    record("starts")
    return server


async def run_legacy_stdio(server: MCPServer) -> None:
    """Serve stdio in the handshake era only, as servers built before 2026 do."""
    from mcp.server.runner import serve_loop
    from mcp.server.stdio import stdio_server

    low = server._lowlevel_server
    async with stdio_server() as (read, write), low.lifespan(low) as state:
        await serve_loop(
            low, read, write, lifespan_state=state, init_options=low.create_initialization_options()
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--silent", action="store_true")
    parser.add_argument("--legacy", action="store_true", help="speak only the handshake era")
    args = parser.parse_args()
    print("demo server starting", file=sys.stderr, flush=True)
    if args.fail_start:
        print("error: DEMO_TOKEN is not set", file=sys.stderr, flush=True)
        sys.exit(1)
    if args.silent:
        time.sleep(3600)
    server = build(args.state)
    if args.legacy:
        anyio.run(run_legacy_stdio, server)
    elif args.transport == "stdio":
        server.run()
    elif args.transport == "http":
        server.run("streamable-http", port=args.port)
    else:
        server.run("sse", port=args.port)


if __name__ == "__main__":
    main()
