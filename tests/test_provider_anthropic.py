"""AnthropicProvider through the official anthropic SDK, over HTTP, against the wire server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator

import pytest

from agent_template.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderConnectionError,
    ProviderOverloadedError,
    ProviderTimeoutError,
    RateLimitError,
    StreamError,
)
from agent_template.models import (
    AssistantMessage,
    DataPart,
    ImagePart,
    Message,
    ModelEvent,
    ModelRequest,
    ReasoningDelta,
    ReasoningPart,
    ResourcePart,
    ResponseFinished,
    SystemMessage,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStarted,
    ToolDefinition,
    ToolResultMessage,
    UsageEvent,
    UserMessage,
)
from agent_template.services.providers.anthropic import AnthropicProvider
from tests.wire_server import Drop, Fault, Malformed, Reply, Stall, WireServer

WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def ask(
    text: str = "hi",
    *,
    tools: list[ToolDefinition] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> ModelRequest:
    return ModelRequest(
        messages=[UserMessage(content=text)],
        tools=tools or (),
        temperature=temperature,
        max_tokens=max_tokens,
    )


async def drain(events: AsyncIterator[ModelEvent]) -> list[ModelEvent]:
    return [event async for event in events]


def finished(events: list[ModelEvent]) -> ResponseFinished:
    ends = [e for e in events if isinstance(e, ResponseFinished)]
    assert len(ends) == 1 and events[-1] is ends[0]
    return ends[0]


@pytest.fixture
async def provider(wire_server: WireServer) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(
        api_key="sk-ant-wire", base_url=wire_server.anthropic_base_url, model="claude-wire"
    )
    yield p
    await p.aclose()


async def test_streams_text_deltas_in_order(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply("Hello, wire world!", text_chunk=5))
    events = await drain(provider.stream(ask()))

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Hello", ", wir", "e wor", "ld!"]
    end = finished(events)
    assert end.finish_reason == "stop"
    assert end.message.content == "Hello, wire world!"
    assert (end.message.provider, end.message.model) == ("anthropic", "claude-wire")
    [(path, body, headers)] = wire_server.requests
    assert path == "/v1/messages"
    assert body["stream"] is True
    assert body["max_tokens"] == 4096
    # this SDK generation sends the key as a bearer token; older ones used x-api-key
    sent_key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    assert sent_key == "sk-ant-wire"
    assert "anthropic-version" in headers


async def test_tool_call_input_split_across_many_deltas(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    arguments = {"city": "Paris", "units": "metric", "days": 3}
    wire_server.script(Reply("Let me look.", tool_calls=[("get_weather", arguments)], args_chunk=3))
    events = await drain(provider.stream(ask(tools=[WEATHER])))

    [started] = [e for e in events if isinstance(e, ToolCallStarted)]
    assert (started.index, started.name) == (0, "get_weather")
    assert started.id.startswith("toolu_")
    pieces = [e.arguments_delta for e in events if isinstance(e, ToolCallDelta)]
    assert len(pieces) > 10
    assert json.loads("".join(pieces)) == arguments
    [done] = [e for e in events if isinstance(e, ToolCallReady)]
    assert done.call.id == started.id and json.loads(done.call.arguments) == arguments
    end = finished(events)
    assert end.finish_reason == "tool_calls"
    assert end.message.content == "Let me look."
    assert end.message.tool_calls == [done.call]
    assert wire_server.requests[0].body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER.parameters,
        }
    ]


async def test_two_tool_calls_in_one_turn(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(
        Reply(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})])
    )
    events = await drain(provider.stream(ask(tools=[WEATHER])))

    assert [e.index for e in events if isinstance(e, ToolCallStarted)] == [0, 1]
    finishes = [e for e in events if isinstance(e, ToolCallReady)]
    assert [e.index for e in finishes] == [0, 1]
    assert [json.loads(e.call.arguments)["city"] for e in finishes] == ["Paris", "Oslo"]
    assert finishes[0].call.id != finishes[1].call.id
    assert finished(events).finish_reason == "tool_calls"


async def test_usage_is_reported(provider: AnthropicProvider, wire_server: WireServer) -> None:
    wire_server.script(Reply("ok", usage=(42, 7)))
    events = await drain(provider.stream(ask()))
    [usage] = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (42, 7, 1)


async def test_complete_sends_a_non_streaming_request(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(
        Reply("Sunny.", tool_calls=[("get_weather", {"city": "Rome"})], usage=(9, 3))
    )
    response = await provider.complete(ask(tools=[WEATHER], temperature=0.2, max_tokens=50))

    assert response.message.content == "Sunny."
    [call] = response.message.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Rome"})
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 3)
    body = wire_server.requests[0].body
    assert not body.get("stream")
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)


async def test_history_with_tool_calls_and_results_is_converted(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    calls = [
        ToolCall(id="toolu_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="toolu_b", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    history: list[Message] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Weather in Paris and Oslo?"),
        AssistantMessage(content="Checking.", tool_calls=calls),
        ToolResultMessage(tool_call_id="toolu_a", name="get_weather", content="18C"),
        ToolResultMessage(
            tool_call_id="toolu_b", name="get_weather", content="no data", is_error=True
        ),
        AssistantMessage(content="Paris is 18C; Oslo is unknown."),
        UserMessage(content="Thanks"),
    ]
    await drain(provider.stream(ModelRequest(messages=history, tools=[WEATHER])))

    body = wire_server.requests[0].body
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_b",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_b",
                    "content": "no data",
                    "is_error": True,
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Paris is 18C; Oslo is unknown."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
    ]


# --------------------------------------------------------------------------- errors


async def test_401_is_an_authentication_error(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(Fault(401, message="invalid x-api-key"))
    with pytest.raises(AuthenticationError) as caught:
        await drain(provider.stream(ask()))
    assert caught.value.status == 401
    assert "invalid x-api-key" in str(caught.value) and "ANTHROPIC_API_KEY" in str(caught.value)


async def test_429_carries_retry_after(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(Fault(429, retry_after=2))
    with pytest.raises(RateLimitError) as caught:
        await drain(provider.stream(ask()))
    assert caught.value.retry_after == 2


@pytest.mark.parametrize("status", [500, 529])
async def test_5xx_and_529_are_overloaded(
    provider: AnthropicProvider, wire_server: WireServer, status: int
) -> None:
    wire_server.script(Fault(status))
    with pytest.raises(ProviderOverloadedError) as caught:
        await drain(provider.stream(ask()))
    assert caught.value.status == status and caught.value.retryable


async def test_stall_beyond_the_timeout_is_a_timeout(wire_server: WireServer) -> None:
    provider = AnthropicProvider(
        api_key="k", base_url=wire_server.anthropic_base_url, model="m", timeout=0.3
    )
    wire_server.script(Stall(2.0))
    t0 = time.perf_counter()
    with pytest.raises(ProviderTimeoutError):
        await drain(provider.stream(ask()))
    assert time.perf_counter() - t0 < 1.5
    await provider.aclose()


async def test_drop_mid_stream_is_a_stream_error(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    # message_start, content_block_start, then two text deltas before the break
    wire_server.script(Drop(4, Reply("partial answer", text_chunk=4)))
    events: list[ModelEvent] = []
    with pytest.raises(StreamError):
        async for event in provider.stream(ask()):
            events.append(event)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["part", "ial "]


async def test_malformed_data_is_a_stream_error(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(Malformed())
    with pytest.raises(StreamError, match="not valid"):
        await drain(provider.stream(ask()))


async def test_connection_refused_names_the_base_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = AnthropicProvider(api_key="k", base_url=f"http://127.0.0.1:{port}", model="m")
    with pytest.raises(ProviderConnectionError) as caught:
        await drain(provider.stream(ask()))
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "ANTHROPIC_BASE_URL" in str(caught.value)
    await provider.aclose()


async def test_tool_result_without_a_call_is_rejected(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    history: list[Message] = [
        UserMessage(content="hi"),
        AssistantMessage(content="Hello."),
        ToolResultMessage(tool_call_id="toolu_ghost", name="get_weather", content="18C"),
    ]
    with pytest.raises(BadRequestError) as caught:
        await drain(provider.stream(ModelRequest(messages=history)))
    assert caught.value.status == 400 and "toolu_ghost" in str(caught.value)


async def test_tool_call_without_a_result_is_rejected(provider: AnthropicProvider) -> None:
    history: list[Message] = [
        UserMessage(content="hi"),
        AssistantMessage(tool_calls=[ToolCall(id="toolu_lost", name="get_weather")]),
        UserMessage(content="well?"),
    ]
    with pytest.raises(BadRequestError, match="toolu_lost"):
        await provider.complete(ModelRequest(messages=history))


# --------------------------------------------------------------------------- thinking and parts

THOUGHT = "The user wants the weather; call the tool."


async def test_streamed_thinking_becomes_reasoning_with_its_signature(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(
        Reply("Let me look.", reasoning=THOUGHT, signature="sig-1", redacted=["opaque-1"])
    )
    events = await drain(provider.stream(ask()))

    thoughts = [e.text for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(thoughts) == THOUGHT and len(thoughts) > 1
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ReasoningDelta) for e in events[:first_text])
    message = finished(events).message
    assert message.content == [
        ReasoningPart(text=THOUGHT, signature="sig-1", provider="anthropic"),
        ReasoningPart(redacted_data="opaque-1", provider="anthropic"),
        TextPart(text="Let me look."),
    ]
    assert (message.text, message.reasoning) == ("Let me look.", THOUGHT)


async def test_thinking_of_a_whole_answer_is_kept(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply("Sunny.", reasoning=THOUGHT, signature="sig-2", redacted=["x"]))
    response = await provider.complete(ask())
    assert response.message.content == [
        ReasoningPart(text=THOUGHT, signature="sig-2", provider="anthropic"),
        ReasoningPart(redacted_data="x", provider="anthropic"),
        TextPart(text="Sunny."),
    ]


@pytest.mark.parametrize("streamed", [True, False])
async def test_thinking_goes_back_signed_before_text_and_tool_use(
    provider: AnthropicProvider, wire_server: WireServer, streamed: bool
) -> None:
    """With tools and extended thinking the API wants the turn's thinking back, unchanged and
    first; the wire server refuses a signature it did not issue for that text."""
    wire_server.script(
        Reply(
            "Checking.",
            tool_calls=[("get_weather", {"city": "Paris"})],
            reasoning=THOUGHT,
            signature="sig-3",
            redacted=["opaque-3"],
        ),
        Reply("18C in Paris."),
    )
    first = (
        finished(await drain(provider.stream(ask(tools=[WEATHER])))).message
        if streamed
        else (await provider.complete(ask(tools=[WEATHER]))).message
    )
    [call] = first.tool_calls
    history: list[Message] = [
        UserMessage(content="hi"),
        first,
        ToolResultMessage(tool_call_id=call.id, name="get_weather", content="18C"),
    ]
    response = await provider.complete(ModelRequest(messages=history, tools=[WEATHER]))

    assert response.message.text == "18C in Paris."
    blocks = wire_server.requests[-1].body["messages"][1]["content"]
    assert [b["type"] for b in blocks] == ["thinking", "redacted_thinking", "text", "tool_use"]
    assert blocks[0] == {"type": "thinking", "thinking": THOUGHT, "signature": "sig-3"}
    assert blocks[1] == {"type": "redacted_thinking", "data": "opaque-3"}


async def test_altered_thinking_is_refused_by_the_server(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    """The wire server checks thinking as the API does, so the test above can fail."""
    forged = AssistantMessage(
        content=[
            ReasoningPart(text="not what was said", signature="sig-x", provider="anthropic"),
            TextPart(text="Hi."),
        ]
    )
    with pytest.raises(BadRequestError, match="signature"):
        await provider.complete(
            ModelRequest(messages=[UserMessage(content="hi"), forged, UserMessage(content="?")])
        )


async def test_reasoning_of_other_providers_is_not_sent(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    answer = AssistantMessage(
        content=[
            ReasoningPart(text="deepseek's thoughts", provider="deepseek"),
            TextPart(text="4"),
        ],
        provider="deepseek",
    )
    history: list[Message] = [UserMessage(content="2+2?"), answer, UserMessage(content="and 3+3?")]
    await provider.complete(ModelRequest(messages=history))
    assert wire_server.requests[0].body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "4"}],
    }


async def test_images_resources_and_data_are_sent_as_blocks(
    provider: AnthropicProvider, wire_server: WireServer
) -> None:
    history: list[Message] = [
        UserMessage(
            content=[
                TextPart(text="What is this?"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                ImagePart(url="https://example.com/cat.jpg"),
            ]
        ),
        AssistantMessage(tool_calls=[ToolCall(id="toolu_a", name="fetch")]),
        ToolResultMessage(
            tool_call_id="toolu_a",
            name="fetch",
            content=[
                TextPart(text="Fetched."),
                ImagePart(data="R0lGODlh", media_type="image/gif"),
                ResourcePart(uri="file:///notes.md", mime_type="text/markdown", text="# Notes"),
                DataPart(data={"size": 3}),
            ],
            is_error=False,
        ),
    ]
    await drain(provider.stream(ModelRequest(messages=history)))

    user, _, results = wire_server.requests[0].body["messages"]
    assert user["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert results["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_a",
            "content": [
                {"type": "text", "text": "Fetched."},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlh"},
                },
                {"type": "text", "text": "[resource file:///notes.md (text/markdown)]\n# Notes"},
                {"type": "text", "text": '{"size": 3}'},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ("get_weather", None, {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
async def test_tool_choice_maps_to_the_messages_api(
    provider: AnthropicProvider,
    wire_server: WireServer,
    choice: str | None,
    parallel: bool | None,
    expected: dict[str, object] | None,
) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="hi")],
        tools=[WEATHER],
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )
    await provider.complete(request)
    assert wire_server.requests[0].body.get("tool_choice") == expected


@pytest.mark.parametrize("streamed", [True, False])
async def test_sampling_options_are_sent_and_unsupported_ones_ignored(
    provider: AnthropicProvider, wire_server: WireServer, streamed: bool
) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="hi")],
        stop=["END"],
        top_p=0.9,
        temperature=0.3,
        seed=7,
        response_format={"type": "json_object"},
        tool_choice="required",  # no tools: not sent
    )
    if streamed:
        await drain(provider.stream(request))
    else:
        await provider.complete(request)
    body = wire_server.requests[0].body
    assert (body["stop_sequences"], body["top_p"], body["temperature"]) == (["END"], 0.9, 0.3)
    assert not {"seed", "response_format", "tool_choice", "stop"} & body.keys()
