"""The run loop through the Agent API, with the deterministic offline provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent_template import Agent, tool
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.errors import MaxTurnsExceededError, ProviderOverloadedError
from agent_template.models import (
    AssistantMessage,
    DoneEvent,
    ErrorEvent,
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    TextDelta,
    ToolCallReady,
    ToolResultEvent,
    ToolResultMessage,
)
from agent_template.services.model_provider import ModelProvider
from agent_template.services.providers.offline import TestProvider, TestTurn


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, model_max_retries=0)  # type: ignore[call-arg]


@tool
async def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers (sync: runs in a worker thread)."""
    return a * b


def last_tool_results(request: ModelRequest) -> list[ToolResultMessage]:
    return [m for m in request.messages if isinstance(m, ToolResultMessage)]


async def test_multi_turn_tool_use(settings: Settings) -> None:
    model = TestProvider(
        [
            TestTurn(tool_calls=[("add", {"a": 2, "b": 3})]),
            TestTurn(tool_calls=[("multiply", {"a": 5, "b": 4})]),
            TestTurn(text="The answer is 20."),
        ]
    )
    agent = Agent("Compute.", tools=[add, multiply], model=model, settings=settings)
    events = [e async for e in agent.start("(2+3)*4?")]
    kinds = [e.type for e in events]
    assert kinds.count("tool_result") == 2
    assert isinstance(events[-1], DoneEvent)
    assert events[-1].status == "completed"
    assert events[-1].output == "The answer is 20."
    assert events[-1].turns == 3
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert [r.content for r in results] == ["5", "20"]
    # the model saw each result paired with its call, and the tool definitions
    third = model.requests[2]
    assert [m.role for m in third.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert {t.name for t in third.tools} == {"add", "multiply"}
    assert third.tools[0].parameters["properties"]["a"]["description"] == "The first number."


async def test_usage_is_summed_over_turns(settings: Settings) -> None:
    model = TestProvider([TestTurn(tool_calls=[("add", {"a": 1, "b": 1})]), "two"])
    result = await Agent(tools=[add], model=model, settings=settings).run("1+1")
    assert result.usage.requests == 2
    assert result.usage.output_tokens > 0
    assert result.output == "two"


async def test_independent_tool_calls_run_concurrently(settings: Settings) -> None:
    first_started = asyncio.Event()
    second_started = asyncio.Event()

    @tool
    async def ping() -> str:
        """Waits for pong to start: deadlocks unless both run at once."""
        first_started.set()
        await asyncio.wait_for(second_started.wait(), 2)
        return "ping"

    @tool
    async def pong() -> str:
        """Waits for ping to start."""
        second_started.set()
        await asyncio.wait_for(first_started.wait(), 2)
        return "pong"

    model = TestProvider([TestTurn(tool_calls=[("ping", {}), ("pong", {})]), "done"])
    result = await Agent(tools=[ping, pong], model=model, settings=settings).run("go")
    contents = [m.content for m in result.messages if isinstance(m, ToolResultMessage)]
    assert contents == ["ping", "pong"]
    assert not any(m.is_error for m in result.messages if isinstance(m, ToolResultMessage))


async def test_tool_exception_goes_back_to_the_model(settings: Settings) -> None:
    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    model = TestProvider([TestTurn(tool_calls=[("explode", {})]), "sorry"])
    result = await Agent(tools=[explode], model=model, settings=settings).run("x")
    seen = last_tool_results(model.requests[1])
    assert seen[0].is_error
    assert "RuntimeError: disk on fire" in seen[0].content
    assert result.status == "completed"


async def test_unknown_tool_is_reported_with_the_available_ones(settings: Settings) -> None:
    model = TestProvider([TestTurn(tool_calls=[("nope", {})]), "ok"])
    await Agent(tools=[add], model=model, settings=settings).run("x")
    seen = last_tool_results(model.requests[1])[0]
    assert seen.is_error
    assert "Available tools: add" in seen.content


async def test_tool_timeout_becomes_an_error_result(settings: Settings) -> None:
    cancelled = asyncio.Event()

    @tool(timeout=0.05)
    async def hang() -> str:
        """Never returns."""
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "unreachable"

    model = TestProvider([TestTurn(tool_calls=[("hang", {})]), "gave up"])
    result = await Agent(tools=[hang], model=model, settings=settings).run("x")
    seen = last_tool_results(model.requests[1])[0]
    assert seen.is_error
    assert "did not finish within 0.05s" in seen.content
    assert cancelled.is_set()
    assert result.output == "gave up"


async def test_invalid_arguments_are_corrected_by_the_model(settings: Settings) -> None:
    def script(request: ModelRequest) -> TestTurn:
        results = last_tool_results(request)
        if not results:
            return TestTurn(tool_calls=[("add", {"a": "two", "b": 3})])
        if results[-1].is_error:
            assert "a:" in results[-1].content
            assert "Fix them and call the tool again" in results[-1].content
            return TestTurn(tool_calls=[("add", {"a": 2, "b": 3})])
        return TestTurn(text=f"It is {results[-1].content}.")

    model = TestProvider(script)
    result = await Agent(tools=[add], model=model, settings=settings).run("2+3")
    assert result.output == "It is 5."
    assert len(model.requests) == 3


async def test_max_turns_stops_the_run(settings: Settings) -> None:
    model = TestProvider(lambda _: TestTurn(tool_calls=[("add", {"a": 1, "b": 1})]))
    agent = Agent(tools=[add], model=model, settings=settings, max_turns=3)
    events = [e async for e in agent.start("loop")]
    assert isinstance(events[-2], ErrorEvent)
    assert events[-2].code == "max_turns_exceeded"
    assert isinstance(events[-1], DoneEvent)
    assert events[-1].status == "failed"
    assert len(model.requests) == 3
    with pytest.raises(MaxTurnsExceededError, match="after 3 model turns"):
        await agent.run("loop")


async def test_provider_error_ends_the_run_with_an_error_event(settings: Settings) -> None:
    model = TestProvider([TestTurn(error=ProviderOverloadedError("test", "boom", status=503))])
    events = [e async for e in Agent(model=model, settings=settings).start("x")]
    assert [e.type for e in events] == ["error", "done"]
    assert isinstance(events[0], ErrorEvent)
    assert events[0].retryable
    assert "boom" in events[0].message


class _SlowModel(ModelProvider):
    """Streams words forever until closed; records that it was closed."""

    name = "slow"

    def __init__(self) -> None:
        super().__init__(model="slow")
        self.closed = asyncio.Event()
        self.first = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        try:
            for i in range(10_000):
                yield TextDelta(text=f"w{i} ")
                self.first.set()
                await asyncio.sleep(0.001)
            yield ResponseFinished(finish_reason="stop", message=AssistantMessage(content=""))
        finally:
            self.closed.set()


async def test_cancel_during_the_model_stream_keeps_the_partial_answer(
    settings: Settings,
) -> None:
    model = _SlowModel()
    run = Agent(model=model, settings=settings).start("talk")
    seen: list[str] = []

    async def consume() -> None:
        async for event in run:
            if isinstance(event, TextDelta):
                seen.append(event.text)

    task = asyncio.create_task(consume())
    await model.first.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(model.closed.wait(), 1)
    result = run.result
    assert result.status == "cancelled"
    partial = result.messages[-1]
    assert isinstance(partial, AssistantMessage)
    assert partial.status == "cancelled"
    assert partial.content == "".join(seen)
    assert partial.content.startswith("w0 ")


async def test_cancel_during_tools_stops_them_and_keeps_history_valid(
    settings: Settings,
) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    @tool
    async def forever() -> str:
        """Runs until cancelled."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        return "never"

    @tool
    async def quick() -> str:
        """Returns at once."""
        return "quick done"

    model = TestProvider([TestTurn(tool_calls=[("quick", {}), ("forever", {})]), "unused"])
    run = Agent(tools=[quick, forever], model=model, settings=settings).start("go")

    async def consume() -> None:
        async for _ in run:
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()
    result = run.result
    assert result.status == "cancelled"
    calls = result.messages[-3]
    assert isinstance(calls, AssistantMessage)
    ids = [c.id for c in calls.tool_calls]
    results = [m for m in result.messages if isinstance(m, ToolResultMessage)]
    assert [r.tool_call_id for r in results] == ids  # every call keeps its result
    assert results[0].content == "quick done"
    assert results[1].is_error
    assert "cancelled" in results[1].content


async def test_closing_the_iterator_cancels_the_run(settings: Settings) -> None:
    model = _SlowModel()
    run = Agent(model=model, settings=settings).start("talk")
    async for event in run:
        if isinstance(event, TextDelta):
            break
    await run.aclose()
    assert model.closed.is_set()
    assert run.result.status == "cancelled"


async def test_history_is_sent_before_the_new_prompt(settings: Settings) -> None:
    model = TestProvider(["first answer", "second answer"])
    agent = Agent("Be brief.", model=model, settings=settings)
    first = await agent.run("one")
    second = await agent.run("two", history=[*model.requests[0].messages, *first.messages[1:]])
    assert second.output == "second answer"
    sent = model.requests[1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert [getattr(m, "content", None) for m in sent][1:] == ["one", "first answer", "two"]


async def test_offline_model_calls_a_tool_on_request(settings: Settings) -> None:
    agent = Agent(tools=[add], model="test", settings=settings)
    events = [e async for e in agent.start('call add {"a": 20, "b": 22}')]
    finished = [e for e in events if isinstance(e, ToolCallReady)]
    assert json.loads(finished[0].call.arguments) == {"a": 20, "b": 22}
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert "42" in done.output


def test_run_sync(settings: Settings) -> None:
    result = Agent(model=TestProvider(["hi"]), settings=settings).run_sync("hello")
    assert result.output == "hi"
    assert [m.role for m in result.messages] == ["user", "assistant"]


class _BrokenModel(ModelProvider):
    """Streams a little, then fails with an exception no provider module mapped."""

    name = "broken"

    def __init__(self) -> None:
        super().__init__(model="broken")

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        yield TextDelta(text="half ")
        raise KeyError("choices")


async def test_an_unexpected_model_failure_is_reported_not_raised(settings: Settings) -> None:
    run = Agent(model=_BrokenModel(), settings=settings).start("x")
    events = [e async for e in run]
    assert [e.type for e in events] == ["text_delta", "error", "done"]
    error = events[1]
    assert isinstance(error, ErrorEvent)
    assert error.code == "unexpected_error"
    assert "KeyError" in error.message
    partial = run.result.messages[-1]
    assert isinstance(partial, AssistantMessage)
    assert (partial.content, partial.status) == ("half ", "failed")


async def test_each_tool_result_reports_its_own_duration(settings: Settings) -> None:
    quick_done = asyncio.Event()

    @tool
    async def quick() -> str:
        """Answers at once."""
        quick_done.set()
        return "q"

    @tool
    async def slow() -> str:
        """Answers after quick did, and a little longer."""
        await quick_done.wait()
        await asyncio.sleep(0.05)
        return "s"

    model = TestProvider([TestTurn(tool_calls=[("slow", {}), ("quick", {})]), "done"])
    agent = Agent(tools=[quick, slow], model=model, settings=settings)
    results = [e async for e in agent.run_stream("x") if isinstance(e, ToolResultEvent)]
    by_name = {r.name: r.duration_ms for r in results}
    assert by_name["quick"] < by_name["slow"]  # not the turn's time for both


async def test_a_failing_checkpoint_is_a_storage_error_and_the_run_still_ends(
    settings: Settings,
) -> None:
    from agent_template.errors import StorageUnavailableError
    from agent_template.models import ErrorOccurred

    saved: list[list[str]] = []

    async def save(messages: list) -> None:  # type: ignore[type-arg]
        saved.append([m.role for m in messages])

    async def checkpoint(text: str) -> None:
        raise StorageUnavailableError("sqlite:///data/x.db", "disk I/O error")

    bus = InProcessEventBus()
    errors: list[ErrorOccurred] = []
    bus.add_listener(errors.append, types=["error_occurred"])
    agent = Agent(
        model=TestProvider([" ".join(["word"] * 50)], delay=0.001), settings=settings, bus=bus
    )
    run = agent.start("talk", on_messages=save)
    run.config.checkpoint = checkpoint
    run.config.checkpoint_interval = 0.0
    events = [e async for e in run]
    assert [type(e) for e in events[-2:]] == [ErrorEvent, DoneEvent]
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert error.code == "storage_unavailable"
    assert "disk I/O error" in error.message
    assert run.result.status == "failed"
    assert errors[0].source == "storage"  # not blamed on the model
    assert saved[-1] == ["assistant"]  # the partial answer was still handed over


async def test_a_slow_checkpoint_never_holds_up_the_stream(settings: Settings) -> None:
    """The checkpoint is written beside the stream: deltas flow while it waits, it lands
    before the final answer is stored, and never two at once."""
    released = asyncio.Event()
    in_flight = 0
    overlapped = False
    order: list[str] = []

    async def checkpoint(text: str) -> None:
        nonlocal in_flight, overlapped
        in_flight += 1
        overlapped |= in_flight > 1
        await released.wait()  # a database that answers only once the stream has moved on
        in_flight -= 1
        order.append("checkpoint")

    async def save(messages: list) -> None:  # type: ignore[type-arg]
        order.append("save:" + messages[-1].role)

    agent = Agent(model=TestProvider([" ".join(["word"] * 60)], delay=0.001), settings=settings)
    run = agent.start("talk", on_messages=save)
    run.config.checkpoint = checkpoint
    run.config.checkpoint_interval = 0.0
    deltas = 0
    async with asyncio.timeout(30):  # a checkpoint that blocked the stream would hang here
        async for event in run:
            if isinstance(event, TextDelta):
                deltas += 1
                if deltas == 30:
                    released.set()  # only reachable if deltas flowed while it waited
    assert run.result.status == "completed"
    assert not overlapped
    assert order[-1] == "save:assistant" and "checkpoint" in order  # landed before the answer


async def test_a_failing_save_on_the_failure_path_does_not_swallow_the_final_events(
    settings: Settings,
) -> None:
    calls = 0

    async def save(messages: list) -> None:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("disk full")

    class Breaks(ModelProvider):
        name = "breaks"

        async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
            yield TextDelta(text="half an ans")
            raise ProviderOverloadedError("breaks", "overloaded")

    run = Agent(model=Breaks(model="m"), settings=settings).start("x", on_messages=save)
    events = [e async for e in run]
    assert [e.type for e in events[-2:]] == ["error", "done"]
    assert events[-2].code == "provider_unavailable"  # type: ignore[union-attr]
    assert calls == 2  # the partial answer was offered; its failure did not hide the error
