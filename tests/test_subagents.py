"""Subagents: child runs as tasks of a real AgentLoop (SQLite in tmp_path, scripted models)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent_template import AgentLoop, tool
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.core.stream_store import MemoryStreamStore
from agent_template.errors import ConfigurationError, ProviderError
from agent_template.models import (
    ModelRequest,
    SubagentEvent,
    Task,
    TaskState,
    ToolCall,
    ToolContext,
    ToolResultEvent,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.providers.offline import TestProvider, TestTurn
from agent_template.services.subagent import (
    GENERAL,
    SubagentDepthError,
    SubagentManager,
    SubagentType,
)
from agent_template.services.tool_manager import Tool

LEAD = "You are the lead agent."
RESEARCHER = SubagentType(
    "researcher", "Looks things up and reports.", "You research one question and report."
)
WAIT_S = 10.0  # generous bound on anything a test waits for; none should come close

Script = Callable[[ModelRequest], TestTurn | str]
LoopFactory = Callable[..., Awaitable[tuple[AgentLoop, SubagentManager]]]


def routed(scripts: dict[str, Script]) -> TestProvider:
    """One model for every run, answering by the run's system prompt (its instructions)."""
    return TestProvider(lambda request: scripts[str(request.messages[0].content)](request))


def asked(request: ModelRequest) -> bool:
    """The run's first turn: the last message is the user's task."""
    return isinstance(request.messages[-1], UserMessage)


def task_of(request: ModelRequest) -> str:
    return str(request.messages[1].content)


def results(request: ModelRequest) -> list[ToolResultMessage]:
    """The tool results that end the request, in call order."""
    tail: list[ToolResultMessage] = []
    for message in reversed(request.messages):
        if not isinstance(message, ToolResultMessage):
            break
        tail.insert(0, message)
    return tail


def delegate(*tasks: str, kind: str = "researcher") -> TestTurn:
    return TestTurn(tool_calls=[("subagent", {"type": kind, "task": t}) for t in tasks])


def report(request: ModelRequest) -> str:
    """A lead's last turn: its tool results, joined."""
    return " | ".join(r.text for r in results(request))


@pytest.fixture
async def make_loop(tmp_path: Path) -> AsyncIterator[LoopFactory]:
    built: list[tuple[AgentLoop, SubagentManager]] = []

    async def build(
        model: Any,
        *,
        types: list[SubagentType] | None = None,
        tools: list[Any] | None = None,
        max_depth: int = 2,
        max_concurrent: int = 4,
        slots: int = 8,
        timeout: float = 60.0,
    ) -> tuple[AgentLoop, SubagentManager]:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=f"sqlite:///{tmp_path / 'agent.db'}",
            context_compression=False,
            model_max_retries=0,
        )
        loop = AgentLoop(
            settings,
            model=model,
            tools=tools or [],
            instructions=LEAD,
            todo_tools=False,
            builtin_tools=False,
            subagents=False,  # each test installs the manager it builds
            bus=InProcessEventBus(),
            streams=MemoryStreamStore(),
            max_concurrent_tasks=slots,
        )
        manager = SubagentManager(
            types or [RESEARCHER],
            max_depth=max_depth,
            max_concurrent=max_concurrent,
            timeout=timeout,
        )
        manager.install(loop)
        built.append((loop, manager))
        return loop, manager

    yield build
    for loop, manager in built:
        await manager.aclose()
        await loop.aclose()


async def ask(loop: AgentLoop, message: str = "Go.") -> Task:
    session = await loop.sessions.create_session("alice")
    return await loop.create_task(
        {"message": message, "session_id": session.session_id, "user_id": "alice"}
    )


async def finish(loop: AgentLoop, task: Task) -> Task:
    async with asyncio.timeout(WAIT_S):
        return await loop.wait(task.task_id)


def children(loop: AgentLoop, parent: Task) -> list[Task]:
    return loop.list_tasks(parent_id=parent.task_id)


# --------------------------------------------------------------------------- running children


