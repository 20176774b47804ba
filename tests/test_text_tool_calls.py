"""Tool calls written as text: the streaming parser, and the provider against the wire server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_template import Agent
from agent_template.models import (
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    TextDelta,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStarted,
    ToolDefinition,
    UserMessage,
)
from agent_template.services.providers._openai_stream import TEXT_CALL_ID_PREFIX
from agent_template.services.providers._text_tools import TextToolCallParser
from agent_template.services.providers.openai_compat import OpenAICompatProvider
from tests.wire_server import Reply, WireServer

TOOLS = ("get_weather", "search")
QWEN_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def parse(text: str, chunk: int = 3) -> tuple[list[str], str, list[tuple[str, str]]]:
    """Feed ``text`` in ``chunk``-sized deltas: (what each feed emitted, the rest, the calls)."""
    parser = TextToolCallParser(TOOLS)
    emitted = [parser.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    rest, calls = parser.finish()
    return emitted, rest, calls


def shown(text: str, chunk: int = 3) -> str:
    emitted, rest, _ = parse(text, chunk)
    return "".join(emitted) + rest


def calls_of(text: str, chunk: int = 3) -> list[tuple[str, dict[str, object]]]:
    return [(name, json.loads(args)) for name, args in parse(text, chunk)[2]]


# --------------------------------------------------------------------------- the parser


def test_qwen_block_becomes_a_call() -> None:
    assert calls_of(QWEN_CALL) == [("get_weather", {"city": "Paris"})]
    assert shown(QWEN_CALL) == ""


def test_text_around_the_block_is_kept() -> None:
    text = f"Let me check.\n{QWEN_CALL}\nOne moment."
    assert calls_of(text) == [("get_weather", {"city": "Paris"})]
    assert shown(text) == "Let me check.\n\nOne moment."


def test_text_before_a_block_streams_before_the_block_ends() -> None:
    emitted, _, _ = parse(f"Let me check. {QWEN_CALL}", chunk=1)
    # everything up to the tag was emitted by the time "<" arrived
    assert "".join(emitted[:14]) == "Let me check. "


def test_several_blocks_give_several_calls() -> None:
    second = '<tool_call>{"name": "search", "arguments": {"q": "rain"}}</tool_call>'
    assert calls_of(QWEN_CALL + "\n" + second) == [
        ("get_weather", {"city": "Paris"}),
        ("search", {"q": "rain"}),
    ]


def test_an_unclosed_block_at_the_end_still_counts() -> None:
    assert calls_of(QWEN_CALL.removesuffix("</tool_call>")) == [("get_weather", {"city": "Paris"})]


def test_plain_json_object_becomes_a_call() -> None:
    text = ' {"name": "search", "parameters": {"q": "rain in Oslo"}}\n'
    assert calls_of(text) == [("search", {"q": "rain in Oslo"})]
    assert shown(text) == ""


def test_json_in_a_code_fence_becomes_a_call() -> None:
    text = '```json\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```'
    assert calls_of(text) == [("get_weather", {"city": "Rome"})]


def test_arguments_encoded_as_a_string_are_accepted() -> None:
    text = '{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}'
    assert calls_of(text) == [("search", {"q": "x"})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "delete_everything", "arguments": {}}',
        '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',
        '{"city": "Paris"}',
        "```python\nprint('hi')\n```",
        "<tool_call>not json</tool_call> and more",
        "a < b and <tool but not a tag",
    ],
)
def test_anything_else_stays_text(text: str) -> None:
    assert calls_of(text) == []
    assert shown(text) == text


def test_a_reply_starting_with_json_is_held_until_the_end() -> None:
    emitted, rest, _ = parse('{"name": "search", "arguments": {"q": 1}} and then text')
    assert "".join(emitted) == ""
    assert rest == '{"name": "search", "arguments": {"q": 1}} and then text'


@given(st.text(), st.integers(min_value=1, max_value=20))
def test_text_without_calls_comes_out_unchanged(text: str, chunk: int) -> None:
    if "<tool_call>" in text:
        return
    assert shown(text, chunk) == text


@given(
    st.text(alphabet=st.characters(blacklist_characters="<{`")),
    st.text(alphabet=st.characters(blacklist_characters="<")),
    st.integers(min_value=1, max_value=20),
)
def test_a_call_is_found_however_the_text_is_split(before: str, after: str, chunk: int) -> None:
    text = before + QWEN_CALL + after
    assert calls_of(text, chunk) == [("get_weather", {"city": "Paris"})]
    assert shown(text, chunk) == before + after


# --------------------------------------------------------------------------- through the provider

WEATHER = ToolDefinition(
    name="get_weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture
async def ollama(wire_server: WireServer) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider(
        name="ollama",
        api_key="not-needed",
        base_url=wire_server.openai_base_url,
        model="qwen2.5",
        text_tool_calls=True,
    )
    yield provider
    await provider.aclose()


def weather_request() -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content="Weather in Paris?")], tools=[WEATHER])


async def drain(events: AsyncIterator[ModelEvent]) -> list[ModelEvent]:
    return [event async for event in events]


async def test_qwen_block_over_the_wire_becomes_a_real_call(
    ollama: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply(f"Checking. {QWEN_CALL}", text_chunk=3))
    events = await drain(ollama.stream(weather_request()))

    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Checking. "
    [started] = [e for e in events if isinstance(e, ToolCallStarted)]
    assert (started.index, started.name) == (0, "get_weather")
    assert started.id.startswith(TEXT_CALL_ID_PREFIX)
    [delta] = [e for e in events if isinstance(e, ToolCallDelta)]
    assert json.loads(delta.arguments_delta) == {"city": "Paris"}
    [done] = [e for e in events if isinstance(e, ToolCallReady)]
    assert done.call.id == started.id
    end = events[-1]
    assert isinstance(end, ResponseFinished)
    assert end.finish_reason == "tool_calls"
    assert end.message.provider == "ollama"
    assert end.message.content == "Checking. "
    assert end.message.tool_calls == [done.call]


async def test_plain_json_reply_over_the_wire_becomes_a_real_call(
    ollama: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply('{"name": "get_weather", "arguments": {"city": "Oslo"}}'))
    response = await ollama.complete(weather_request())
    assert response.finish_reason == "tool_calls"
    assert response.message.content == ""
    [call] = response.message.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    assert call.id.startswith(TEXT_CALL_ID_PREFIX)


async def test_unknown_tool_over_the_wire_stays_text(
    ollama: OpenAICompatProvider, wire_server: WireServer
) -> None:
    reply = '{"name": "launch_rockets", "arguments": {}}'
    wire_server.script(Reply(reply))
    events = await drain(ollama.stream(weather_request()))
    assert not any(isinstance(e, ToolCallStarted) for e in events)
    end = events[-1]
    assert isinstance(end, ResponseFinished)
    assert (end.finish_reason, end.message.content) == ("stop", reply)


async def test_without_offered_tools_text_is_left_alone(
    ollama: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply(QWEN_CALL))
    response = await ollama.complete(ModelRequest(messages=[UserMessage(content="hi")]))
    assert response.message.tool_calls == []
    assert response.message.content == QWEN_CALL


async def test_providers_without_the_flag_leave_text_alone(wire_server: WireServer) -> None:
    provider = OpenAICompatProvider(
        name="openai", api_key="k", base_url=wire_server.openai_base_url, model="m"
    )
    wire_server.script(Reply(QWEN_CALL))
    events = await drain(provider.stream(weather_request()))
    await provider.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == QWEN_CALL
    assert not any(isinstance(e, ToolCallStarted) for e in events)


async def test_text_calls_of_different_turns_get_different_ids(wire_server: WireServer) -> None:
    """Two turns that each write a call as text: the history the server gets back must tell
    the calls apart (every turn's first call was ``call_text_0``, so results paired wrongly)."""
    calls: list[str] = []

    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"18C in {city}"

    oslo = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    wire_server.script(Reply(QWEN_CALL), Reply(oslo), Reply("Paris 18C, Oslo 18C."))
    provider = OpenAICompatProvider(
        name="ollama",
        api_key="not-needed",
        base_url=wire_server.openai_base_url,
        model="qwen2.5",
        text_tool_calls=True,
    )
    async with Agent("Use the tools.", tools=[get_weather], model=provider) as agent:
        result = await agent.run("Weather in Paris, then Oslo?")

    assert result.output == "Paris 18C, Oslo 18C."
    assert calls == ["Paris", "Oslo"]
    sent = wire_server.requests[-1].body["messages"]
    ids = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert len(ids) == 2 and len(set(ids)) == 2, ids
    assert answered == ids
    assert all(call_id.startswith(TEXT_CALL_ID_PREFIX) for call_id in ids)
