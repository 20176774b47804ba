"""Hooks around model and tool calls: veto, rewrite, failing and slow hooks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from agent_template import Agent, HookRegistry, Veto, tool
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.core.hooks import HookContext
from agent_template.models import (
    AssistantMessage,
    ModelCallFinished,
    ModelRequest,
    SystemMessage,
    ToolCall,
    ToolExecFinished,
    ToolResultMessage,
    Usage,
)
from agent_template.services.providers.offline import TestProvider, TestTurn

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
executed: list[str] = []


@tool
async def delete_file(path: str) -> str:
    """Delete a file."""
    executed.append(path)
    return f"deleted {path}"


def script() -> TestProvider:
    return TestProvider([TestTurn(tool_calls=[("delete_file", {"path": "/etc/passwd"})]), "done"])


@pytest.fixture(autouse=True)
def _clear() -> None:
    executed.clear()


async def test_before_tool_call_can_veto() -> None:
    hooks = HookRegistry()

    @hooks.on("before_tool_call")
    async def guard(call: ToolCall, ctx: HookContext) -> Veto | None:
        return Veto("system files are off limits") if "/etc" in call.arguments else None

    model = script()
    result = await Agent(tools=[delete_file], model=model, settings=SETTINGS, hooks=hooks).run("x")
    assert executed == []
    seen = next(m for m in model.requests[1].messages if isinstance(m, ToolResultMessage))
    assert seen.is_error
    assert seen.content == "The call was refused: system files are off limits"
    assert result.output == "done"


async def test_before_tool_call_can_rewrite_arguments() -> None:
    hooks = HookRegistry()

    async def sandbox(call: ToolCall, ctx: HookContext) -> ToolCall:
        return call.model_copy(update={"arguments": '{"path": "/tmp/sandbox/passwd"}'})

    hooks.add("before_tool_call", sandbox)
    await Agent(tools=[delete_file], model=script(), settings=SETTINGS, hooks=hooks).run("x")
    assert executed == ["/tmp/sandbox/passwd"]


async def test_model_hooks_rewrite_the_request_and_see_the_answer() -> None:
    hooks = HookRegistry()
    seen: list[tuple[str, int]] = []

    async def add_rule(request: ModelRequest, ctx: HookContext) -> ModelRequest:
        return dataclasses.replace(
            request, messages=[SystemMessage(content="Be terse."), *request.messages]
        )

    async def observe(message: AssistantMessage, usage: Usage, ctx: HookContext) -> None:
        seen.append((message.content, usage.requests))

    hooks.add("before_model_call", add_rule)
    hooks.add("after_model_call", observe)
    model = TestProvider(["ok"])
    await Agent(model=model, settings=SETTINGS, hooks=hooks).run("hi")
    assert model.requests[0].messages[0] == SystemMessage(content="Be terse.")
    assert seen == [("ok", 1)]


@pytest.mark.parametrize("failure", ["raises", "times out"])
async def test_a_policy_hook_that_cannot_answer_refuses_the_call(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = HookRegistry(timeout=0.05)

    async def broken(call: ToolCall, ctx: HookContext) -> None:
        raise RuntimeError("policy service down")

    async def sleepy(call: ToolCall, ctx: HookContext) -> None:
        await asyncio.sleep(10)  # a hook is a quick check, not a wait for a person

    hooks.add("before_tool_call", broken if failure == "raises" else sleepy)
    model = script()
    with caplog.at_level(logging.WARNING, logger="agent_template.hooks"):
        result = await Agent(tools=[delete_file], model=model, settings=SETTINGS, hooks=hooks).run(
            "x"
        )
    assert executed == []  # fail closed: the call did not run
    refused = [m for m in result.messages if isinstance(m, ToolResultMessage)]
    assert refused[0].is_error
    assert "The call was refused: the policy check" in refused[0].content
    why = "policy service down" if failure == "raises" else "did not answer within 0.05s"
    assert why in refused[0].content  # and the model is told why
    assert isinstance(model.requests[-1].messages[-1], ToolResultMessage)
    assert (hooks.failures, hooks.timeouts) == ((1, 0) if failure == "raises" else (0, 1))
    assert "refused the call" in caplog.text


async def test_observing_hooks_that_fail_are_counted_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = HookRegistry(timeout=0.05)

    async def broken(*args: Any) -> None:
        raise RuntimeError("hook bug")

    async def sleepy(*args: Any) -> None:
        await asyncio.sleep(10)

    hooks.add("after_tool_call", broken)
    hooks.add("before_model_call", sleepy)
    with caplog.at_level(logging.WARNING, logger="agent_template.hooks"):
        result = await Agent(
            tools=[delete_file], model=script(), settings=SETTINGS, hooks=hooks
        ).run("x")
    assert result.output == "done"
    assert executed == ["/etc/passwd"]  # the run went on as if the hooks were absent
    stats = {s["hook"].split(".")[-1]: s for s in hooks.stats()}
    assert stats["broken"]["failures"] == 1
    assert stats["sleepy"]["timeouts"] == 2  # both model calls, each skipped
    assert "hook bug" in caplog.text


async def test_hooks_scoped_to_a_session() -> None:
    hooks = HookRegistry()
    calls: list[Any] = []

    async def only_s1(call: ToolCall, ctx: HookContext) -> None:
        calls.append(ctx.session_id)

    hooks.add("before_tool_call", only_s1, session_id="s1")
    agent = Agent(
        tools=[delete_file], model=TestProvider(lambda r: _turns(r)), settings=SETTINGS, hooks=hooks
    )
    await agent.run("x", session_id="s1")
    await agent.run("x", session_id="s2")
    assert calls == ["s1"]


def _turns(request: ModelRequest) -> TestTurn:
    if isinstance(request.messages[-1], ToolResultMessage):
        return TestTurn(text="done")
    return TestTurn(tool_calls=[("delete_file", {"path": "a"})])


async def test_model_and_tool_calls_are_published_on_the_bus() -> None:
    bus = InProcessEventBus()
    events: list[Any] = []
    bus.add_listener(events.append)
    agent = Agent(tools=[delete_file], model=script(), settings=SETTINGS, bus=bus)
    await agent.run("x", session_id="s9")
    kinds = [e.type for e in events]
    assert kinds == [
        "model_call_started",
        "model_call_finished",
        "tool_started",
        "tool_finished",
        "model_call_started",
        "model_call_finished",
    ]
    finished = [e for e in events if isinstance(e, ModelCallFinished)]
    assert finished[0].provider == "test"
    assert finished[0].usage.requests == 1
    assert all(e.session_id == "s9" for e in events)
    tool_done = next(e for e in events if isinstance(e, ToolExecFinished))
    assert tool_done.name == "delete_file"
    assert not tool_done.is_error