async def test_two_children_run_in_parallel_and_the_parent_gets_both_answers(
    make_loop: LoopFactory,
) -> None:
    here: list[str] = []
    everyone = asyncio.Event()

    @tool
    async def rendezvous(name: str) -> str:
        """Wait until both helpers are here at once."""
        here.append(name)
        if len(here) == 2:
            everyone.set()
        async with asyncio.timeout(WAIT_S / 2):  # run one after the other, and this fails
            await everyone.wait()
        return f"met {name}"

    def researcher(request: ModelRequest) -> TestTurn | str:
        if asked(request):
            return TestTurn(tool_calls=[("rendezvous", {"name": task_of(request)})])
        return f"{task_of(request)}: {report(request)}"

    model = routed(
        {
            LEAD: lambda r: delegate("look at A", "look at B") if asked(r) else report(r),
            RESEARCHER.instructions: researcher,
        }
    )
    loop, _ = await make_loop(model, tools=[rendezvous])
    parent = await finish(loop, await ask(loop, "Compare A and B."))

    assert parent.state is TaskState.COMPLETED
    assert parent.result == "look at A: met look at A | look at B: met look at B"
    kids = children(loop, parent)
    assert [k.type for k in kids] == ["subagent", "subagent"]
    assert all(k.state is TaskState.COMPLETED and k.user_id == "alice" for k in kids)
    a, b = kids
    assert a.started_at and b.started_at and a.finished_at and b.finished_at
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # they overlapped
    # A fresh context: the child saw its instructions and its task, not the lead's question.
    firsts = [r for r in model.requests if r.messages[0].content != LEAD and asked(r)]
    assert sorted([m.content for m in r.messages] for r in firsts) == [
        [RESEARCHER.instructions, "look at A"],
        [RESEARCHER.instructions, "look at B"],
    ]
    offered = {t.name: t for t in model.requests[0].tools}
    assert offered["subagent"].parameters["properties"]["type"]["enum"] == ["researcher"]
    assert "- researcher: Looks things up and reports." in offered["subagent"].description


async def test_children_of_one_run_wait_for_their_turn_beyond_max_concurrent(
    make_loop: LoopFactory,
) -> None:
    active = peak = 0

    @tool
    async def probe() -> str:
        """Count the helpers working at the same time."""
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)  # room for another child to start, if one were allowed
        active -= 1
        return "ok"

    model = routed(
        {
            LEAD: lambda r: delegate("one", "two", "three") if asked(r) else report(r),
            RESEARCHER.instructions: lambda r: (
                TestTurn(tool_calls=[("probe", {})]) if asked(r) else task_of(r)
            ),
        }
    )
    loop, _ = await make_loop(model, tools=[probe], max_concurrent=1)
    parent = await finish(loop, await ask(loop))
    assert parent.result == "one | two | three"
    assert peak == 1


async def test_a_parent_lends_its_slot_so_its_child_runs_within_a_limit_of_one(
    make_loop: LoopFactory,
) -> None:
    model = routed(
        {
            LEAD: lambda r: delegate("only") if asked(r) else report(r),
            RESEARCHER.instructions: lambda r: "done alone",
        }
    )
    loop, _ = await make_loop(model, slots=1)
    parent = await finish(loop, await ask(loop))
    assert parent.state is TaskState.COMPLETED
    assert parent.result == "done alone"


# --------------------------------------------------------------------------- depth


async def test_a_child_at_the_deepest_level_has_no_subagent_tool(make_loop: LoopFactory) -> None:
    offered: dict[str, list[str]] = {}

    @tool
    def echo(text: str) -> str:
        """Say it back."""
        return text

    def general(request: ModelRequest) -> TestTurn | str:
        level = task_of(request)
        offered[level] = sorted(t.name for t in request.tools)
        if level == "level 1" and asked(request):
            return delegate("level 2", kind="general")
        return f"{level} done {report(request)}".strip()

    model = routed(
        {
            LEAD: lambda r: delegate("level 1", kind="general") if asked(r) else report(r),
            GENERAL.instructions: general,
        }
    )
    loop, manager = await make_loop(model, types=[GENERAL], tools=[echo], max_depth=2)
    parent = await finish(loop, await ask(loop))

    assert parent.result == "level 1 done level 2 done"
    assert offered == {"level 1": ["echo", "subagent"], "level 2": ["echo"]}
    (child,) = children(loop, parent)
    (grandchild,) = loop.list_tasks(parent_id=child.task_id)
    assert grandchild.state is TaskState.COMPLETED

    # A call from the deepest level is refused, in words the model can act on.
    with pytest.raises(SubagentDepthError, match="at most 2 level"):
        await manager.tool()(json.dumps({"type": "general", "task": "x"}), ToolContext(depth=2))
    call = ToolCall(id="c1", name="subagent", arguments='{"type": "general", "task": "x"}')
    refused = await loop.agent.tools.execute(call, ToolContext(depth=2))
    assert refused.is_error
    assert "Do the task yourself" in refused.text


