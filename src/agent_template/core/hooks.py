"""Hooks: async callbacks that may observe or change a run at fixed points.

Points: ``before_model_call`` (may return a rewritten :class:`ModelRequest`),
``after_model_call`` (sees the assistant message and usage), ``before_tool_call`` (may return a
rewritten :class:`ToolCall` or a :class:`Veto`), ``after_tool_call`` (may return a rewritten
:class:`ToolResultMessage`) and ``task_state`` (sees each task state change). A hook is global
or scoped to a session or an agent.

A hook that fails or exceeds its time limit is logged and counted. Hooks that observe or shape
(every point but one) are then skipped: they never break a run. ``before_tool_call`` decides
whether a call may run, so it fails closed: a failing or slow check refuses the call, and the
model is told why. A hook is a quick check, not a wait for a person: asking a human is what
approvals are for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from agent_template.models import (
    AssistantMessage,
    ModelRequest,
    Task,
    ToolCall,
    ToolResultMessage,
    Usage,
)

__all__ = ["HookContext", "HookPoint", "HookRegistry", "Veto"]

log = logging.getLogger("agent_template.hooks")

HookPoint: TypeAlias = Literal[
    "before_model_call", "after_model_call", "before_tool_call", "after_tool_call", "task_state"
]
HOOK_POINTS: tuple[HookPoint, ...] = (
    "before_model_call",
    "after_model_call",
    "before_tool_call",
    "after_tool_call",
    "task_state",
)
DEFAULT_HOOK_TIMEOUT_S = 5.0  # long enough for a network lookup, short enough not to stall a run


@dataclass(slots=True, frozen=True)
class HookContext:
    """Where a hook fires: which session, agent, task and user."""

    session_id: str | None = None
    agent: str | None = None
    task_id: str | None = None
    user_id: str | None = None


@dataclass(slots=True, frozen=True)
class Veto:
    """Returned by a ``before_tool_call`` hook to stop the call; the model sees ``reason``."""

    reason: str


HookFn: TypeAlias = Callable[..., Awaitable[Any]]


class _Failed:
    """What a hook call that failed or timed out returns, saying which and why."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


@dataclass(slots=True)
class _Hook:
    fn: HookFn
    session_id: str | None
    agent: str | None
    name: str
    calls: int = 0
    failures: int = 0
    timeouts: int = 0

    def applies(self, ctx: HookContext) -> bool:
        return (self.session_id is None or self.session_id == ctx.session_id) and (
            self.agent is None or self.agent == ctx.agent
        )


class HookRegistry:
    """Registered hooks and the code that runs them safely.

    Args:
        timeout: seconds each hook call may take before it is abandoned.
    """

    def __init__(self, *, timeout: float = DEFAULT_HOOK_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._hooks: dict[HookPoint, list[_Hook]] = {p: [] for p in HOOK_POINTS}
        self.failures = 0
        self.timeouts = 0

    def add(
        self,
        point: HookPoint,
        fn: HookFn,
        *,
        session_id: str | None = None,
        agent: str | None = None,
    ) -> Callable[[], None]:
        """Register ``fn`` at ``point``; returns a function that removes it."""
        if point not in self._hooks:
            raise ValueError(f"unknown hook point {point!r}; choose one of {HOOK_POINTS}")
        hook = _Hook(fn, session_id, agent, getattr(fn, "__qualname__", repr(fn)))
        self._hooks[point].append(hook)

        def remove() -> None:
            if hook in self._hooks[point]:
                self._hooks[point].remove(hook)

        return remove

    def on(
        self, point: HookPoint, *, session_id: str | None = None, agent: str | None = None
    ) -> Callable[[HookFn], HookFn]:
        """Decorator form of :meth:`add`."""

        def register(fn: HookFn) -> HookFn:
            self.add(point, fn, session_id=session_id, agent=agent)
            return fn

        return register

    def has(self, point: HookPoint) -> bool:
        return bool(self._hooks[point])

    def __bool__(self) -> bool:
        return any(self._hooks.values())

    def stats(self) -> list[dict[str, Any]]:
        return [
            {
                "point": point,
                "hook": h.name,
                "calls": h.calls,
                "failures": h.failures,
                "timeouts": h.timeouts,
            }
            for point, hooks in self._hooks.items()
            for h in hooks
        ]

    async def _call(self, point: HookPoint, hook: _Hook, *args: Any) -> Any:
        """The hook's answer, or a :class:`_Failed` saying why there is none."""
        hook.calls += 1
        verdict = "refused the call" if point == "before_tool_call" else "skipped"
        try:
            async with asyncio.timeout(self.timeout):
                return await hook.fn(*args)
        except TimeoutError:
            hook.timeouts += 1
            self.timeouts += 1
            log.warning(
                "hook %s at %s took over %.3gs; %s", hook.name, point, self.timeout, verdict
            )
            return _Failed(f"did not answer within {self.timeout:g}s")
        except Exception as exc:  # a hook's bug must not break the run it observes
            hook.failures += 1
            self.failures += 1
            log.exception("hook %s at %s failed; %s", hook.name, point, verdict)
            return _Failed(f"failed with {type(exc).__name__}: {exc}")

    async def before_model_call(self, request: ModelRequest, ctx: HookContext) -> ModelRequest:
        for hook in self._hooks["before_model_call"]:
            if hook.applies(ctx):
                changed = await self._call("before_model_call", hook, request, ctx)
                if isinstance(changed, ModelRequest):
                    request = changed
        return request

    async def after_model_call(
        self, message: AssistantMessage, usage: Usage, ctx: HookContext
    ) -> None:
        for hook in self._hooks["after_model_call"]:
            if hook.applies(ctx):
                await self._call("after_model_call", hook, message, usage, ctx)

    async def before_tool_call(self, call: ToolCall, ctx: HookContext) -> ToolCall | Veto:
        """The call as the hooks leave it, or the first :class:`Veto`.

        A check that fails or times out is a veto too (fail closed): a policy that cannot
        answer must not let a call through.
        """
        for hook in self._hooks["before_tool_call"]:
            if hook.applies(ctx):
                changed = await self._call("before_tool_call", hook, call, ctx)
                if isinstance(changed, _Failed):
                    return Veto(
                        f"the policy check {hook.name} {changed.why}, so the call was not "
                        "run. Tell the user; do not retry it unchanged."
                    )
                if isinstance(changed, Veto):
                    return changed
                if isinstance(changed, ToolCall):
                    call = changed
        return call

    async def after_tool_call(
        self, call: ToolCall, result: ToolResultMessage, ctx: HookContext
    ) -> ToolResultMessage:
        for hook in self._hooks["after_tool_call"]:
            if hook.applies(ctx):
                changed = await self._call("after_tool_call", hook, call, result, ctx)
                if isinstance(changed, ToolResultMessage):
                    result = changed
        return result

    async def task_state(self, task: Task, ctx: HookContext) -> None:
        for hook in self._hooks["task_state"]:
            if hook.applies(ctx):
                await self._call("task_state", hook, task, ctx)
