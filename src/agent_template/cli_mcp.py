"""``agent-template mcp ...``: check the MCP servers of the config file (MCP_CONFIG).

``list`` starts every server and shows its tools; ``test NAME`` starts one and shows what it
offers. Both exit 1 when a server fails (its cause on one line) and 2 when the config file
itself is wrong. The servers' own stderr goes to the log file, not the terminal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from agent_template.services.mcp import McpServerConfig, ServerStatus

mcp_app = typer.Typer(
    help="Check the MCP servers of the config file (MCP_CONFIG, .mcp.json by default).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

_EXIT_FAILED = 1
_EXIT_CONFIG = 2
_DESCRIPTION_MAX = 100
_T = TypeVar("_T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="The MCP config file to read instead of MCP_CONFIG (.mcp.json)."),
]


def _configs(config: Path | None) -> tuple[Path, list[McpServerConfig]]:
    """The config file and its servers; a bad file exits 2 with its one-line reason."""
    import os

    from agent_template.cli import _settings
    from agent_template.services.mcp import McpConfigError, load_mcp_config

    settings = _settings()
    path = config or settings.mcp_config
    try:
        servers = load_mcp_config(
            path,
            environ=os.environ,
            startup_timeout=settings.mcp_startup_timeout,
            call_timeout=settings.mcp_call_timeout,
        )
    except McpConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(_EXIT_CONFIG) from None
    return path, servers


def _run(job: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``job``; an unexpected error is one line on stderr and exit 1, never a traceback."""
    log = logging.getLogger("agent_template.mcp")
    level = log.level
    # The command reports every failure itself; the manager's warnings would say it twice.
    log.setLevel(logging.ERROR)
    try:
        return asyncio.run(job())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        typer.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(_EXIT_FAILED) from None
    finally:
        log.setLevel(level)


def _one_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= _DESCRIPTION_MAX else line[: _DESCRIPTION_MAX - 3] + "..."


def _about(status: ServerStatus) -> str:
    facts: list[str] = [status.transport]
    if status.server_name:
        facts.append(f"{status.server_name} {status.server_version or ''}".strip())
    if status.protocol_version:
        facts.append(f"protocol {status.protocol_version}")
    return ", ".join(facts)


@mcp_app.command("list")
def list_servers(config: ConfigOption = None) -> None:
    """Start every server and list its tools; exit 1 if a server fails.

    Lazy servers are started too; disabled ones are listed without starting.
    """
    from agent_template.services.mcp import McpManager

    path, servers = _configs(config)
    if not servers:
        where = "" if path.exists() else " (the file does not exist)"
        typer.echo(f"No MCP servers are configured in {path}{where}.")
        return

    async def job() -> tuple[list[ServerStatus], dict[str, list[tuple[str, str]]]]:
        manager = McpManager(servers)
        try:
            await asyncio.gather(*(manager.connect(s.name) for s in servers if s.enabled))
            tools: dict[str, list[tuple[str, str]]] = {}
            for t in manager.tools():
                tools.setdefault(t.server, []).append((t.name, t.description))
            return manager.status(), tools
        finally:
            await manager.aclose()

    statuses, tools = _run(job)
    failed = False
    for status in statuses:
        if not status.enabled:
            typer.echo(f"{status.name}: disabled ({status.transport})")
        elif status.state == "ready":
            listed = tools.get(status.name, [])
            typer.echo(f"{status.name}: ready ({_about(status)}, {len(listed)} tools)")
            for name, description in listed:
                typer.echo(f"  {name} — {_one_line(description)}" if description else f"  {name}")
        else:
            failed = True
            typer.echo(f"{status.name}: failed ({status.transport}): {status.error}")
    if failed:
        raise typer.Exit(_EXIT_FAILED)


@mcp_app.command("test")
def test_server(
    name: Annotated[str, typer.Argument(help="The server's name in the config file.")],
    config: ConfigOption = None,
) -> None:
    """Start one server and show its handshake and what it offers; exit 1 if it fails."""
    from agent_template.services.mcp import McpManager

    path, servers = _configs(config)
    chosen = next((s for s in servers if s.name == name), None)
    if chosen is None:
        known = ", ".join(s.name for s in servers) or "none"
        typer.echo(f"No MCP server is named {name!r} in {path}. Configured: {known}.", err=True)
        raise typer.Exit(_EXIT_CONFIG)
    # An explicit test starts it even when the file disables it or starts it on first use.
    target = dataclasses.replace(chosen, enabled=True, lazy=False)

    async def job() -> tuple[ServerStatus, int, int, int]:
        manager = McpManager([target])
        try:
            status = await manager.connect(name)
            if status.state != "ready":
                return status, 0, 0, 0
            resources = await manager.list_resources()
            prompts = await manager.list_prompts()
            return status, len(manager.tools()), len(resources), len(prompts)
        finally:
            await manager.aclose()

    status, tools, resources, prompts = _run(job)
    note = "" if chosen.enabled else " (disabled in the config)"
    if status.state != "ready":
        typer.echo(f"{name}: failed ({status.transport}: {chosen.target}){note}")
        typer.echo(f"  cause: {status.error}")
        raise typer.Exit(_EXIT_FAILED)
    typer.echo(f"{name}: ready ({status.transport}: {chosen.target}){note}")
    server = f"{status.server_name or '?'} {status.server_version or ''}".strip()
    typer.echo(f"  server: {server}")
    typer.echo(f"  protocol: {status.protocol_version}")
    typer.echo(f"  capabilities: {', '.join(status.capabilities) or 'none'}")
    if status.instructions:
        typer.echo(f"  instructions: {_one_line(status.instructions)}")
    typer.echo(f"  tools: {tools}, resources: {resources}, prompts: {prompts}")
