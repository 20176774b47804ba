"""Default wiring: an :class:`AgentLoop` that knows how to run chat turns in sessions.

``core.scheduler.TaskScheduler`` is a scheduler with no opinion about what tasks do. This module
composes it with a model, tools and a :class:`SessionManager`, so ``AgentLoop()`` with no
arguments runs ``chat`` tasks against the configured provider (the offline model without one).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel as BaseModelAlias

from agent_template.agent import Agent
from agent_template.core.metrics import Metrics, default_metrics
from agent_template.core.scheduler import TaskScheduler
from agent_template.core.stream_store import MemoryStreamStore, default_stream_store
from agent_template.errors import AgentTemplateError, SessionNotFoundError
from agent_template.models import (
    Message,
    SystemMessage,
    Task,
    TaskState,
    ToolCall,
    ToolContext,
    ToolResultMessage,
)
from agent_template.services.approvals import ApprovalManager
from agent_template.services.compressor import STATE_VERSION, CompactionResult, ContextCompressor
from agent_template.services.session_manager import SessionManager
from agent_template.services.todo_manager import TodoManager

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.core.bus import EventBus
    from agent_template.core.hooks import HookRegistry
    from agent_template.core.run_loop import ModelClient
    from agent_template.core.stream_store import StreamStore
    from agent_template.services.subagent import SubagentManager
    from agent_template.services.tool_manager import ToolLike, ToolManager

__all__ = ["DEFAULT_INSTRUCTIONS", "AgentLoop", "ChatHandler", "stream_store"]

log = logging.getLogger("agent_template.runtime")

HOUSEKEEPING_PERIOD_S = 60.0  # how often a service looks for dead tasks and idle sessions
DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Use the tools you have when they help."


def stream_store(settings: Settings) -> MemoryStreamStore:
    """An in-process stream store with the retention the settings ask for."""
    return MemoryStreamStore(
        retain=settings.stream_retain_chunks,
        retain_bytes=settings.stream_retain_bytes,
        max_bytes=settings.stream_buffer_bytes,
        linger_s=settings.stream_linger,
    )


class ChatHandler:
    """Runs one chat turn in a session: loads its context and returns the run's events.

    The run stores every new message in the session before announcing it, and keeps the
    partial answer of a cancelled or failed turn.
    """

    def __init__(
        self,
        agent: Agent,
        sessions: SessionManager,
        *,
        checkpoint_interval: float = 1.0,
        publisher: Callable[[str], Callable[[Any], object] | None] | None = None,
        approvals: ApprovalManager | None = None,
        before_turn: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.agent = agent
        self.sessions = sessions
        self.checkpoint_interval = checkpoint_interval
        self.publisher = publisher
        self.approvals = approvals
        self.before_turn = before_turn

    async def __call__(self, task: Task) -> AsyncIterator[BaseModelAlias]:
        payload = task.payload
        resume = bool(payload.get("resume"))
        message = payload.get("message") or payload.get("content")
        if not resume and (not isinstance(message, str) or not message.strip()):
            raise ValueError("a chat task needs a non-empty 'message'")
        sessions = self.sessions
        history: list[Any] = []
        session_id = task.session_id
        task_id = task.task_id
        save = checkpoint = None
        registry = None
        if session_id is not None:
            registry = await self._session_tools(session_id)
            # The scheduler starts a session's runs one at a time: this is the history the
            # previous run left.
            history = await sessions.get_context(session_id, open_calls=resume)
            compressor = self.agent.compressor
            known = await _restore_compaction(compressor, sessions, session_id)

            async def save(messages: list[Message]) -> None:
                nonlocal known
                await sessions.add_messages(session_id, messages, task_id=task_id)
                if compressor is not None:
                    current = compressor.dump_state(session_id)["sessions"].get(session_id)
                    if current != known:  # a new summary: keep it for the next process too
                        await sessions.save_compaction(session_id, current)
                        known = current

            async def checkpoint(text: str) -> None:
                await sessions.checkpoint(session_id, task_id, text)

        if resume:
            results, calls = await self._open_calls(history, task_id)
            run = self.agent.resume(
                history,
                results=results,
                calls=calls,
                session_id=session_id,
                task_id=task_id,
                user_id=task.user_id,
                model=payload.get("model"),
                on_messages=save,
                tools=registry,
            )
        else:
            run = self.agent.start(
                str(message),
                history=history,
                session_id=session_id,
                task_id=task_id,
                user_id=task.user_id,
                model=payload.get("model"),
                on_messages=save,
                tools=registry,
            )
        context = run.config.context
        if self.publisher is not None and isinstance(context, ToolContext):
            context.emit = self.publisher(task_id)
        if self.approvals is not None:
            run.config.keep_pending = self.approvals.keep_pending
        run.config.before_turn = self.before_turn
        if checkpoint is not None:
            run.config.checkpoint = checkpoint
            run.config.checkpoint_interval = self.checkpoint_interval
        # The run's own iterator, not a wrapper: one layer less on the streaming path.
        return aiter(run)

    async def _session_tools(self, session_id: str) -> ToolManager | None:
        """The session's own view of the tools (None: all of them): without those it turned
        off; its permission rules take effect for this run's calls."""
        settings = await self.sessions.load_tool_settings(session_id)
        if self.approvals is not None:
            try:
                self.approvals.use_session_settings(session_id, settings)
            except AgentTemplateError:
                log.warning("session %s has invalid permission rules", session_id)
        disabled = set(settings.get("disabled") or ())
        if not disabled:
            return None
        tools = self.agent.tools
        view = tools.subset(t.name for t in tools.tools() if t.name not in disabled)
        for tool in view.tools():
            bound = getattr(tool, "bound", None)  # a subagent tool draws on this view
            if bound is not None:
                view.register(bound(view), replace=True)
        return view

    async def _open_calls(
        self, history: list[Any], task_id: str
    ) -> tuple[list[ToolResultMessage], list[ToolCall]]:
        """The tool calls a stopped run left without results: those with an answered
        approval run now (the approval decides); the others were running when the process
        stopped, and get a result saying so (they may or may not have had their effect)."""
        last = next(
            (i for i in range(len(history) - 1, -1, -1) if history[i].role == "assistant"), None
        )
        if last is None:
            return [], []
        done = {m.tool_call_id for m in history[last + 1 :] if m.role == "tool"}
        open_calls = [c for c in history[last].tool_calls if c.id not in done]
        answered: set[str] = set()
        if self.approvals is not None and open_calls:
            answered = {
                r.call_id
                for r in await self.approvals.store.find_approvals(task_id=task_id)
                if r.state != "pending" and r.kind == "tool_call"
            }
        results = [
            ToolResultMessage(
                tool_call_id=c.id,
                name=c.name,
                content=(
                    "The call was interrupted when the server stopped; whether it had its "
                    "effect is unknown. Check before calling it again."
                ),
                is_error=True,
            )
            for c in open_calls
            if c.id not in answered
        ]
        return results, [c for c in open_calls if c.id in answered]


