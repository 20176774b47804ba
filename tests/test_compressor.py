"""Context compression: tool-call pairs, summaries and their reuse, over the real wire."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_template import Agent, tool
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.errors import ConfigurationError, ProviderError
from agent_template.models import (
    AssistantMessage,
    BusEventBase,
    DataPart,
    ImagePart,
    Message,
    ModelRequest,
    ResourcePart,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agent_template.models.bus_events import ContextCompacted
from agent_template.services._compaction import IMAGE_TOKENS
from agent_template.services.compressor import CompactionContext, ContextCompressor
from agent_template.services.providers.offline import TestProvider, TestTurn
from agent_template.services.providers.openai_compat import OpenAICompatProvider
from agent_template.utils.tokens import estimate_tokens
from tests.wire_server import Reply, WireServer

SETTINGS = Settings(_env_file=None, model_max_retries=0)  # type: ignore[call-arg]
INSTRUCTIONS = "You are a careful research assistant."
SUMMARY_MARK = "Summary of the earlier conversation"
USAGE_MARK = "[Context: about "


# --------------------------------------------------------------------------- helpers


def conversation(turns: int, *, size: int = 200, tool_every: int = 2) -> list[Message]:
    """System instructions, then ``turns`` turns; every ``tool_every``-th turn calls a tool."""
    messages: list[Message] = [SystemMessage(content=INSTRUCTIONS)]
    for t in range(turns):
        messages.append(UserMessage(content=f"question {t}: " + "q" * size))
        if t % tool_every == 0:
            call = ToolCall(id=f"c{t}", name="lookup", arguments=json.dumps({"n": t}))
            messages.append(AssistantMessage(tool_calls=[call]))
            messages.append(
                ToolResultMessage(tool_call_id=f"c{t}", name="lookup", content="r" * 2 * size)
            )
        messages.append(AssistantMessage(content=f"answer {t}: " + "a" * size))
    return messages


def pairing_problem(messages: Sequence[Message]) -> str | None:
    """What a provider would reject: a result that answers no call just before it, or open calls."""
    waiting: set[str] = set()
    for i, m in enumerate(messages):
        if isinstance(m, ToolResultMessage):
            if m.tool_call_id not in waiting:
                return f"orphan tool result at {i}"
            waiting.discard(m.tool_call_id)
            continue
        if waiting:
            return f"unanswered tool calls before {i}: {waiting}"
        if isinstance(m, AssistantMessage):
            waiting = {c.id for c in m.tool_calls}
    return f"unanswered tool calls at the end: {waiting}" if waiting else None


def snapshot(messages: Sequence[Message]) -> list[tuple[int, dict[str, Any]]]:
    return [(id(m), m.model_dump()) for m in messages]


def without_usage_line(messages: Sequence[Message]) -> list[Message]:
    first = messages[0]
    assert isinstance(first, SystemMessage) and USAGE_MARK in first.content
    head = first.content.split("\n\n" + USAGE_MARK)[0]
    return [SystemMessage(content=head), *messages[1:]] if head.strip() else list(messages[1:])


def is_summary_request(request: ModelRequest) -> bool:
    return any(
        isinstance(m, UserMessage)
        and m.content.startswith("Transcript of the earlier conversation")
        for m in request.messages
    )


def summariser(text: str = "SUMMARY: questions were asked and lookups answered.") -> TestProvider:
    """An offline model that writes ``text`` as every summary and answers everything else."""

    def turn(request: ModelRequest) -> TestTurn:
        if is_summary_request(request):
            return TestTurn(text=text)
        return TestTurn(text="ok")

    return TestProvider(turn)


def request_of(messages: Sequence[Message]) -> ModelRequest:
    return ModelRequest(messages=list(messages))


# ----------------------------------------------------------------- under and over the threshold


async def test_under_threshold_only_the_usage_line_is_added() -> None:
    messages = conversation(3)
    before = snapshot(messages)
    c = ContextCompressor(max_context_length=100_000)
    prepared = await c.prepare(request_of(messages))
    out = prepared.messages
    assert out[1:] == messages[1:] and all(
        a is b for a, b in zip(out[1:], messages[1:], strict=True)
    )
    assert out[0].content.startswith(INSTRUCTIONS)
    assert f"{USAGE_MARK}{c.estimate(messages):,} of 100,000 tokens used (0%)" in out[0].content
    assert "older turns are compacted above 80%" in out[0].content  # no model: nothing summarises
    assert snapshot(messages) == before and c.compactions == []


async def test_usage_line_gets_its_own_system_message_when_there_is_none() -> None:
    messages = conversation(2)[1:]
    prepared = await ContextCompressor(max_context_length=10_000).prepare(request_of(messages))
    assert isinstance(prepared.messages[0], SystemMessage)
    assert prepared.messages[0].content.startswith(USAGE_MARK)
    assert list(prepared.messages[1:]) == messages


async def test_without_announcing_a_request_under_the_threshold_passes_through() -> None:
    request = request_of(conversation(2))
    c = ContextCompressor(max_context_length=10_000, announce_usage=False)
    assert await c.prepare(request) is request


@pytest.mark.parametrize(("slack", "compacted"), [(0, False), (1, True)])
async def test_threshold_is_predictable(slack: int, compacted: bool) -> None:
    """A request estimated at exactly the limit passes; one token more is compacted."""
    messages = conversation(6)
    size = ContextCompressor(max_context_length=10).estimate(messages)
    c = ContextCompressor(
        max_context_length=2 * (size - slack), threshold=0.5, strategies=["truncate"]
    )
    assert c.limit == size - slack
    prepared = await c.prepare(request_of(messages))
    assert (len(c.compactions) == 1) is compacted
    if compacted:
        assert len(prepared.messages) < len(messages)
        assert c.estimate(without_usage_line(prepared.messages)) <= c.limit
    else:
        assert prepared.messages[1:] == messages[1:]


async def test_disabled_never_compacts() -> None:
    model = summariser()
    c = ContextCompressor(max_context_length=50, model=model, enabled=False)
    request = request_of(conversation(20))
    assert await c.prepare(request, session_id="s") is request
    assert c.compactions == [] and model.requests == [] and c.stats()["compactions"] == 0


def test_unknown_strategy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Unknown compression strategy 'zip'"):
        ContextCompressor(max_context_length=100, strategies=["zip"])


# --------------------------------------------------------------------------- strategies


async def test_old_tool_outputs_are_replaced_and_pairs_kept() -> None:
    messages = conversation(8, tool_every=1)
    c = ContextCompressor(max_context_length=1800, strategies=["drop_tool_outputs"], keep_recent=2)
    prepared = await c.prepare(request_of(messages))
    out = without_usage_line(prepared.messages)
    results = [m for m in out if isinstance(m, ToolResultMessage)]
    assert len(results) == 8 and pairing_problem(out) is None
    size = c.estimate([ToolResultMessage(tool_call_id="x", name="lookup", content="r" * 400)]) - 7
    placeholder = f"[tool output removed to save context: {size} tokens]"
    assert [r.content for r in results] == [placeholder] * 6 + ["r" * 400] * 2  # last 2 turns kept
    assert c.compactions[-1].strategy == "drop_tool_outputs"
    assert c.compactions[-1].cleared_outputs == 6
    assert c.estimate(out) <= c.limit


async def test_summary_failure_falls_back_to_truncation(caplog: pytest.LogCaptureFixture) -> None:
    model = TestProvider([TestTurn(error=ProviderError("test", "the model is down"))])
    c = ContextCompressor(max_context_length=1500, model=model, strategies=["summarize"])
    messages = conversation(12)
    with caplog.at_level(logging.WARNING, logger="agent_template.compressor"):
        prepared = await c.prepare(request_of(messages), session_id="s")
    out = without_usage_line(prepared.messages)
    assert len(model.requests) == 1  # it tried
    assert not any(SUMMARY_MARK in m.content for m in out)
    assert pairing_problem(out) is None and c.estimate(out) <= c.limit
    assert out[-1] is messages[-1] and out[0].content == INSTRUCTIONS
    result = c.compactions[-1]
    assert result.strategy == "truncate" and result.dropped_messages > 0
    assert "the model is down" in result.errors[0]
    assert "context compression 'summarize' failed" in caplog.text
    assert c.compaction_state("s") is None


async def test_summary_replaces_old_turns_after_the_instructions() -> None:
    model = summariser()
    c = ContextCompressor(max_context_length=2000, model=model, keep_recent=2)
    messages = conversation(12)
    prepared = await c.prepare(request_of(messages), session_id="s")
    out = without_usage_line(prepared.messages)
    assert out[0].content == INSTRUCTIONS
    assert isinstance(out[1], UserMessage) and out[1].content.startswith(SUMMARY_MARK)
    assert out[1].content.endswith("SUMMARY: questions were asked and lookups answered.")
    assert (
        out[2:] == messages[-6:]
    )  # the last two turns: user, tool call, result, answer; user, answer
    # The summary request is plain text a provider accepts: no tool messages, no tools.
    (ask,) = [r for r in model.requests if is_summary_request(r)]
    assert [m.role for m in ask.messages] == ["system", "user"] and not ask.tools
    transcript = ask.messages[1].content
    assert "User: question 0:" in transcript and "Tool lookup returned: rrr" in transcript
    assert "question 10" not in transcript  # kept verbatim, so not summarised
    result = c.compactions[-1]
    assert result.summarized_messages == len(messages) - 1 - 6
    state = c.compaction_state("s")
    assert state is not None and state.covered == len(messages) - 1 - 6


async def test_custom_strategy_cannot_break_pairs() -> None:
    class DropResults:
        name = "drop_results"

        async def apply(
            self, messages: Sequence[Message], budget: int, ctx: CompactionContext
        ) -> list[Message]:
            return [m for m in messages if not isinstance(m, ToolResultMessage)]

    c = ContextCompressor(max_context_length=2500, strategies=[DropResults()], keep_recent=1)
    messages = conversation(10, tool_every=1)
    prepared = await c.prepare(request_of(messages))
    out = without_usage_line(prepared.messages)
    assert pairing_problem(out) is None
    assert c.compactions[-1].strategy.startswith("drop_results")
    assert out[-4:] == messages[-4:]


async def test_manual_compaction_summarises_even_under_the_threshold() -> None:
    model = summariser()
    c = ContextCompressor(max_context_length=1_000_000, model=model, keep_recent=1)
    messages = conversation(5)
    before = snapshot(messages)
    result = await c.compact(messages, session_id="m")
    assert result.manual and "summarize" in result.strategy and result.summary is not None
    assert result.messages[0] is messages[0]
    assert result.messages[1].content.startswith(SUMMARY_MARK)
    assert result.messages[2:] == messages[-4:]  # the last turn: user, tool call, result, answer
    assert pairing_problem(result.messages) is None and snapshot(messages) == before
    # A later request of the session reuses that summary once it is over the threshold.
    c.limit = c.estimate(messages) - 1
    prepared = await c.prepare(request_of(messages), session_id="m")
    assert prepared.messages[1:] == result.messages[1:]
    assert sum(map(is_summary_request, model.requests)) == 1


# --------------------------------------------------------------------------- calibration and state


async def test_observed_usage_calibrates_estimates() -> None:
    messages = conversation(4)
    c = ContextCompressor(max_context_length=100_000)
    raw = c.estimate(messages)
    prepared = await c.prepare(request_of(messages))
    sent = c.estimate(prepared.messages)  # the usage line included
    c.observe(prepared, Usage(input_tokens=2 * sent, requests=1))
    assert c.ratio == pytest.approx(2.0, rel=0.02)
    assert c.estimate(messages) == pytest.approx(2 * raw, rel=0.02)
    c.observe(prepared, Usage(input_tokens=0))  # no report: nothing learnt
    assert c.ratio == pytest.approx(2.0, rel=0.02)
    # A wildly high report counts as 3x (the clamp) and moves the ratio by 30% of the gap.
    c.observe(request_of(messages), Usage(input_tokens=100 * raw, requests=1))
    assert c.ratio == pytest.approx(2.0 + 0.3 * (3.0 - 2.0), rel=0.02)
    for _ in range(40):
        c.observe(request_of(messages), Usage(input_tokens=100 * raw, requests=1))
    assert 2.999 < c.ratio <= 3.0
    assert c.stats()["ratio"] == 3.0


async def test_calibration_changes_when_compaction_starts() -> None:
    messages = conversation(6)
    c = ContextCompressor(
        max_context_length=2 * c_size(messages), threshold=0.75, strategies=["truncate"]
    )
    await c.prepare(request_of(messages))
    assert c.compactions == []  # 50% of the window by the raw estimate
    c.observe(request_of(messages), Usage(input_tokens=2 * c.estimate(messages), requests=1))
    await c.prepare(request_of(messages))
    assert len(c.compactions) == 1  # the provider counts twice as many: now 100%


def c_size(messages: Sequence[Message]) -> int:
    return ContextCompressor(max_context_length=10).estimate(messages)


async def test_summary_is_reused_across_turns_until_the_threshold_is_passed_again() -> None:
    model = summariser()
    c = ContextCompressor(
        max_context_length=3000, model=model, keep_recent=2, strategies=["summarize", "truncate"]
    )
    history = conversation(24, size=150)
    sent: list[ModelRequest] = []
    for t in range(6):  # each turn adds a short exchange; the summary keeps the request small
        history += [UserMessage(content=f"small {t}"), AssistantMessage(content=f"reply {t}")]
        sent.append(await c.prepare(request_of(history), session_id="s"))
    assert sum(map(is_summary_request, model.requests)) == 1
    assert c.stats()["reused"] == 5 and c.stats()["summaries"] == 1
    for request in sent:
        assert request.messages[1].content.startswith(SUMMARY_MARK)
        assert request.messages[-1] is not None and pairing_problem(request.messages) is None
        assert c.estimate(without_usage_line(request.messages)) <= c.limit
    # Much more history: the standing summary and the new turns are summarised again.
    history += conversation(24, size=150)[1:]
    again = await c.prepare(request_of(history), session_id="s")
    assert sum(map(is_summary_request, model.requests)) == 2
    second = [r for r in model.requests if is_summary_request(r)][1]
    assert "Earlier summary: SUMMARY: questions were asked" in second.messages[1].content
    assert c.estimate(without_usage_line(again.messages)) <= c.limit
    # The state survives a restart through dump_state / load_state, as a session store keeps it.
    saved = json.loads(json.dumps(c.dump_state("s")))
    fresh = ContextCompressor(
        max_context_length=3000, model=model, keep_recent=2, strategies=["summarize", "truncate"]
    )
    fresh.load_state(saved)
    restored = await fresh.prepare(request_of(history), session_id="s")
    assert sum(map(is_summary_request, model.requests)) == 2
    assert restored.messages[1:] == again.messages[1:]
    # An edited history does not match the summary any more.
    edited = [history[0], UserMessage(content="something else"), *history[2:]]
    await fresh.prepare(request_of(edited), session_id="s")
    assert sum(map(is_summary_request, model.requests)) == 3


async def test_compaction_event_carries_token_counts() -> None:
    bus = InProcessEventBus()
    seen: list[BusEventBase] = []
    bus.add_listener(seen.append, types=["context_compacted"])
    c = ContextCompressor(max_context_length=1500, model=summariser(), bus=bus)
    tools = [
        ToolDefinition(
            name="lookup", parameters={"type": "object", "properties": {"n": {"type": "integer"}}}
        )
    ]
    messages = conversation(12)
    await c.prepare(ModelRequest(messages=messages, tools=tools), session_id="ev")
    (event,) = seen
    assert isinstance(event, ContextCompacted) and event.type == "context_compacted"
    assert event.session_id == "ev" and event.limit == c.limit == 1200 and not event.manual
    assert event.tokens_before == c.estimate(messages, tools) > event.limit
    assert 0 < event.tokens_after <= event.limit
    assert event.strategy == "drop_tool_outputs+summarize" and event.summarized_messages > 0


# ----------------------------------------------------------------- property: pairs never split


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    messages: list[Message] = [SystemMessage(content="rules" + " more" * draw(st.integers(0, 30)))]
    if draw(st.booleans()):
        messages.append(SystemMessage(content="more rules"))
    calls = 0
    for t in range(draw(st.integers(1, 8))):
        messages.append(UserMessage(content=f"u{t} " + "x" * draw(st.integers(0, 400))))
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                n = draw(st.integers(1, 3))
                ids = [f"call{calls + i}" for i in range(n)]
                calls += n
                messages.append(
                    AssistantMessage(
                        content="let me look" if draw(st.booleans()) else "",
                        tool_calls=[ToolCall(id=i, name="look", arguments='{"q": 1}') for i in ids],
                    )
                )
                for i in ids:
                    messages.append(
                        ToolResultMessage(
                            tool_call_id=i, name="look", content="y" * draw(st.integers(0, 600))
                        )
                    )
            else:
                messages.append(AssistantMessage(content="a" * draw(st.integers(1, 300))))
    return messages


def last_unit(messages: Sequence[Message]) -> list[Message]:
    start = max(i for i, m in enumerate(messages) if not isinstance(m, ToolResultMessage))
    return list(messages[start:])


MODELS = st.sampled_from(["none", "ok", "fails"])
STRATEGY_LISTS = st.lists(
    st.sampled_from(["drop_tool_outputs", "summarize", "truncate"]), max_size=3, unique=True
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(30, 4000), st.integers(0, 5), STRATEGY_LISTS, MODELS)
def test_compaction_keeps_pairs_instructions_and_the_last_user_message(
    messages: list[Message], window: int, keep_recent: int, strategies: list[str], model_kind: str
) -> None:
    model = {
        "none": None,
        "ok": summariser("short summary"),
        "fails": TestProvider(lambda r: TestTurn(error=ProviderError("test", "down"))),
    }[model_kind]
    c = ContextCompressor(
        max_context_length=window, model=model, keep_recent=keep_recent, strategies=strategies
    )
    before = snapshot(messages)
    head = [m for m in messages[:2] if isinstance(m, SystemMessage)]
    last_user = [m for m in messages if isinstance(m, UserMessage)][-1]
    pinned = [last_user, *last_unit(messages)]

    async def both() -> tuple[ModelRequest, Any]:
        prepared = await c.prepare(request_of(messages), session_id="p")
        return prepared, await c.compact(messages)

    prepared, manual = asyncio.run(both())
    assert snapshot(messages) == before  # the caller's list and messages are untouched
    for out in (without_usage_line(prepared.messages), manual.messages):
        assert pairing_problem(out) is None, out
        assert out[: len(head)] == head
        assert any(m is last_user for m in out)
        if c.estimate(out) > c.limit:  # only when the last user message and latest unit are too big
            assert all(any(m is p for p in pinned) for m in out[len(head) :]), out
    assert manual.fits or manual.tokens_after == c.estimate(manual.messages)


# --------------------------------------------------------------------------- through the real wire


def wire_tokens(messages: list[dict[str, Any]]) -> int:
    """The compressor's estimate, recomputed from what the server received."""
    total = 0
    for m in messages:
        content = m.get("content") or ""
        if m["role"] == "system":
            content = content.split("\n\n" + USAGE_MARK)[0]
        total += 4 + estimate_tokens(content) + (3 if m["role"] == "tool" else 0)
        for call in m.get("tool_calls") or []:
            total += (
                3
                + estimate_tokens(call["function"]["name"])
                + estimate_tokens(call["function"]["arguments"])
            )
    return total


