"""The simple entry point: define an agent with instructions and tools, then run or stream it.

>>> from agent_template import Agent, tool
>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add two integers.'''
...     return a + b
>>> agent = Agent("You are a calculator.", tools=[add])
>>> result = agent.run_sync("What is 2 + 3?")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_template.core.run_loop import ModelClient, RunConfig, RunState, run_events
from agent_template.errors import AgentTemplateError, ConfigurationError
from agent_template.models import (
    Message,
    ModelRequest,
    RunEvent,
    RunStatus,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agent_template.services.tool_manager import ToolContext, ToolLike, ToolManager

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.core.bus import EventBus
    from agent_template.core.hooks import HookRegistry
    from agent_template.services.model_provider import ModelManager, ModelProvider

__all__ = ["Agent", "AgentRun", "RunResult"]


@dataclass(slots=True)
class RunResult:
    """The outcome of a run: the final text, the messages it added, usage and status."""

    output: str
    status: RunStatus
    messages: list[Message]
    usage: Usage
    turns: int
    error: AgentTemplateError | None = None


class AgentRun:
    """A started run: iterate it for events; ``result`` tells what it produced so far.

    Closing the iterator (or cancelling the task that iterates it) cancels the run; the partial
    answer stays in ``result``, marked as cancelled.
    """

    __slots__ = ("_events", "config", "state")

    def __init__(self, events: AsyncIterator[RunEvent], state: RunState, config: RunConfig) -> None:
        self._events = events
        self.state = state
        self.config = config  # read by the run when it starts: adjust before iterating

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()  # type: ignore[attr-defined]
        if self.state.status is None:
            self.state.status = "cancelled"

    @property
    def result(self) -> RunResult:
        s = self.state
        return RunResult(
            s.output, s.status or "cancelled", s.new_messages, s.usage, s.turns, s.error
        )


_NOT_SETTINGS = frozenset({"messages", "tools", "model"})
# Run ids: a random prefix per process and a counter, unique without a uuid4 per run.
_RUN_PREFIX = f"run_{uuid.uuid4().hex[:12]}_"
_run_numbers = itertools.count(1)


def _run_id() -> str:
    return f"{_RUN_PREFIX}{next(_run_numbers)}"


def _checked_model_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    from dataclasses import fields

    known = {f.name for f in fields(ModelRequest)} - _NOT_SETTINGS
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(
            f"Unknown model setting(s) {', '.join(unknown)}; use {', '.join(sorted(known))}."
        )
    return dict(options)


class Agent:
    """An agent: instructions, tools and a model.

    In async code, close it when done (``async with Agent(...) as agent:`` or
    ``await agent.aclose()``) so that the model's connections are released;
    :meth:`run_sync` does that after each call.

    Args:
        instructions: the system prompt.
        tools: functions (decorated with :func:`~agent_template.tool` or plain) it may call.
        model: a ``ModelManager``, a provider instance, or ``"provider"`` /
            ``"provider:model"``; by default the provider the settings choose, with failover.
        settings: used to build the model and defaults; read from the environment if omitted.
        max_turns: model turns before the run stops without an answer.
        deps: any object handed to tools that declare a :class:`ToolContext` parameter.
        hooks: hooks called around model and tool calls.
        bus: where model and tool call events go.
        compressor: keeps each request within the context window (an object with
            ``async prepare(request, session_id=...)`` and ``observe(request, usage)``,
            such as :class:`~agent_template.services.compressor.ContextCompressor`).
        model_settings: options of every model request, by the name of the
            :class:`~agent_template.models.ModelRequest` field: ``temperature``,
            ``max_tokens``, ``tool_choice``, ``stop``, ``top_p``, ``seed``,
            ``response_format``, ``parallel_tool_calls``.

    Raises:
        ConfigurationError: ``model_settings`` names something that is not an option.
    """

    def __init__(
        self,
        instructions: str = "",
        *,
        tools: Iterable[ToolLike] = (),
        model: ModelManager | ModelProvider | ModelClient | str | None = None,
        settings: Settings | None = None,
        max_turns: int | None = None,
        tool_timeout: float | None = None,
        name: str = "agent",
        deps: Any = None,
        hooks: HookRegistry | None = None,
        bus: EventBus | None = None,
        compressor: Any = None,
        model_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.model_settings = _checked_model_settings(model_settings or {})
        self.instructions = instructions
        self.name = name
        self.deps = deps
        self.hooks = hooks
        self.bus = bus
        self.compressor = compressor
        self._settings = settings
        self._model_spec = model
        self._model: ModelClient | None = None
        self.max_turns = max_turns or (settings.max_turns if settings else 20)
        timeout = tool_timeout or (settings.tool_timeout if settings else 60.0)
        self.tools = ToolManager(tools, default_timeout=timeout)

    @property
    def model(self) -> ModelClient:
        """The model client, built on first use so constructing an agent does no work."""
        if self._model is None:
            self._model = self._build_model()
        return self._model

    def _build_model(self) -> ModelClient:
        from agent_template.services.model_provider import ModelManager, ModelProvider

        spec = self._model_spec
        if isinstance(spec, ModelManager):
            return spec
        if isinstance(spec, ModelProvider):
            return ModelManager(self._settings_or_default(), provider=spec)
        if isinstance(spec, str):
            name, _, model = spec.partition(":")
            return ModelManager(self._settings_or_default(), provider=name, model=model or None)
        if spec is not None:
            return spec  # anything with a compatible ``stream``
        return ModelManager(self._settings_or_default())

    def _settings_or_default(self) -> Settings:
        if self._settings is None:
            from agent_template.config import load_settings

            self._settings = load_settings()
        return self._settings

    def start(
        self,
        prompt: str,
        *,
        history: Sequence[Message] = (),
        session_id: str | None = None,
        task_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        on_messages: Callable[[list[Message]], Awaitable[None]] | None = None,
        tools: ToolManager | None = None,
    ) -> AgentRun:
        """Start a run and return it; iterate the result for events.

        ``on_messages`` is awaited with each batch of new messages (the prompt first) before
        any event reveals them, so a store can commit them first; partial output of a
        cancelled or failed run is passed too. ``tools`` replaces the agent's tools for this
        run (a session's own subset of them).
        """
        messages = self._with_instructions(history)
        start = len(messages)
        messages.append(UserMessage(content=prompt))
        return self._begin(
            RunState(messages=messages, start=start),
            session_id=session_id,
            task_id=task_id,
            user_id=user_id,
            model=model,
            on_messages=on_messages,
            tools=tools,
        )

    def resume(
        self,
        history: Sequence[Message],
        *,
        results: Sequence[ToolResultMessage] = (),
        calls: Sequence[ToolCall] = (),
        session_id: str | None = None,
        task_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        on_messages: Callable[[list[Message]], Awaitable[None]] | None = None,
        tools: ToolManager | None = None,
    ) -> AgentRun:
        """Go on with a run whose history ends with tool calls: ``results`` are the outcomes
        already known of some of them, ``calls`` the ones to run now; then the model goes on.

        This is how a run that stopped while a call waited for approval continues.
        """
        messages = self._with_instructions(history)
        start = len(messages)
        messages.extend(results)
        state = RunState(messages=messages, start=start, pending_calls=list(calls))
        return self._begin(
            state,
            session_id=session_id,
            task_id=task_id,
            user_id=user_id,
            model=model,
            on_messages=on_messages,
            tools=tools,
        )

    def _with_instructions(self, history: Sequence[Message]) -> list[Message]:
        messages: list[Message] = []
        if self.instructions and not (history and history[0].role == "system"):
            messages.append(SystemMessage(content=self.instructions))
        messages.extend(history)
        return messages

    def _begin(
        self,
        state: RunState,
        *,
        session_id: str | None,
        task_id: str | None,
        user_id: str | None,
        model: str | None,
        on_messages: Callable[[list[Message]], Awaitable[None]] | None,
        tools: ToolManager | None = None,
    ) -> AgentRun:
        task_id = task_id or _run_id()  # so the events of concurrent runs can be told apart
        config = RunConfig(
            max_turns=self.max_turns,
            model_settings=self.model_settings,
            model=model,
            context=ToolContext(
                session_id=session_id, task_id=task_id, user_id=user_id, deps=self.deps
            ),
            hooks=self.hooks,
            bus=self.bus,
            session_id=session_id,
            task_id=task_id,
            user_id=user_id,
            agent=self.name,
            on_messages=on_messages,
        )
        if self.compressor is not None:
            config.prepare_request = functools.partial(
                self.compressor.prepare, session_id=session_id
            )
            config.on_usage = self.compressor.observe
        registry = self.tools if tools is None else tools
        offered = registry if len(registry) else None
        return AgentRun(run_events(self.model, offered, state, config), state, config)

    def run_stream(self, prompt: str, **kwargs: Any) -> AgentRun:
        """Alias of :meth:`start`, for ``async for event in agent.run_stream(...)``."""
        return self.start(prompt, **kwargs)

    async def run(self, prompt: str, **kwargs: Any) -> RunResult:
        """Run to the end and return the result.

        Raises:
            AgentTemplateError: the provider or max-turns error that ended a failed run.
        """
        run = self.start(prompt, **kwargs)
        async for _ in run:
            pass
        result = run.result
        if result.error is not None:
            raise result.error
        return result

    def run_sync(self, prompt: str, **kwargs: Any) -> RunResult:
        """:meth:`run` for code that has no event loop.

        Each call runs in a new event loop and closes the model's connections before that
        loop ends (they belong to it), so the next call opens fresh ones.

        Raises:
            RuntimeError: when called inside a running event loop; use ``await agent.run(...)``
                there.
            AgentTemplateError: as :meth:`run` does.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop running: the case this method is for
        else:
            raise RuntimeError(
                "Agent.run_sync() cannot be called from a running event loop (async code, "
                "Jupyter); use `await agent.run(...)` instead."
            )

        async def run_then_close() -> RunResult:
            try:
                return await self.run(prompt, **kwargs)
            finally:
                await self.aclose()

        return asyncio.run(run_then_close())

    async def aclose(self) -> None:
        """Close the model's connections (every provider's SDK client).

        The agent stays usable: a later run opens new connections.
        """
        if self._model is None:
            return
        close = getattr(self._model, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
