"""Subagents: an agent hands a self-contained task to a helper agent running as a child task.

A subagent type (``researcher``, ``reviewer``...) is instructions, a choice of the parent's tools,
optionally another model and a turn limit. The parent's model calls the ``subagent`` tool with
a type and a task; the tool starts a ``subagent`` task of the agent loop under the parent's
task, waits for it (lending the parent's concurrency slot meanwhile) and returns the child's
final answer as the call's result. The child starts from a fresh context (its instructions and
the task text, nothing of the parent's conversation), and its tools are a subset of its
parent's registry with the same authorizer, so it can never do more than its parent may.

While a child runs, every chunk of its stream is put into the parent's stream as a
``subagent`` event; a grandchild's events arrive nested twice. Cancelling the parent cancels
its children. See ``docs/subagents.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_template.core.run_loop import ModelClient, RunConfig, RunState, run_events
from agent_template.errors import (
    AgentTemplateError,
    ConfigurationError,
    TaskNotFoundError,
    ToolArgumentsError,
)
from agent_template.models import (
    RunEvent,
    SubagentEvent,
    SystemMessage,
    Task,
    TaskPriority,
    TaskState,
    ToolDefinition,
    UserMessage,
)
from agent_template.services._subagent_types import (
    GENERAL,
    SUBAGENT_TOOL_NAME,
    SubagentDepthError,
    SubagentError,
    SubagentType,
    load_subagent_types,
)
from agent_template.services.tool_manager import Tool, ToolContext, ToolManager

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.core.stream_gen import StreamConsumer
    from agent_template.runtime import AgentLoop

__all__ = [
    "GENERAL",
    "SUBAGENT_TASK_TYPE",
    "SUBAGENT_TOOL_NAME",
    "SubagentDepthError",
    "SubagentError",
    "SubagentManager",
    "SubagentTool",
    "SubagentType",
    "load_subagent_types",
]

log = logging.getLogger("agent_template.subagents")

SUBAGENT_TASK_TYPE = "subagent"
# A child bounds itself by turns and each of its tool calls by their own timeouts; this is the
# backstop for the whole delegation, far above the default tool timeout a child easily needs.
DEFAULT_TIMEOUT_S = 1800.0

Emit = Callable[[Any], object]


# --------------------------------------------------------------------------- the tool


class SubagentTool(Tool):
    """The ``subagent`` tool: starts a child run of a declared type and returns its answer.

    A child's registry holds its own instance (bound to that registry), so that its children
    draw on its tools, never on more.
    """

    __slots__ = ("_manager", "_registry", "definition", "description", "name", "timeout")

    source = "subagent"

    def __init__(self, manager: SubagentManager, registry: ToolManager | None = None) -> None:
        self._manager = manager
        self._registry = registry  # None: the root registry the manager was installed with
        self.name = SUBAGENT_TOOL_NAME
        self.timeout = manager.timeout
        types = manager.types.values()
        listing = "\n".join(f"- {t.name}: {t.description}" for t in types)
        self.description = (
            "Delegate a self-contained task to a subagent: a helper that works in a fresh "
            "context (it does not see this conversation, only the task you write) with its own "
            "instructions and tools, and returns its final answer as this call's result. Give "
            "it everything it needs: the goal, the relevant facts and paths, and what to "
            "report back. Several calls in one turn run in parallel.\n"
            f"Subagent types:\n{listing}"
        )
        self.definition = ToolDefinition(
            name=self.name,
            description=self.description,
            parameters={
                "type": "object",
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": [t.name for t in types],
                        "description": "Which subagent to use (see the types above).",
                    },
                    "task": {
                        "type": "string",
                        "description": "The whole task, self-contained: the subagent sees "
                        "nothing else.",
                    },
                    "description": {
                        "type": "string",
                        "description": "A short label for the user (3 to 6 words).",
                    },
                },
                "required": ["type", "task"],
                "additionalProperties": False,
            },
        )

    def bound(self, registry: ToolManager) -> SubagentTool:
        """The same tool for a run whose tools are ``registry``."""
        return SubagentTool(self._manager, registry)

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """Raises ToolArgumentsError: an unknown type, an empty task or an unknown argument."""
        args = super().parse_arguments(arguments)
        names = ", ".join(self._manager.types)
        unknown = sorted(set(args) - {"type", "task", "description"})
        if unknown:
            raise ToolArgumentsError(
                self.name,
                f"unknown argument(s) {', '.join(unknown)}; pass type, task and "
                "optionally description.",
            )
        if args.get("type") not in self._manager.types:
            raise ToolArgumentsError(
                self.name, f"'type' must be one of {names}; got {args.get('type')!r}."
            )
        task = args.get("task")
        if not isinstance(task, str) or not task.strip():
            raise ToolArgumentsError(
                self.name,
                "'task' must be a non-empty string holding the whole task (the "
                "subagent does not see this conversation).",
            )
        label = args.get("description", "")
        if not isinstance(label, str):
            raise ToolArgumentsError(self.name, "'description' must be a string.")
        return {"type": args["type"], "task": task, "description": label}

    async def __call__(self, arguments: str, context: ToolContext | None = None) -> Any:
        args = self.parse_arguments(arguments)
        return await self._manager.delegate(
            args["type"],
            args["task"],
            context or ToolContext(),
            description=args["description"],
            registry=self._registry,
        )


# --------------------------------------------------------------------------- the manager


@dataclass(slots=True)
class _Spawn:
    """What a child inherits from the run that started it."""

    registry: ToolManager
    depth: int
    deps: Any = None
    session_id: str | None = None  # the session the whole tree of runs works for


@dataclass(slots=True)
class _Gate:
    semaphore: asyncio.Semaphore
    users: int = 0


class SubagentManager:
    """The declared subagent types, the ``subagent`` tool and the ``subagent`` task handler.

    Args:
        types: the types the model may start; the built-in :data:`GENERAL` when empty.
        max_depth: how many levels subagents may nest (0: none at all).
        max_concurrent: children of one run at once; further calls wait their turn.
        timeout: seconds one delegation may take in all before it is cancelled.

    Raises:
        ConfigurationError: two types share a name, or a limit is out of range.
    """

    def __init__(
        self,
        types: Iterable[SubagentType] = (),
        *,
        max_depth: int = 2,
        max_concurrent: int = 4,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        chosen = list(types) or [GENERAL]
        self.types: dict[str, SubagentType] = {}
        for kind in chosen:
            if kind.name in self.types:
                raise ConfigurationError(f"Two subagent types are named {kind.name!r}.")
            self.types[kind.name] = kind
        if max_depth < 0 or max_concurrent < 1:
            raise ConfigurationError(
                "SUBAGENT_MAX_DEPTH must be 0 or more and SUBAGENT_MAX_CONCURRENT at least 1."
            )
        self.max_depth = max_depth
        self.max_concurrent = max_concurrent
        self.timeout = timeout
        self._loop: AgentLoop | None = None
        self._root: ToolManager | None = None
        self._tool = SubagentTool(self)
        self._spawns: dict[str, _Spawn] = {}  # child task id -> what it inherits, until it starts
        self._gates: dict[str, _Gate] = {}  # parent task id -> its children's semaphore
        self._models: dict[str, ModelClient] = {}  # type name -> the model client built for it
        self._warned: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> SubagentManager:
        """Types from ``SUBAGENTS_CONFIG`` (the built-in ``general`` without one) and limits
        from ``SUBAGENT_MAX_DEPTH`` and ``SUBAGENT_MAX_CONCURRENT``.

        Raises:
            ConfigurationError: as :func:`load_subagent_types`.
        """
        path = settings.subagents_config
        return cls(
            load_subagent_types(path) if path is not None else (),
            max_depth=settings.subagent_max_depth,
            max_concurrent=settings.subagent_max_concurrent,
        )

    def tool(self) -> SubagentTool:
        """The ``subagent`` tool (usable once :meth:`install` has run)."""
        return self._tool

    def install(self, loop: AgentLoop, *, registry: ToolManager | None = None) -> SubagentTool:
        """Register the ``subagent`` task handler on ``loop`` and the tool in ``registry``
        (the loop agent's tools by default), unless ``max_depth`` is 0.

        Raises:
            ConfigurationError: installed on another loop already, or another tool is named
                ``subagent``.
        """
        if self._loop is not None and self._loop is not loop:
            raise ConfigurationError("This SubagentManager is installed on another loop already.")
        self._loop = loop
        self._root = registry if registry is not None else loop.agent.tools
        loop.register_handler(SUBAGENT_TASK_TYPE, self._handle)
        if self.max_depth > 0:
            self._root.register(self._tool)  # the same tool again is harmless
        return self._tool

    async def aclose(self) -> None:
        """Close the connections of the models built for subagent types (they reopen)."""
        for model in self._models.values():
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()

    # ------------------------------------------------------------------ delegating

    async def delegate(
        self,
        agent: str,
        task: str,
        context: ToolContext,
        *,
        description: str = "",
        registry: ToolManager | None = None,
    ) -> str:
        """Run a child of type ``agent`` on ``task`` for the run of ``context``; its answer.

        Raises:
            SubagentDepthError: the run is at the deepest level allowed.
            SubagentError: the child failed, was cancelled or was interrupted.
            ConfigurationError: not installed on a loop.
        """
        loop, root = self._installed()
        if agent not in self.types:
            raise ToolArgumentsError(
                SUBAGENT_TOOL_NAME,
                f"no subagent type {agent!r}; use one of {', '.join(self.types)}.",
            )
        if context.depth >= self.max_depth:
            raise SubagentDepthError(agent, context.depth, self.max_depth)
        parent = self._live_task(context.task_id)
        spawn = _Spawn(
            registry if registry is not None else root,
            context.depth + 1,
            context.deps,
            context.session_id or context.extra.get("parent_session_id"),
        )
        child = Task(
            type=SUBAGENT_TASK_TYPE,
            payload={"agent": agent, "task": task, "description": description},
            parent_id=parent.task_id if parent is not None else None,
            user_id=context.user_id,
            priority=parent.priority if parent is not None else TaskPriority.NORMAL,
        )
        async with self._slot(context.task_id or ""):
            await self._run_child(loop, child, spawn, context.emit, context.call_id)
        return _answer(agent, child)

    async def _run_child(
        self, loop: AgentLoop, child: Task, spawn: _Spawn, emit: Emit | None, call_id: str
    ) -> None:
        """Start the child, forward its stream while waiting, cancel it if we stop waiting."""
        self._spawns[child.task_id] = spawn
        forward: asyncio.Task[None] | None = None
        consumer: StreamConsumer | None = None
        created = False
        try:
            await loop.create_task(child)
            created = True
            if emit is not None:
                consumer = loop.subscribe(child.task_id)
                forward = asyncio.create_task(
                    _forward(consumer, emit, child, call_id, spawn.depth),
                    name=f"subagent {child.task_id} events",
                )
            await loop.wait(child.task_id)
            if forward is not None:
                await forward  # the child's stream has ended: this drains what is left
        finally:
            self._spawns.pop(child.task_id, None)
            if created and not child.done:  # we stopped waiting: cancelled, or timed out
                await loop.cancel_task(child.task_id)
            if forward is not None and not forward.done():
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)
            if consumer is not None:
                consumer.close()

    @contextlib.asynccontextmanager
    async def _slot(self, parent_id: str) -> AsyncIterator[None]:
        """One of the ``max_concurrent`` places for children of the run ``parent_id``."""
        gate = self._gates.get(parent_id)
        if gate is None:
            gate = self._gates[parent_id] = _Gate(asyncio.Semaphore(self.max_concurrent))
        gate.users += 1
        try:
            async with gate.semaphore:
                yield
        finally:
            gate.users -= 1
            if not gate.users:
                del self._gates[parent_id]

    def _installed(self) -> tuple[AgentLoop, ToolManager]:
        if self._loop is None or self._root is None:
            raise ConfigurationError(
                "The subagent tool is not installed on an agent loop; call "
                "SubagentManager.install(loop) first."
            )
        return self._loop, self._root

    def _live_task(self, task_id: str | None) -> Task | None:
        """The loop's task ``task_id`` (a run outside the loop has a run id, not a task)."""
        if task_id is None or self._loop is None:
            return None
        try:
            task = self._loop.get_task(task_id)
        except TaskNotFoundError:
            return None
        return None if task.done else task

    # ------------------------------------------------------------------ the child run

    def _handle(self, task: Task) -> AsyncIterator[RunEvent]:
        """The ``subagent`` task handler: the child's run, from its type and what it inherits.

        A ``subagent`` task created directly (``{"type": "subagent", "agent": NAME, "task":
        TEXT}``) runs as a first-level child of the loop's agent.
        """
        loop, root = self._installed()
        agent = str(task.payload.get("agent", ""))
        kind = self.types.get(agent)
        if kind is None:
            raise SubagentError(
                agent, f"No subagent type {agent!r}; declared: {', '.join(self.types)}."
            )
        text = task.payload.get("task")
        if not isinstance(text, str) or not text.strip():
            raise SubagentError(agent, f"The subagent {agent!r} needs a non-empty 'task'.")
        spawn = self._spawns.pop(task.task_id, None) or _Spawn(root, 1, loop.agent.deps)
        tools = self._child_tools(kind, spawn.registry, spawn.depth)
        model, model_name = self._model_for(kind, loop)
        context = ToolContext(
            task_id=task.task_id,
            user_id=task.user_id,
            deps=spawn.deps,
            emit=loop.publisher(task.task_id),
            depth=spawn.depth,
            extra={
                "subagent": kind.name,
                "parent_task_id": task.parent_id,
                "parent_session_id": spawn.session_id,
            },
        )
        config = RunConfig(
            max_turns=kind.max_turns or loop.agent.max_turns,
            model=model_name,
            context=context,
            hooks=loop.agent.hooks,
            bus=loop.bus,
            task_id=task.task_id,
            user_id=task.user_id,
            agent=kind.name,
        )
        compressor = loop.compressor
        # No standing summary: a child has no session to keep one for.
        config.prepare_request = functools.partial(compressor.prepare, session_id=None)
        config.on_usage = compressor.observe
        state = RunState(
            messages=[SystemMessage(content=kind.instructions), UserMessage(content=text)],
            start=1,
        )
        return run_events(model, tools if len(tools) else None, state, config)

    def _child_tools(self, kind: SubagentType, parent: ToolManager, depth: int) -> ToolManager:
        """The parent's tools the type asks for, with the same authorizer; the subagent tool
        only while another level is allowed, bound to the child's own registry."""
        wanted = list(kind.tools) if kind.tools is not None else [t.name for t in parent.tools()]
        nested = depth < self.max_depth
        names = [
            name
            for name in wanted
            if name in parent and (nested or not isinstance(parent.get(name), SubagentTool))
        ]
        self._warn_unknown(kind, [n for n in wanted if n not in parent])
        view = parent.subset(names)
        for t in view.tools():
            if isinstance(t, SubagentTool):
                view.register(t.bound(view), replace=True)
        return view

    def _warn_unknown(self, kind: SubagentType, missing: list[str]) -> None:
        """A tool a type lists that no registry has is a typo in its declaration: say so once.
        (One only the parent lacks is expected: a child never gets more than its parent.)"""
        root = self._root
        unknown = [n for n in missing if root is not None and n not in root]
        if unknown and kind.name not in self._warned:
            self._warned.add(kind.name)
            log.warning(
                "subagent type %r lists tools that are not registered: %s; it runs without them",
                kind.name,
                ", ".join(unknown),
            )

    def _model_for(self, kind: SubagentType, loop: AgentLoop) -> tuple[ModelClient, str | None]:
        """The client and model name of the type's runs."""
        spec = kind.model
        if spec is None:
            return loop.agent.model, None
        if isinstance(spec, str):
            from agent_template.services.providers import PROVIDERS

            if spec.partition(":")[0] not in PROVIDERS:  # a model of the parent's provider
                return loop.agent.model, spec
        client = self._models.get(kind.name)
        if client is None:
            client = self._models[kind.name] = _client(spec, loop.settings)
        return client, None


def _client(spec: str | ModelClient, settings: Settings) -> ModelClient:
    """A model client with retries and failover for a ``provider[:model]`` or a provider."""
    from agent_template.services.model_provider import ModelManager, ModelProvider

    if isinstance(spec, str):
        provider, _, name = spec.partition(":")
        return ModelManager(settings, provider=provider, model=name or None)
    if isinstance(spec, ModelProvider):
        return ModelManager(settings, provider=spec)
    return spec


async def _forward(
    consumer: StreamConsumer, emit: Emit, child: Task, call_id: str, depth: int
) -> None:
    """Put each chunk of the child's stream into the parent's, wrapped as a subagent event."""
    agent = str(child.payload.get("agent", ""))
    async for chunk in consumer:
        event = SubagentEvent(
            task_id=child.task_id,
            call_id=call_id,
            agent=agent,
            depth=depth,
            event=chunk.event.model_dump(mode="json"),
        )
        try:
            emit(event)
        except AgentTemplateError:  # the parent's stream has ended: nobody is left to tell
            return
        except Exception:
            log.exception("could not forward the events of subagent %s", child.task_id)
            return


def _answer(agent: str, child: Task) -> str:
    """The child's final answer, or the error that tells the parent's model what happened."""
    state = child.state
    if state is TaskState.COMPLETED:
        text = child.result if isinstance(child.result, str) else ""
        return text or f"The subagent '{agent}' finished without an answer."
    if state is TaskState.FAILED:
        message = (
            f"The subagent '{agent}' failed: {child.error or 'no reason was given'}. Retry with "
            "a clearer or smaller task, or do it yourself."
        )
    elif state is TaskState.CANCELLED:
        message = f"The subagent '{agent}' was cancelled before it finished; it gave no answer."
    else:
        message = f"The subagent '{agent}' was interrupted (the service is stopping)."
    raise SubagentError(agent, message, task_id=child.task_id, state=state.value)