async def test_agent_over_the_openai_wire_sends_a_compacted_valid_request(
    wire_server: WireServer,
) -> None:
    provider = OpenAICompatProvider(
        name="openai",
        api_key="k",
        base_url=wire_server.openai_base_url,
        model="gpt-wire",
        timeout=5,
    )
    compressor = ContextCompressor(max_context_length=2500, model=provider, keep_recent=3)
    agent = Agent(INSTRUCTIONS, model=provider, settings=SETTINGS, compressor=compressor)
    history = conversation(30)[1:]  # the agent adds its instructions
    before = snapshot(history)
    assert (
        compressor.estimate([SystemMessage(content=INSTRUCTIONS), *history]) > 2 * compressor.limit
    )
    wire_server.script(
        Reply(text="SUMMARY: thirty questions, fifteen lookups."), Reply(text="final answer")
    )
    try:
        result = await agent.run("What next?", history=history, session_id="wire")
    finally:
        await provider.aclose()
    assert result.output == "final answer"
    assert [type(m) for m in result.messages] == [UserMessage, AssistantMessage]
    assert snapshot(history) == before
    ask, final = (r.body for r in wire_server.requests)
    assert [m["role"] for m in ask["messages"]] == ["system", "user"] and "tools" not in ask
    transcript = ask["messages"][1]["content"]  # shortened to fit the window, newest kept
    assert "User: question 1: qqq" in transcript and "Assistant: answer 27: aaa" in transcript
    sent = final["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith(INSTRUCTIONS)
    assert USAGE_MARK in sent[0]["content"] and "of 2,500 tokens used" in sent[0]["content"]
    assert "older turns are summarised above 80%" in sent[0]["content"]
    assert sent[1]["role"] == "user" and sent[1]["content"].startswith(SUMMARY_MARK)
    assert sent[1]["content"].endswith("SUMMARY: thirty questions, fifteen lookups.")
    assert sent[-1] == {"role": "user", "content": "What next?"}
    assert any(m["role"] == "tool" for m in sent)  # a kept turn's pair, accepted by the server
    assert wire_tokens(sent) <= compressor.limit
    assert compressor.stats()["summaries"] == 1


# ----------------------------------------------------------------- a long offline conversation


@tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"Everything about {topic}: " + "facts " * 40


async def test_long_offline_conversation_keeps_working_past_the_limit() -> None:
    def turn(request: ModelRequest) -> TestTurn:
        if is_summary_request(request):
            return TestTurn(text="SUMMARY: the user asked about many topics.")
        last = request.messages[-1]
        if isinstance(last, UserMessage) and "look up" in last.content:
            return TestTurn(tool_calls=[("lookup", {"topic": last.content.split()[-1]})])
        return TestTurn(text=f"Noted ({len(request.messages)} messages in view).")

    model = TestProvider(turn)
    bus = InProcessEventBus()
    events: list[BusEventBase] = []
    bus.add_listener(events.append, types=["context_compacted"])
    compressor = ContextCompressor(max_context_length=600, model=model, bus=bus, keep_recent=2)
    agent = Agent(
        INSTRUCTIONS, tools=[lookup], model=model, settings=SETTINGS, compressor=compressor
    )
    history: list[Message] = []
    for t in range(40):
        detail = "with all the details you have, " * 3
        prompt = f"please look up topic{t}" if t % 3 == 0 else f"tell me {detail}about point {t}"
        result = await agent.run(prompt, history=history, session_id="long")
        assert result.status == "completed"
        history += result.messages
    assert (
        compressor.estimate([SystemMessage(content=INSTRUCTIONS), *history]) > 3 * compressor.limit
    )
    answered = [r for r in model.requests if not is_summary_request(r)]
    assert len(answered) == 40 + 14  # each turn, plus the answer after each lookup
    for request in answered:
        assert pairing_problem(request.messages) is None
        assert compressor.estimate(without_usage_line(request.messages)) <= compressor.limit
        assert USAGE_MARK in request.messages[0].content
    assert answered[-2].messages[-1].content == "please look up topic39"
    assert answered[-1].messages[-1].content.startswith("Everything about topic39")
    assert events and all(isinstance(e, ContextCompacted) for e in events)
    for event in events:
        assert isinstance(event, ContextCompacted)
        assert event.tokens_before > event.limit == compressor.limit >= event.tokens_after > 0
        assert event.session_id == "long"
    summaries = sum(map(is_summary_request, model.requests))
    assert 1 <= summaries < 20  # reused across turns, not rewritten every turn
    assert summaries == compressor.stats()["summaries"]


# ------------------------------------------------------- a stored session over the real wire


async def test_stored_session_is_compacted_on_the_wire_and_kept_whole_in_storage(
    wire_server: WireServer, tmp_path: Any
) -> None:
    from agent_template import AgentLoop
    from agent_template.config import Settings
    from agent_template.core.bus import InProcessEventBus

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'wire.db'}",
        redis_url=None,
        max_context_length=2500,
    )
    provider = OpenAICompatProvider(
        name="openai", api_key="k", base_url=wire_server.openai_base_url, model="m", timeout=5
    )
    loop = AgentLoop(
        settings,
        model=provider,
        instructions=INSTRUCTIONS,
        bus=InProcessEventBus(),
        todo_tools=False,
    )
    session = await loop.sessions.create_session("ada")
    history = conversation(30)[1:]
    await loop.sessions.add_messages(session.session_id, history)
    stored_before = [m.model_dump() for m in await loop.sessions.get_messages(session.session_id)]
    wire_server.script(Reply(text="SUMMARY: thirty questions."), Reply(text="final answer"))
    task = await loop.create_task({"message": "What next?", "session_id": session.session_id})
    await loop.run()
    await provider.aclose()
    assert task.result == "final answer", task.error
    sent = wire_server.requests[-1].body["messages"]
    assert sent[1]["content"].endswith("SUMMARY: thirty questions.")
    assert wire_tokens(sent) <= loop.compressor.limit  # under the threshold
    roles = [m["role"] for m in sent]
    for i, m in enumerate(sent):  # every call is answered right after it (the server checks too)
        if m.get("tool_calls"):
            assert roles[i + 1] == "tool"
    stored = await loop.sessions.get_messages(session.session_id)
    assert [m.model_dump() for m in stored[: len(history)]] == stored_before
    assert [m.role for m in stored[len(history) :]] == ["user", "assistant"]
    assert await loop.sessions.load_compaction(session.session_id)  # summary kept for next time
    await loop.sessions.close()


