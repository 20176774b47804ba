"""One MCP server's connection: started, kept alive, and restarted with backoff.

A supervisor task owns the SDK's ``Client`` (its context must be entered and left in one
task): it connects within the start-up timeout, lists the tools, then waits until the server
goes away or the connection is closed. A server that fails or dies is started again after
0.5 s, 1 s, 2 s... up to 30 s; a connection that stayed up 30 s starts the count afresh.
Calls run in the caller's task; cancelling one makes the SDK tell the server
(``notifications/cancelled``, or on the stateless HTTP protocol, by closing the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import mcp.types as mt
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from agent_template.errors import ToolArgumentsError
from agent_template.models import ContentPart, ToolContext
from agent_template.services.mcp import _sdk
from agent_template.services.mcp._convert import tool_result
from agent_template.services.mcp._transports import open_transport
from agent_template.services.mcp._watch import (
    TransportWatch,
    describe_failure,
    timeout_cause,
)
from agent_template.services.mcp.config import McpServerConfig
from agent_template.services.mcp.errors import McpServerError, McpToolError
from agent_template.services.mcp.models import ElicitationHandler, ServerState, ServerStatus

if TYPE_CHECKING:
    from mcp import Client
    from mcp.client.session import ClientRequestContext

__all__ = ["McpConnection"]

_log = logging.getLogger("agent_template.mcp")

RESTART_BASE_S = 0.5  # first wait before starting a failed or dead server again; doubles
RESTART_MAX_S = 30.0  # the longest wait between two attempts
STABLE_S = 30.0  # a connection up this long resets the backoff
CLOSE_WAIT_S = 10.0  # for a server to stop (stdin grace, SIGTERM, SIGKILL) when closing
LOST_CAUSE_WAIT_S = 1.0  # a call that lost its server waits this long to say why


_sdk.route_sdk_logs()


class McpConnection:
    """The connection to one configured server (see the module docstring).

    Args:
        config: the server's entry.
        on_elicit: answers the server's questions to the user; None declines them.
        on_change: called when the tools may have changed: the server said so, connected,
            or failed.
        restart_base: seconds before the first restart, doubled after each failure.
        restart_max: the cap of that wait.
    """

    def __init__(
        self,
        config: McpServerConfig,
        *,
        on_elicit: ElicitationHandler | None = None,
        on_change: Callable[[], None] = lambda: None,
        restart_base: float = RESTART_BASE_S,
        restart_max: float = RESTART_MAX_S,
    ) -> None:
        self.config = config
        self.name = config.name
        self.state: ServerState = "stopped"
        self.error: str | None = None
        self.protocol_version: str | None = None
        self.server_name: str | None = None
        self.server_version: str | None = None
        self.capabilities: mt.ServerCapabilities | None = None
        self.instructions: str | None = None
        self.restarts = 0
        self.tools: tuple[mt.Tool, ...] = ()
        self.tools_version = 0  # bumped whenever ``tools`` is replaced
        self.needs_relist = False  # the server said its tools changed
        self._on_elicit = on_elicit
        self._calls: list[ToolContext] = []  # contexts of the tool calls running now
        self._on_change = on_change
        self._restart_base = restart_base
        self._restart_max = restart_max
        self._client: Client | None = None
        self._watch: TransportWatch | None = None
        self._ever_ready = False
        self._ready_since: float | None = None
        self._connecting = False
        self._stopping = False
        self._logged_cause: str | None = None
        self._ready = asyncio.Event()
        self._down = asyncio.Event()  # set while the server is between connections
        self._first_outcome = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        """Start the server (once) and wait for the first attempt to connect or fail.

        Never raises for the server's failure: :meth:`status` says why. The wait is bounded
        by the start-up timeout, plus the few seconds a server that does not answer takes to
        stop.
        """
        if not self.config.enabled:
            return
        if self._task is None:
            self._stopping = False
            self._first_outcome.clear()
            self.state = "starting"
            self._task = asyncio.create_task(self._supervise(), name=f"mcp-server:{self.name}")
        await self._first_outcome.wait()

    async def aclose(self) -> None:
        """Close the connection and stop a stdio server's processes; calling again is harmless."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        if self._connecting:
            task.cancel()  # a handshake in progress has no other way to end early
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except asyncio.CancelledError:
            if not task.done():
                raise
        self.state = "stopped"

    def status(self) -> ServerStatus:
        return ServerStatus(
            name=self.name,
            transport=self.config.transport,
            state=self.state,
            target=self.config.target,
            tools=len(self.tools) if self.state in ("ready", "restarting") else 0,
            error=self.error,
            protocol_version=self.protocol_version,
            server_name=self.server_name,
            server_version=self.server_version,
            capabilities=_sdk.capability_names(self.capabilities),
            instructions=self.instructions,
            enabled=self.config.enabled,
            lazy=self.config.lazy,
            restarts=self.restarts,
        )

    async def _supervise(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                self._wake.clear()
                cause = await self._attempt()
                if self._stopping:
                    break
                ready_since = self._ready_since
                if ready_since is not None and time.monotonic() - ready_since >= STABLE_S:
                    failures = 0
                delay = min(self._restart_base * 2**failures, self._restart_max)
                failures += 1
                self._failed(cause, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self.state = "stopped"
            self._ready.clear()
            self._first_outcome.set()

    async def _attempt(self) -> str:
        """Connect and serve until the server goes away; the cause of its end."""
        from mcp import Client

        from agent_template import __version__

        watch = TransportWatch(self.name, on_lost=self._wake.set)
        self._watch = watch
        client = Client(
            open_transport(self.config, watch),
            message_handler=self._on_message,
            elicitation_callback=self._answer_elicitation,
            client_info=mt.Implementation(name="agent-template", version=__version__),
            cache=None,  # the tool list is kept here and re-listed when the server says so
        )
        # One cancel scope for the whole attempt: the SDK's task groups open inside it, and its
        # deadline (the start-up timeout) is lifted once the server is ready.
        deadline = anyio.CancelScope(deadline=anyio.current_time() + self.config.startup_timeout)
        self._connecting = True
        try:
            with deadline:
                async with client:
                    tools = await _sdk.list_tools(client)
                    deadline.deadline = math.inf
                    self._connecting = False
                    self._connected(client, tools, watch)
                    await self._serve(client)
            if deadline.cancelled_caught:
                return timeout_cause(self.config.startup_timeout, watch)
            return watch.exit_cause() or "closed the connection"
        except Exception as exc:  # every failure is reported in status(), never raised
            return describe_failure(exc, self.config, watch)
        finally:
            self._connecting = False
            self._client = None
            self._ready.clear()

    def _connected(self, client: Client, tools: list[mt.Tool], watch: TransportWatch) -> None:
        self._client = client
        self.protocol_version = client.protocol_version
        info = client.server_info
        self.server_name = info.name if info else None
        self.server_version = info.version if info else None
        self.capabilities = client.server_capabilities
        self.instructions = client.instructions
        self.tools = tuple(tools)
        self.tools_version += 1
        self.needs_relist = False
        if self._ever_ready:
            self.restarts += 1
        self._ever_ready = True
        self._ready_since = time.monotonic()
        self._logged_cause = None
        watch.http_status = None  # a refused probe on the way in is no cause of a later end
        self.state, self.error = "ready", None
        self._down.clear()
        self._ready.set()
        self._first_outcome.set()
        self._on_change()
        _log.info(
            "MCP server %r is ready (protocol %s, %d tools)",
            self.name,
            self.protocol_version,
            len(tools),
            extra={"mcp_server": self.name},
        )

    def _failed(self, cause: str, delay: float) -> None:
        self.error = cause
        self.state = "restarting" if self._ever_ready else "failed"
        self._ready_since = None
        self._down.set()
        self._first_outcome.set()
        self._on_change()
        if cause != self._logged_cause:  # a server failing the same way every time logs once
            self._logged_cause = cause
            what = "went away" if self._ever_ready else "failed to start"
            _log.warning(
                "MCP server %r %s: %s. Trying again in %g s.",
                self.name,
                what,
                cause,
                delay,
                extra={"mcp_server": self.name},
            )

    async def _serve(self, client: Client) -> None:
        """Wait until the server goes away or we close, listening for tool changes."""
        from mcp.types.version import MODERN_PROTOCOL_VERSIONS

        tools = self.capabilities.tools if self.capabilities else None
        async with anyio.create_task_group() as tg:
            if self.protocol_version in MODERN_PROTOCOL_VERSIONS and tools and tools.list_changed:
                tg.start_soon(self._listen, client)
            await self._wake.wait()
            tg.cancel_scope.cancel()

    async def _listen(self, client: Client) -> None:
        """Hear of tool changes on the stateless protocol, which sends them only on request.

        Handshake-era servers send ``notifications/tools/list_changed`` unasked; both arrive
        at :meth:`_on_message` too.
        """
        from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost

        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._tools_changed()
        except (ListenNotSupportedError, SubscriptionLost, MCPError) as exc:
            _log.debug("MCP server %r: no change subscription (%s)", self.name, exc)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            _log.warning("MCP server %r: transport error: %s", self.name, message)
        elif isinstance(message, mt.ToolListChangedNotification):
            self._tools_changed()

    def _tools_changed(self) -> None:
        self.needs_relist = True
        self._on_change()

    async def _answer_elicitation(
        self, context: ClientRequestContext, params: mt.ElicitRequestParams
    ) -> mt.ElicitResult | mt.ErrorData:
        latest = self._calls[-1] if self._calls else None
        return await _sdk.answer_elicitation(self.name, self._on_elicit, params, latest)

    # ------------------------------------------------------------------ use

    async def relist(self) -> None:
        """List the tools again if the server said they changed; failures keep the old list."""
        client = self._client
        if not self.needs_relist or client is None or self.state != "ready":
            return
        self.needs_relist = False  # first: a change announced during the listing lists again
        try:
            async with asyncio.timeout(self.config.call_timeout):
                tools = await _sdk.list_tools(client)
        except Exception as exc:  # the connection's own supervision handles a dead server
            _log.warning("MCP server %r: could not list its tools again: %s", self.name, exc)
            return
        self.tools = tuple(tools)
        self.tools_version += 1

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        as_name: str,
        context: ToolContext | None = None,
    ) -> str | list[ContentPart]:
        """Call ``tool`` and map its result (see ``_convert``). While it runs, a question
        the server asks the user (elicitation) is put to ``context``'s run.

        Raises:
            McpToolError: the tool answered with an error (its text), or an invalid result.
            McpServerError: the server is down, restarting, or went away during the call.
            ToolArgumentsError: the server refused the arguments.
        """
        client = await self._ready_client(as_name)
        if context is not None:
            self._calls.append(context)
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            raise await self._call_error(exc, as_name) from None
        except ValidationError as exc:
            raise McpToolError(
                as_name, self.name, f"the server's answer is not a valid MCP result: {exc}"
            ) from None
        except RuntimeError as exc:  # the SDK's check of structured content against its schema
            raise McpToolError(as_name, self.name, str(exc)) from None
        finally:
            if context is not None:
                self._calls.remove(context)
        return tool_result(result, tool=as_name, server=self.name)

    async def request(self, what: str, job: Any) -> Any:
        """Run ``job(client)`` (a resource or prompt request) within the call timeout.

        Raises:
            McpServerError: the server is not available, failed, or did not answer in time.
        """
        client = await self._ready_client(what)
        try:
            async with asyncio.timeout(self.config.call_timeout):
                return await job(client)
        except TimeoutError:
            raise McpServerError(
                what, self.name, f"did not answer within {self.config.call_timeout:g} s"
            ) from None
        except MCPError as exc:
            if exc.code == mt.CONNECTION_CLOSED:
                raise await self._lost_error(what) from None
            raise McpServerError(what, self.name, f"answered: {exc.error.message}") from None

    async def _ready_client(self, as_name: str) -> Client:
        if self.state == "ready" and self._client is not None:
            return self._client
        if self._task is None or self._stopping:
            raise McpServerError(as_name, self.name, "is not running.")
        # Starting: wait for the first attempt's outcome. Restarting: for the next success.
        waiting_for = self._first_outcome if self.state == "starting" else self._ready
        if self.state != "failed":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.startup_timeout):
                    await waiting_for.wait()
        if self.state == "ready" and self._client is not None:
            return self._client
        if self.state == "restarting":
            raise McpServerError(
                as_name, self.name, f"is restarting ({self.error}). Try again later."
            )
        raise McpServerError(as_name, self.name, f"is not available: {self.error}.")

    async def _call_error(self, exc: MCPError, as_name: str) -> Exception:
        message = exc.error.message
        if exc.code == mt.CONNECTION_CLOSED:
            return await self._lost_error(as_name)
        if exc.code == mt.INVALID_PARAMS and message.lower().startswith("unknown tool"):
            self._tools_changed()  # the server dropped it without saying so: list again
            return McpToolError(
                as_name, self.name, f"the server no longer has this tool ({message})"
            )
        if exc.code == mt.INVALID_PARAMS:
            return ToolArgumentsError(
                as_name, f"the server refused the call: {message}. Fix the arguments."
            )
        return McpToolError(
            as_name, self.name, f"the server answered with an error: {message} (code {exc.code})"
        )

    async def _lost_error(self, as_name: str) -> McpServerError:
        if self._stopping:
            return McpServerError(as_name, self.name, "was closed during the call.")
        if self._watch is not None:
            self._watch.mark_lost()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOST_CAUSE_WAIT_S):
                await self._down.wait()
        cause = self.error or "closed the connection"
        return McpServerError(
            as_name, self.name, f"went away during the call ({cause}); it is being restarted."
        )