async def test_max_depth_zero_offers_no_subagent_tool(make_loop: LoopFactory) -> None:
    loop, manager = await make_loop(TestProvider(["hi"]), max_depth=0)
    assert "subagent" not in loop.agent.tools
    with pytest.raises(SubagentDepthError, match="turned off"):
        await manager.tool()(json.dumps({"type": "researcher", "task": "x"}), ToolContext())


# --------------------------------------------------------------------------- permissions


class NoEcho:
    """A permission policy: ``echo`` is refused to everyone."""

    async def authorize(
        self, tool: Tool, call: ToolCall, context: ToolContext | None
    ) -> str | None:
        return "echo is not allowed here" if tool.name == "echo" else None


async def test_a_child_gets_only_its_parents_tools_and_its_permission_policy(
    make_loop: LoopFactory,
) -> None:
    secrets_read: list[str] = []

    @tool
    def secret() -> str:
        """Read the secret."""
        secrets_read.append("read")
        return "s3cret"

    @tool
    def echo(text: str) -> str:
        """Say it back."""
        return text

    reader = SubagentType(
        "reader",
        "Reads with echo only.",
        "You read.",
        tools=["echo", "shell"],  # shell is no tool anywhere: it is simply not there
        model="mini",  # a model name: the parent's provider, with this model
    )

    def read(request: ModelRequest) -> TestTurn | str:
        if asked(request):
            return TestTurn(tool_calls=[("secret", {}), ("echo", {"text": "hi"})])
        return report(request)

    model = routed(
        {
            LEAD: lambda r: delegate("read", kind="reader") if asked(r) else report(r),
            reader.instructions: read,
        }
    )
    loop, _ = await make_loop(model, types=[reader], tools=[secret, echo])
    loop.agent.tools.authorizer = NoEcho()
    before = [t.name for t in loop.agent.tools.tools()]
    parent = await finish(loop, await ask(loop))

    child_requests = [r for r in model.requests if r.messages[0].content == "You read."]
    assert [t.name for t in child_requests[0].tools] == ["echo"]
    assert {r.model for r in child_requests} == {"mini"}
    told = results(child_requests[-1])
    assert told[0].is_error and "no such tool" in told[0].text
    assert "Available tools: echo" in told[0].text
    assert told[1].is_error and "echo is not allowed here" in told[1].text
    assert secrets_read == []
    assert parent.state is TaskState.COMPLETED
    assert [t.name for t in loop.agent.tools.tools()] == before  # the parent's, untouched


# --------------------------------------------------------------------------- failures


async def test_a_childs_failure_comes_back_to_the_parent_as_a_tool_error(
    make_loop: LoopFactory,
) -> None:
    fragile = SubagentType(
        "fragile",
        "Breaks.",
        "You break.",
        model=TestProvider([TestTurn(error=ProviderError("test", "the model broke"))]),
    )
    lead = routed({LEAD: lambda r: delegate("try", kind="fragile") if asked(r) else report(r)})
    loop, _ = await make_loop(lead, types=[fragile])
    task = await ask(loop)
    consumer = loop.subscribe(task.task_id)
    parent = await finish(loop, task)

    (child,) = children(loop, parent)
    assert child.state is TaskState.FAILED
    assert parent.state is TaskState.COMPLETED  # the parent goes on: it was told
    (told,) = results(lead.requests[-1])
    assert told.is_error
    assert "The subagent 'fragile' failed:" in told.text
    assert "the model broke" in told.text
    tool_results = [c.event async for c in consumer if isinstance(c.event, ToolResultEvent)]
    assert [r.is_error for r in tool_results] == [True]


