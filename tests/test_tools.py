"""Function tools: schemas from hints and docstrings, validation, execution."""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

import pytest
from pydantic import BaseModel

from agent_template import ToolContext, ToolManager, tool
from agent_template.errors import ConfigurationError
from agent_template.models import ToolCall


class Point(BaseModel):
    x: float
    y: float


@tool
def describe(name: str, unit: Literal["km", "mi"] = "km", tags: list[str] | None = None) -> str:
    """Describe a place.

    A second paragraph that belongs to the description.

    Args:
        name: Where it is. This description
            continues on the next line.
        unit: Unit of distance.
        tags: Labels to attach.

    Returns:
        A sentence.
    """
    return f"{name} in {unit} {tags or []}"


def test_schema_from_hints_and_docstring() -> None:
    d = describe.definition
    assert d.name == "describe"
    assert d.description.startswith("Describe a place.")
    assert "second paragraph" in d.description
    assert "Returns" not in d.description
    props = d.parameters["properties"]
    assert props["name"] == {
        "type": "string",
        "description": "Where it is. This description continues on the next line.",
    }
    assert props["unit"]["enum"] == ["km", "mi"]
    assert props["unit"]["default"] == "km"
    assert d.parameters["required"] == ["name"]
    assert d.parameters["additionalProperties"] is False


