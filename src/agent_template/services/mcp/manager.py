"""The MCP servers of one app: their connections, tools, resources and prompts.

Building a manager does no I/O and imports the SDK only when the config names a server.
``start()`` connects the servers that are not ``lazy``; ``refresh()`` (the run loop calls it
before each model turn) starts lazy ones on first use, re-lists the tools of servers that
said theirs changed, and publishes the new tool list; ``sync(registry)`` puts it in a
:class:`ToolManager`. Tools change only in ``start()``, ``connect()`` and ``refresh()``, so
what the model sees never shifts under a running turn.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from agent_template.errors import ConfigurationError
from agent_template.services.mcp.config import McpServerConfig, load_mcp_config
from agent_template.services.mcp.errors import McpServerError
from agent_template.services.mcp.models import (
    ElicitationHandler,
    McpPrompt,
    McpPromptArgument,
    McpPromptResult,
    McpResource,
    ServerStatus,
)
from agent_template.services.mcp.tool import McpTool, tool_name

if TYPE_CHECKING:
    import mcp.types as mt
    from mcp import Client

    from agent_template.config import Settings
    from agent_template.models import ResourcePart
    from agent_template.services.mcp.connection import McpConnection
    from agent_template.services.tool_manager import ToolManager

__all__ = ["McpManager"]

_log = logging.getLogger("agent_template.mcp")
_T = TypeVar("_T")
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class McpManager:
    """Every configured MCP server, and their tools as registry :class:`Tool` objects.

    Args:
        configs: the servers (see :func:`~agent_template.services.mcp.load_mcp_config`).
        on_elicit: answers a server's questions to the user (``elicitation/create``);
            without it they are declined.
        restart_base: seconds before a failed server is started again (doubling each time).
        restart_max: the cap of that wait.
    """

    def __init__(
        self,
        configs: Iterable[McpServerConfig] = (),
        *,
        on_elicit: ElicitationHandler | None = None,
        restart_base: float | None = None,
        restart_max: float | None = None,
    ) -> None:
        configs = list(configs)
        self._connections: dict[str, McpConnection] = {}
        self._change = asyncio.Event()
        self._closed = False
        if configs:
            from agent_template.services.mcp import connection

            backoff = {
                "restart_base": restart_base or connection.RESTART_BASE_S,
                "restart_max": restart_max or connection.RESTART_MAX_S,
            }
            for config in configs:
                if config.name in self._connections:
                    raise ConfigurationError(f"Two MCP servers are named {config.name!r}.")
                self._connections[config.name] = connection.McpConnection(
                    config, on_elicit=on_elicit, on_change=self._change.set, **backoff
                )
        self._tools: dict[str, McpTool] = {}
        self._built: dict[str, tuple[int, bool]] = {}
        self._synced: WeakKeyDictionary[ToolManager, set[str]] = WeakKeyDictionary()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        on_elicit: ElicitationHandler | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> McpManager:
        """The servers of ``settings.mcp_config``, ``${VAR}`` taken from ``environ``.

        ``environ`` is the process environment unless given. A missing file means no servers.

        Raises:
            McpConfigError: the file is invalid; one line naming the file and the problem.
        """
        configs = load_mcp_config(
            settings.mcp_config,
            environ=os.environ if environ is None else environ,
            startup_timeout=settings.mcp_startup_timeout,
            call_timeout=settings.mcp_call_timeout,
        )
        return cls(configs, on_elicit=on_elicit)

    async def __aenter__(self) -> McpManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def servers(self) -> list[str]:
        """The configured servers' names, in the file's order."""
        return list(self._connections)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect every enabled server that is not lazy, at once; never raises for a server.

        Each is bounded by its start-up timeout; one that fails says why in :meth:`status`
        and is tried again in the background.
        """
        self._closed = False
        await asyncio.gather(*(c.start() for c in self._connections.values() if not c.config.lazy))
        self._change.clear()  # what happened so far is published now
        self._rebuild()

    async def connect(self, name: str) -> ServerStatus:
        """Start one server (lazy or not) if it is not running, and wait for the outcome.

        Raises:
            ConfigurationError: no server has that name.
        """
        conn = self._connection(name)
        await conn.start()
        self._change.clear()
        self._rebuild()
        return conn.status()

    async def aclose(self) -> None:
        """Close every connection and stop the stdio servers; calling again is harmless."""
        self._closed = True
        await asyncio.gather(*(c.aclose() for c in self._connections.values()))
        self._rebuild()

    def status(self) -> list[ServerStatus]:
        """Each configured server's state, in the file's order."""
        return [c.status() for c in self._connections.values()]

    # ------------------------------------------------------------------ tools

    def tools(self) -> list[McpTool]:
        """The tools as of the last :meth:`start`, :meth:`connect` or :meth:`refresh`."""
        return list(self._tools.values())

    async def refresh(self) -> bool:
        """Start lazy servers not yet started, re-list changed tools; True when tools changed.

        Without pending lazy servers or change notifications this does no I/O; after
        :meth:`aclose` it starts nothing.
        """
        self._change.clear()
        lazy = [
            c
            for c in self._connections.values()
            if c.config.lazy and c.config.enabled and not c.started and not self._closed
        ]
        if lazy:
            await asyncio.gather(*(c.start() for c in lazy))
        stale = [c for c in self._connections.values() if c.needs_relist and c.state == "ready"]
        if stale:
            await asyncio.gather(*(c.relist() for c in stale))
        return self._rebuild()

    async def wait_for_change(self) -> None:
        """Return once :meth:`refresh` may find something new: a server said its tools
        changed, connected, or failed. For a caller that wants to refresh between turns."""
        await self._change.wait()

    def sync(self, registry: ToolManager) -> None:
        """Make ``registry`` hold exactly this manager's current tools.

        Tools this manager put there before and no longer has are unregistered; the others
        are registered, replacing a tool of the same name.
        """
        previous = self._synced.get(registry, set())
        for name in previous - self._tools.keys():
            registry.unregister(name)
        for tool in self._tools.values():
            registry.register(tool, replace=True)
        self._synced[registry] = set(self._tools)

    def _rebuild(self) -> bool:
        """Publish the connections' tools if any changed; whether the published list did."""
        keys = {
            name: (c.tools_version, c.state in ("ready", "restarting"))
            for name, c in self._connections.items()
        }
        if keys == self._built:
            return False
        self._built = keys
        fresh: dict[str, McpTool] = {}
        for conn in self._connections.values():
            if conn.state in ("ready", "restarting"):
                for tool in conn.tools:
                    made = self._tool(conn, tool, taken=fresh)
                    old = self._tools.get(made.name)
                    fresh[made.name] = old if old is not None and old.same_as(made) else made
        changed = fresh.keys() != self._tools.keys() or any(
            fresh[name] is not self._tools[name] for name in fresh
        )
        self._tools = fresh
        return changed

    @staticmethod
    def _tool(conn: McpConnection, tool: mt.Tool, *, taken: Mapping[str, McpTool]) -> McpTool:
        name = tool_name(conn.name, tool.name)
        if name in taken:  # two names that sanitise alike: the later one gets a hash
            name = tool_name(conn.name, tool.name, hashed=True)
        schema = dict(tool.input_schema or {})
        if schema.get("type") != "object":
            schema = dict(_EMPTY_SCHEMA)
        annotations = (
            tool.annotations.model_dump(by_alias=True, exclude_none=True)
            if tool.annotations
            else None
        )
        return McpTool(
            name=name,
            server=conn.name,
            tool_name=tool.name,
            description=tool.description or tool.title or f"{tool.name} (MCP server {conn.name})",
            parameters=schema,
            timeout=conn.config.call_timeout,
            caller=conn,
            annotations=annotations,
        )

    # ------------------------------------------------------------------ resources, prompts

    async def list_resources(self) -> list[McpResource]:
        """The resources of every ready server that offers them; a failing one is skipped."""
        from agent_template.services.mcp._sdk import list_resources

        found = await self._gather("resources", list_resources)
        return [
            McpResource(
                server=server,
                uri=str(r.uri),
                name=r.name,
                title=r.title,
                description=r.description,
                mime_type=r.mime_type,
            )
            for server, items in found
            for r in items
        ]

    async def read_resource(self, server: str, uri: str) -> list[ResourcePart]:
        """The contents of ``uri`` on ``server``, one part per item.

        Raises:
            ConfigurationError: no server has that name.
            McpServerError: the server is not available or refused.
        """
        from agent_template.services.mcp._convert import resource_parts

        conn = await self._started(server)

        async def job(client: Client) -> mt.ReadResourceResult:
            return await client.read_resource(uri)

        return resource_parts(await conn.request(f"{server} {uri}", job))

    async def list_prompts(self) -> list[McpPrompt]:
        """The prompts of every ready server that offers them; a failing one is skipped."""
        from agent_template.services.mcp._sdk import list_prompts

        found = await self._gather("prompts", list_prompts)
        return [
            McpPrompt(
                server=server,
                name=p.name,
                title=p.title,
                description=p.description,
                arguments=tuple(
                    McpPromptArgument(a.name, a.description, bool(a.required))
                    for a in p.arguments or ()
                ),
            )
            for server, items in found
            for p in items
        ]

    async def get_prompt(
        self, server: str, name: str, arguments: Mapping[str, str] | None = None
    ) -> McpPromptResult:
        """Fill the prompt ``name`` of ``server`` with ``arguments``.

        Raises:
            ConfigurationError: no server has that name.
            McpServerError: the server is not available, or refused (an unknown prompt, a
                missing argument).
        """
        from agent_template.services.mcp._convert import prompt_messages

        conn = await self._started(server)

        async def job(client: Client) -> mt.GetPromptResult:
            return await client.get_prompt(name, dict(arguments or {}))

        result = await conn.request(f"{server} prompt {name}", job)
        return McpPromptResult(
            server=server,
            name=name,
            description=result.description,
            messages=prompt_messages(result),
        )

    async def _gather(
        self, kind: str, job: Callable[[Client], Awaitable[list[_T]]]
    ) -> list[tuple[str, list[_T]]]:
        """``job`` on every ready server offering ``kind``; a failing one is skipped."""
        lazy = [c for c in self._connections.values() if c.config.lazy and not c.started]
        await asyncio.gather(*(c.start() for c in lazy))
        ready = [
            c
            for c in self._connections.values()
            if c.state == "ready" and getattr(c.capabilities, kind, None) is not None
        ]

        async def one(conn: McpConnection) -> tuple[str, list[_T]]:
            try:
                return conn.name, await conn.request(f"{conn.name} {kind}", job)
            except McpServerError as exc:
                _log.warning("Listing the %s of MCP server %r failed: %s", kind, conn.name, exc)
                return conn.name, []

        return list(await asyncio.gather(*(one(c) for c in ready)))

    async def _started(self, name: str) -> McpConnection:
        conn = self._connection(name)
        if not conn.started:
            await conn.start()
            self._rebuild()
        return conn

    def _connection(self, name: str) -> McpConnection:
        try:
            return self._connections[name]
        except KeyError:
            known = ", ".join(self._connections) or "none"
            raise ConfigurationError(
                f"No MCP server is named {name!r}. Configured servers: {known}."
            ) from None