async def test_cancelling_the_parent_cancels_its_running_children(
    make_loop: LoopFactory,
) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        """Wait until cancelled."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        return "never"

    model = routed(
        {
            LEAD: lambda r: delegate("block", "block too") if asked(r) else report(r),
            RESEARCHER.instructions: lambda r: TestTurn(tool_calls=[("wait_forever", {})]),
        }
    )
    loop, _ = await make_loop(model, tools=[wait_forever])
    parent = await ask(loop)
    async with asyncio.timeout(WAIT_S):
        await started.wait()
        while len(children(loop, parent)) < 2 or loop.running_count < 3:
            await asyncio.sleep(0.005)
    kids = children(loop, parent)
    assert all(k.state is TaskState.RUNNING for k in kids)

    await loop.cancel_task(parent.task_id)
    assert parent.state is TaskState.CANCELLED
    assert [k.state for k in kids] == [TaskState.CANCELLED, TaskState.CANCELLED]
    assert stopped.is_set()  # the child's tool call was stopped, not left behind
    assert loop.running_count == 0
    assert not [t for t in asyncio.all_tasks() if "subagent" in t.get_name()]


async def test_a_call_that_times_out_cancels_its_child(make_loop: LoopFactory) -> None:
    @tool
    async def wait_forever() -> str:
        """Wait until cancelled."""
        await asyncio.Event().wait()
        return "never"

    model = routed(
        {
            LEAD: lambda r: delegate("block") if asked(r) else report(r),
            RESEARCHER.instructions: lambda r: TestTurn(tool_calls=[("wait_forever", {})]),
        }
    )
    loop, _ = await make_loop(model, tools=[wait_forever], timeout=0.2)
    parent = await finish(loop, await ask(loop))
    assert parent.state is TaskState.COMPLETED
    assert "did not finish within 0.2s and was cancelled" in str(parent.result)
    (child,) = children(loop, parent)
    assert child.state is TaskState.CANCELLED


async def test_a_child_cancelled_on_its_own_is_an_error_for_the_parent(
    make_loop: LoopFactory,
) -> None:
    started = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        """Wait until cancelled."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    model = routed(
        {
            LEAD: lambda r: delegate("block") if asked(r) else report(r),
            RESEARCHER.instructions: lambda r: TestTurn(tool_calls=[("wait_forever", {})]),
        }
    )
    loop, _ = await make_loop(model, tools=[wait_forever])
    task = await ask(loop)
    async with asyncio.timeout(WAIT_S):
        await started.wait()
    (child,) = children(loop, task)
    await loop.cancel_task(child.task_id)
    parent = await finish(loop, task)
    assert parent.state is TaskState.COMPLETED
    assert "The subagent 'researcher' was cancelled before it finished" in str(parent.result)


async def test_a_subagent_task_can_be_created_directly(make_loop: LoopFactory) -> None:
    model = routed({RESEARCHER.instructions: lambda r: f"report on {task_of(r)}"})
    loop, _ = await make_loop(model)
    task = await loop.create_task(
        {"type": "subagent", "agent": "researcher", "task": "X", "user_id": "bob"}
    )
    assert (await finish(loop, task)).result == "report on X"
    unknown = await loop.create_task({"type": "subagent", "agent": "nobody", "task": "X"})
    assert (await finish(loop, unknown)).state is TaskState.FAILED
    assert unknown.error == "No subagent type 'nobody'; declared: researcher."


# --------------------------------------------------------------------------- nested events


def collapsed(types: list[str]) -> list[str]:
    """Event types with runs of text deltas as one (a late reader gets them merged)."""
    out: list[str] = []
    for kind in types:
        if not (kind == "text_delta" and out and out[-1] == kind):
            out.append(kind)
    return out


async def test_nested_events_reach_the_parents_stream_in_order(make_loop: LoopFactory) -> None:
    def general(request: ModelRequest) -> TestTurn | str:
        if task_of(request) == "outer" and asked(request):
            return delegate("inner", kind="general")
        return f"{task_of(request)} answer"

    model = routed(
        {
            LEAD: lambda r: delegate("outer", kind="general") if asked(r) else report(r),
            GENERAL.instructions: general,
        }
    )
    loop, _ = await make_loop(model, types=[GENERAL])
    task = await ask(loop)
    consumer = loop.subscribe(task.task_id)
    parent = await finish(loop, task)
    chunks = [c async for c in consumer]
    (child,) = children(loop, parent)
    (grandchild,) = loop.list_tasks(parent_id=child.task_id)

    nested = [c for c in chunks if isinstance(c.event, SubagentEvent)]
    events = [c.event for c in nested if isinstance(c.event, SubagentEvent)]
    assert {(e.task_id, e.call_id, e.agent, e.depth) for e in events} == {
        (child.task_id, "call_0_0", "general", 1)
    }
    # Every chunk of the child's own stream, in its order, then the parent's result.
    own = [c.event.model_dump(mode="json") async for c in loop.subscribe(child.task_id)]
    assert collapsed([e.event["type"] for e in events]) == collapsed([e["type"] for e in own])
    assert events[-1].event == {**own[-1]}
    assert events[-1].event["status"] == "completed"
    assert events[-1].event["output"] == "outer answer"
    (result_seq,) = [c.seq for c in chunks if isinstance(c.event, ToolResultEvent)]
    assert nested[-1].seq < result_seq
    # The grandchild's events arrive wrapped twice, with their own task id and depth.
    inner = [e.event for e in events if e.event["type"] == "subagent"]
    assert inner
    assert {(i["task_id"], i["depth"], i["agent"]) for i in inner} == {
        (grandchild.task_id, 2, "general")
    }
    assert inner[-1]["event"]["type"] == "done"
    assert inner[-1]["event"]["output"] == "inner answer"
    assert parent.result == "outer answer"