def test_options_and_nested_models() -> None:
    @tool(name="distance", description="Distance between two points.", timeout=3)
    async def dist(a: Point, b: Point) -> float:
        return float(((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5)

    assert dist.name == "distance"
    assert dist.timeout == 3
    assert dist.definition.description == "Distance between two points."
    assert "$defs" in dist.definition.parameters
    result = asyncio.run(
        ToolManager([dist]).execute(
            ToolCall(
                id="c1", name="distance", arguments='{"a": {"x": 0, "y": 0}, "b": {"x": 3, "y": 4}}'
            )
        )
    )
    assert result.content == "5.0"
    assert not result.is_error


async def test_context_parameter_is_injected_not_exposed() -> None:
    @tool
    async def whoami(ctx: ToolContext, greeting: str) -> str:
        """Say who is asking."""
        return f"{greeting} {ctx.session_id} {ctx.deps['user']}"

    assert list(whoami.definition.parameters["properties"]) == ["greeting"]
    manager = ToolManager([whoami])
    result = await manager.execute(
        ToolCall(id="1", name="whoami", arguments='{"greeting": "hi"}'),
        ToolContext(session_id="s1", deps={"user": "ada"}),
    )
    assert result.content == "hi s1 ada"


async def test_sync_tools_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    @tool
    def where() -> bool:
        """Which thread runs me."""
        return threading.get_ident() == loop_thread

    @tool(inline=True)
    def where_inline() -> bool:
        """Which thread runs me."""
        return threading.get_ident() == loop_thread

    manager = ToolManager([where, where_inline])
    assert (await manager.execute(ToolCall(id="1", name="where"))).content == "false"
    assert (await manager.execute(ToolCall(id="2", name="where_inline"))).content == "true"


async def test_bad_arguments_and_results_are_rendered() -> None:
    @tool
    async def point(x: float) -> Point:
        """Make a point."""
        return Point(x=x, y=0)

    manager = ToolManager([point, describe], default_timeout=1)
    ok = await manager.execute(ToolCall(id="1", name="point", arguments='{"x": 1.5}'))
    assert ok.content == '{"x":1.5,"y":0.0}'
    not_json = await manager.execute(ToolCall(id="2", name="point", arguments="{x: 1"))
    assert not_json.is_error
    assert "invalid arguments" in not_json.content
    extra = await manager.execute(ToolCall(id="3", name="point", arguments='{"x": 1, "z": 2}'))
    assert extra.is_error
    assert "z: Extra inputs are not permitted" in extra.content
    assert manager.errors == 2
    assert manager.calls == 3


def test_registry() -> None:
    manager = ToolManager([describe])
    assert "describe" in manager
    defs = manager.definitions()
    assert defs is manager.definitions()  # cached until the registry changes
    manager.register(lambda text: text.upper())
    assert len(manager.definitions()) == 2
    manager.unregister("describe")
    assert [d.name for d in manager.definitions()] == ["<lambda>"]


def test_tools_that_share_a_name_are_refused_naming_both() -> None:
    @tool(name="describe")
    def other(text: str) -> str:
        """Another description."""
        return text

    manager = ToolManager([describe])
    manager.register(describe)  # the same tool again is harmless
    with pytest.raises(ConfigurationError) as caught:
        manager.register(other)
    message = str(caught.value)
    assert "Two tools are named 'describe'" in message
    assert "test_tools.describe" in message and "other" in message
    manager.register(other, replace=True)  # said out loud, it is allowed
    assert manager.get("describe") is not None


def test_a_user_tool_named_like_a_built_in_one_is_refused() -> None:
    from agent_template import AgentLoop
    from agent_template.config import Settings
    from agent_template.services.session_manager import MemorySessionStore, SessionManager

    @tool
    def todo_write(items: str) -> str:
        """My own todo tool."""
        return items

    with pytest.raises(ConfigurationError, match="Two tools are named 'todo_write'"):
        AgentLoop(
            Settings(_env_file=None),  # type: ignore[call-arg]
            model="test",
            tools=[todo_write],
            session_manager=SessionManager(store=MemorySessionStore()),
        )


async def test_each_call_gets_its_own_context() -> None:
    seen: list[tuple[str, str | None, str | None, str | None]] = []

    @tool
    async def who(ctx: ToolContext) -> str:
        """Who is calling."""
        await asyncio.sleep(0.01)
        seen.append((ctx.call_id, ctx.session_id, ctx.task_id, ctx.user_id))
        return ctx.call_id

    manager = ToolManager([who])
    base = ToolContext(session_id="s", task_id="t", user_id="u")
    await asyncio.gather(
        manager.execute(ToolCall(id="c1", name="who"), base),
        manager.execute(ToolCall(id="c2", name="who"), base),
    )
    assert sorted(seen) == [("c1", "s", "t", "u"), ("c2", "s", "t", "u")]
    assert base.call_id == ""  # the run's context itself is untouched


async def test_a_sync_tool_that_times_out_is_not_said_to_be_stopped() -> None:
    release = threading.Event()

    @tool(timeout=0.05)
    def stuck() -> str:
        """Blocks until released."""
        release.wait(10)
        return "late"

    manager = ToolManager([stuck])
    result = await manager.execute(ToolCall(id="1", name="stuck"))
    release.set()
    assert result.is_error
    assert "did not finish within 0.05s" in result.content
    assert "thread may still be running" in result.content
    assert "was stopped" not in result.content


async def test_an_abandoned_sync_tool_does_not_use_up_the_worker_threads() -> None:
    from agent_template.services._threads import MAX_THREADS

    release = threading.Event()

    @tool(timeout=0.02)
    def stuck() -> str:
        """Blocks until released."""
        release.wait(10)
        return "late"

    @tool
    def quick() -> str:
        """Answers at once."""
        return "ok"

    manager = ToolManager([stuck, quick])
    try:
        await asyncio.gather(
            *(manager.execute(ToolCall(id=str(i), name="stuck")) for i in range(MAX_THREADS + 4))
        )
        answer = await asyncio.wait_for(manager.execute(ToolCall(id="q", name="quick")), 5)
    finally:
        release.set()
    assert answer.content == "ok"


async def test_a_sync_tool_sees_the_callers_context_variables() -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

    @tool
    def which() -> str:
        """The request this call belongs to."""
        return request_id.get()

    request_id.set("req-42")
    result = await ToolManager([which]).execute(ToolCall(id="1", name="which"))
    assert result.content == "req-42"