# --------------------------------------------------------------------------- request options


async def test_a_compacted_request_keeps_every_option() -> None:
    weather = ToolDefinition(name="get_weather", parameters={"type": "object"})
    request = ModelRequest(
        messages=conversation(12),
        tools=[weather],
        model="m-1",
        temperature=0.2,
        max_tokens=64,
        tool_choice="get_weather",
        stop=["END"],
        top_p=0.5,
        seed=3,
        response_format={"type": "json_object"},
        parallel_tool_calls=False,
    )
    c = ContextCompressor(max_context_length=1500, strategies=["truncate"])
    prepared = await c.prepare(request)
    assert c.compactions and len(prepared.messages) < len(request.messages)
    options = dataclasses.asdict(prepared) | {"messages": None}
    assert options == dataclasses.asdict(request) | {"messages": None}


# --------------------------------------------------------------------------- content parts


def test_parts_are_counted_by_what_they_cost() -> None:
    c = ContextCompressor(max_context_length=100_000)
    plain = c.estimate([UserMessage(content="look")])
    image = c.estimate(
        [UserMessage(content=[TextPart(text="look"), ImagePart(url="https://example.com/a.png")])]
    )
    assert image - plain == IMAGE_TOKENS
    data = {"rows": [[i, i * i] for i in range(200)]}
    as_data = c.estimate(
        [ToolResultMessage(tool_call_id="c", name="q", content=[DataPart(data=data)])]
    )
    as_text = c.estimate([ToolResultMessage(tool_call_id="c", name="q", content=json.dumps(data))])
    assert as_data == as_text
    resource = ResourcePart(uri="file:///a.txt", text="x" * 400)
    assert c.estimate([UserMessage(content=[resource])]) >= 100


async def test_old_tool_outputs_with_parts_are_replaced_too() -> None:
    messages = conversation(8, tool_every=1)
    image = ImagePart(url="https://example.com/chart.png")
    messages = [
        m.model_copy(update={"content": [TextPart(text=m.text), image, image]})
        if isinstance(m, ToolResultMessage)
        else m
        for m in messages
    ]
    c = ContextCompressor(max_context_length=9000, strategies=["drop_tool_outputs"], keep_recent=2)
    prepared = await c.prepare(request_of(messages))
    results = [m for m in prepared.messages if isinstance(m, ToolResultMessage)]
    assert sum(isinstance(r.content, str) for r in results) == 6  # all but the last two turns
    assert all("tool output removed" in r.text for r in results[:6])