# --------------------------------------------------------------------------- configuration


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "subagents.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def from_file(path: Path) -> SubagentManager:
    return SubagentManager.from_settings(Settings(_env_file=None, subagents_config=path))  # type: ignore[call-arg]


_OK = {"description": "d", "instructions": "i"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not valid JSON: Expecting property name"),
        ([], "must be a JSON object"),
        ({"agents": {}}, "unknown key 'agents' (known keys: subagents)"),
        ({"subagents": {}}, "'subagents': dictionary should have at least 1 item"),
        ({"subagents": {"r": {"description": "d"}}}, "'subagents.r.instructions' is missing"),
        ({"subagents": {"r": {**_OK, "tool": ["x"]}}}, "unknown key 'subagents.r.tool'"),
        ({"subagents": {"r": {**_OK, "tools": "grep"}}}, "'subagents.r.tools': input should"),
        ({"subagents": {"r": {**_OK, "max_turns": 0}}}, "'subagents.r.max_turns'"),
        ({"subagents": {"r": "researcher"}}, "'subagents.r' must be an object"),
        ({"subagents": {"no spaces": _OK}}, "Invalid subagent name 'no spaces'"),
    ],
)
def test_a_bad_config_file_is_a_configuration_error_naming_it(
    tmp_path: Path, content: Any, problem: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigurationError) as caught:
        from_file(path)
    assert f"The subagents file '{path}' (SUBAGENTS_CONFIG)" in str(caught.value)
    assert problem in str(caught.value)


def test_a_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"does not exist\. Create it or unset"):
        from_file(tmp_path / "nowhere.json")


def test_a_config_file_declares_the_types_the_tool_offers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "subagents": {
                "researcher": {
                    "description": "Finds facts.",
                    "instructions": "Research.",
                    "tools": ["read_file", "grep"],
                    "model": "anthropic:claude-haiku-4-5",
                    "max_turns": 8,
                },
                "reviewer": {"description": "Reviews changes.", "instructions": "Review."},
            }
        },
    )
    manager = from_file(path)
    assert list(manager.types) == ["researcher", "reviewer"]
    assert manager.types["researcher"].tools == ("read_file", "grep")
    assert manager.types["researcher"].max_turns == 8
    assert manager.types["reviewer"].tools is None
    definition = manager.tool().definition
    assert definition.parameters["properties"]["type"]["enum"] == ["researcher", "reviewer"]
    assert definition.parameters["required"] == ["type", "task"]
    assert "- reviewer: Reviews changes." in definition.description
    assert (manager.max_depth, manager.max_concurrent) == (2, 4)
    assert list(SubagentManager().types) == ["general"]  # the built-in type, without a file


async def test_the_agent_loop_offers_subagents_from_its_settings(tmp_path: Path) -> None:
    config = tmp_path / "subagents.json"
    config.write_text(
        json.dumps(
            {
                "subagents": {
                    "researcher": {
                        "description": "Looks things up.",
                        "instructions": "Research the question.",
                    }
                }
            }
        )
    )
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'agent.db'}",
        subagents_config=config,
    )
    async with AgentLoop(settings, model="test", streams=MemoryStreamStore()) as loop:
        schema = loop.agent.tools.get("subagent").definition.parameters
        assert "researcher" in json.dumps(schema)
    off = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=f"sqlite:///{tmp_path / 'b.db'}", subagent_max_depth=0
    )
    async with AgentLoop(off, model="test", streams=MemoryStreamStore()) as loop:
        assert "subagent" not in loop.agent.tools