async def _restore_compaction(
    compressor: ContextCompressor | None, sessions: SessionManager, session_id: str
) -> dict[str, Any] | None:
    """Give the compressor the session's stored summary; return it as stored."""
    if compressor is None:
        return None
    current = compressor.dump_state(session_id)["sessions"].get(session_id)
    if current is not None:
        return dict(current)
    stored = await sessions.load_compaction(session_id)
    if stored:
        try:
            compressor.load_state({"version": STATE_VERSION, "sessions": {session_id: stored}})
        except (ValueError, KeyError):  # an older format: summarise afresh instead
            return None
    return stored


class AgentLoop(TaskScheduler):
    """The task scheduler with a ``chat`` handler wired to a model, tools and sessions.

    ``AgentLoop()`` with no arguments loads the settings once and builds everything from them;
    an application's composition root passes what it built instead (``session_manager``,
    ``streams``, ``bus``, ``metrics``), and owns it.

    Args:
        settings: configuration; read from the environment if omitted.
        model: the model for chat turns (a ``ModelManager`` from the settings by default).
        session_manager: where chat history lives (the database of the settings by default).
        tools: tools chat turns may call.
        instructions: the system prompt of chat turns.
        todo_tools: offer the agent ``todo_write``/``todo_read`` for its session's plan.
        builtin_tools: offer the sandboxed shell and file tools of the workspace folder
            (``BUILTIN_TOOLS`` by default).
        subagents: offer the ``subagent`` tool (the types of ``SUBAGENTS_CONFIG``, or the
            general one), unless ``SUBAGENT_MAX_DEPTH`` is 0.
        metrics: where counters and histograms go (the process's metrics by default); the
            loop's gauges are collected until :meth:`stop`.
        streams: where tasks' chunk streams live. By default the process's default store,
            which a no-argument ``StreamGenerator()`` serves too, built from these settings
            when this is the first loop to use it.

    Raises:
        ConfigurationError: a user tool is named like another tool or a built-in one.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        model: ModelClient | str | None = None,
        session_manager: SessionManager | None = None,
        tools: Iterable[ToolLike] = (),
        instructions: str = DEFAULT_INSTRUCTIONS,
        bus: EventBus | None = None,
        hooks: HookRegistry | None = None,
        max_concurrent_tasks: int | None = None,
        todo_tools: bool = True,
        builtin_tools: bool | None = None,
        subagents: bool = True,
        metrics: Metrics | None = None,
        streams: StreamStore | None = None,
        **kwargs: Any,
    ) -> None:
        if settings is None:
            from agent_template.config import load_settings

            settings = load_settings()
        self.metrics = metrics if metrics is not None else default_metrics()
        self._owns_sessions = session_manager is None
        sessions = session_manager or SessionManager(
            settings, on_cache_fallback=self._cache_fell_back
        )
        kwargs.setdefault("task_store", sessions.store)
        kwargs.setdefault("lease_s", settings.task_lease_seconds)
        super().__init__(
            max_concurrent_tasks=max_concurrent_tasks or settings.max_concurrent_tasks,
            bus=bus,
            hooks=hooks,
            streams=(
                streams
                if streams is not None
                else default_stream_store(lambda: stream_store(settings))
            ),
            **kwargs,
        )
        self.settings = settings
        self.sessions = sessions
        if sessions.bus is None:
            sessions.bus = self.bus
        self.todos = TodoManager(sessions.store, bus=self.bus)
        all_tools = list(tools)
        if todo_tools:
            all_tools.extend(self.todos.tools())
        if settings.builtin_tools if builtin_tools is None else builtin_tools:
            from agent_template.services.builtin_tools import builtin_tools as sandboxed
            from agent_template.services.sandbox import SandboxConfig

            all_tools.extend(sandboxed(SandboxConfig.from_settings(settings)))
        self.agent = Agent(
            instructions,
            tools=all_tools,
            model=model,
            settings=settings,
            hooks=hooks,
            bus=self.bus,
        )
        self.compressor = ContextCompressor(
            max_context_length=settings.max_context_length,
            threshold=settings.context_compression_threshold,
            enabled=settings.context_compression,
            model=self.agent.model,  # summaries come from the same model, with failover
            bus=self.bus,
        )
        self.agent.compressor = self.compressor
        from agent_template.services.permissions import PermissionPolicy

        self.approvals = ApprovalManager(
            sessions.store,  # type: ignore[arg-type]
            PermissionPolicy.load(settings.permissions_config),
            timeout_s=settings.approval_timeout_s,
            resume=self.resume_task,
        )
        self.approvals.scheduler = self
        self.agent.tools.authorizer = self.approvals
        from agent_template.services.mcp import McpManager

        # No servers without an .mcp.json; their questions to the user go as approvals do.
        self.mcp = McpManager.from_settings(settings, on_elicit=self.approvals.elicit)
        self._mcp_started = False
        self._mcp_starting = asyncio.Lock()
        self.subagents: SubagentManager | None = None
        if subagents and settings.subagent_max_depth > 0:
            from agent_template.services.subagent import SubagentManager

            self.subagents = SubagentManager.from_settings(settings)
            self.subagents.install(self)
        self._janitor: asyncio.Task[None] | None = None
        self.metrics.attach(self.bus)
        gauges = weakref.WeakMethod(self._gauges)  # the collector does not keep the loop alive
        remove = self.metrics.add_collector(lambda: (gauges() or dict)())
        # Removed at stop(), or when the loop is collected without being stopped.
        self._remove_collector = weakref.finalize(self, remove)
        self.register_handler(
            "chat",
            ChatHandler(
                self.agent,
                self.sessions,
                checkpoint_interval=settings.checkpoint_interval,
                publisher=self.publisher,
                approvals=self.approvals,
                before_turn=self._refresh_tools if self.mcp.servers else None,
            ),
        )

    def _cache_fell_back(self, reason: str) -> None:
        self.metrics.inc("cache_fallbacks_total")

    async def create_task(self, spec: Any, **kwargs: Any) -> Task:
        """Queue a task. A task's session must be its user's: a chat task's is created for the
        user if it does not exist yet; without a ``user_id`` the task acts as the session's
        owner (trusted in-process callers only).

        Raises:
            SessionNotFoundError: the session is another user's, or it does not exist and the
                task names no user to create it for.
        """
        is_task = isinstance(spec, Task)
        session_id = kwargs.get("session_id") or (
            spec.session_id if is_task else spec.get("session_id")
        )
        user_id = kwargs.get("user_id") or (spec.user_id if is_task else spec.get("user_id"))
        task_type = spec.type if is_task else spec.get("type", "chat")
        if session_id:  # any task on a session must be its owner's
            uid = None if user_id is None else str(user_id)
            try:  # read first: usually cached, and no write per message
                session = await self.sessions.get_session(session_id, user_id=uid)
            except SessionNotFoundError:
                if uid is None or task_type != "chat":
                    raise
                session = await self.sessions.get_or_create(session_id, uid)
            kwargs["user_id"] = session.user_id
        return await super().create_task(spec, **kwargs)

    async def resume_task(self, record: Any) -> Task | None:
        """Resume a run that stopped while waiting for an approval (``record``), now that
        its answers are in: a task with the same id continues it from its open tool calls.

        Nothing happens when the run is live (here, or in a process whose lease on it
        holds) or is not waiting any more.
        """
        task_id, session_id = record.task_id, record.session_id
        live = self._tasks.get(task_id)
        if live is not None and not live.done:
            return None
        if session_id is None:
            return None
        stored = next(
            (t for t in await self.sessions.store.load_tasks(session_id) if t.task_id == task_id),
            None,
        )
        if stored is None or stored.state != TaskState.WAITING.value:
            return None
        from agent_template.services.storage.engine import owner_is_dead

        holder = stored.lease_owner
        expires = stored.lease_expires_at
        if holder is not None and not owner_is_dead(holder) and (expires or 0) > time.time():
            return None  # another process still runs it; it sees the answer itself
        self.streams.release(task_id)  # a stream this process kept of the stopped run
        task = Task(
            task_id=task_id,
            type=stored.type,
            session_id=session_id,
            user_id=stored.user_id or record.user_id,
            payload={"resume": True},
            created_at=stored.created_at,
        )
        return await self.create_task(task)

    async def _refresh_tools(self) -> None:
        """Before a model turn: MCP servers started on first use, and the tools of those
        whose list changed re-listed (no I/O when nothing changed)."""
        mcp = self.mcp
        if not self._mcp_started:
            async with self._mcp_starting:
                if not self._mcp_started:
                    await mcp.start()
                    mcp.sync(self.agent.tools)
                    self._mcp_started = True
            return
        if await mcp.refresh():
            mcp.sync(self.agent.tools)

    async def start(self) -> None:
        """Run as a service: connect the MCP servers, and recover tasks of dead processes
        and, with SESSION_TTL, delete idle sessions, periodically until :meth:`stop`."""
        if self.mcp.servers:
            await self._refresh_tools()
        await super().start()
        if self._janitor is None:
            self._janitor = asyncio.create_task(self._housekeeping(), name="session housekeeping")

    async def stop(self, deadline: float = 10.0) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)
            self._janitor = None
        await super().stop(deadline)
        self._remove_collector()

    async def aclose(self) -> None:
        """Stop, then release connections: the session store if this loop built it, and the
        model's clients (a model passed in stays usable: its clients reopen on next use)."""
        await self.stop()
        await self.mcp.aclose()
        if self.subagents is not None:
            await self.subagents.aclose()
        if self._owns_sessions:
            await self.sessions.close()
        await self.agent.aclose()

    async def __aenter__(self) -> AgentLoop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _housekeeping(self) -> None:
        ttl = self.settings.session_ttl
        period = min(ttl / 4, HOUSEKEEPING_PERIOD_S) if ttl else HOUSEKEEPING_PERIOD_S
        while True:
            try:
                await self.sessions.recover()
                await self.approvals.sweep()
                if ttl:
                    await self.sessions.cleanup_idle(ttl)
            except Exception:  # storage trouble now must not end housekeeping for good
                log.exception("session housekeeping failed; retrying in %.0fs", period)
            await asyncio.sleep(period)

    def _gauges(self) -> dict[str, float]:
        """Values read when metrics are collected: queue depths and provider failovers."""
        values: dict[str, float] = {
            "tasks_pending": self.pending_count,
            "tasks_running": self.running_count,
            "stream_chunks_dropped_total": self.chunks_dropped,
            "events_published_total": getattr(self.bus, "published", 0),
        }
        model = self.agent.model
        failovers = getattr(model, "failovers", None)
        if failovers is not None:
            values["model_failovers_total"] = failovers
        return values

    async def compact_session(self, session_id: str) -> CompactionResult:
        """Compact a session's context now; the stored history itself is never changed."""
        history = await self.sessions.get_context(session_id)
        await _restore_compaction(self.compressor, self.sessions, session_id)
        instructions = [SystemMessage(content=self.agent.instructions)]
        result = await self.compressor.compact(
            [*instructions, *history], session_id=session_id, tools=self.agent.tools.definitions()
        )
        state = self.compressor.dump_state(session_id)["sessions"].get(session_id)
        await self.sessions.save_compaction(session_id, state)
        return result
