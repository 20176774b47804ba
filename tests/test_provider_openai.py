"""OpenAICompatProvider through the official openai SDK, over HTTP, against the wire server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Literal

import openai
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
from agent_template.services.providers._errors import (
    in_stream_error,
    parse_retry_after,
    status_error,
)
from agent_template.services.providers.openai_compat import OpenAICompatProvider
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
async def provider(wire_server: WireServer) -> AsyncIterator[OpenAICompatProvider]:
    p = OpenAICompatProvider(
        name="openai",
        api_key="sk-wire",
        base_url=wire_server.openai_base_url,
        model="gpt-wire",
        timeout=5,
    )
    yield p
    await p.aclose()


async def test_streams_text_deltas_in_order(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply("Hello, wire world!", text_chunk=4))
    events = await drain(provider.stream(ask()))

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Hell", "o, w", "ire ", "worl", "d!"]
    end = finished(events)
    assert end.finish_reason == "stop"
    assert end.message.content == "Hello, wire world!"
    assert (end.message.provider, end.message.model) == ("openai", "gpt-wire")
    [(path, body, headers)] = wire_server.requests
    assert path == "/v1/chat/completions"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-wire"
    assert headers["authorization"] == "Bearer sk-wire"


async def test_default_reply_echoes_the_last_user_message(provider: OpenAICompatProvider) -> None:
    response = await provider.complete(ask("ping"))
    assert response.message.content == "echo: ping"


async def test_tool_call_arguments_split_across_many_deltas(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    arguments = {"city": "Paris", "units": "metric", "days": 3}
    wire_server.script(Reply(tool_calls=[("get_weather", arguments)], args_chunk=3))
    events = await drain(provider.stream(ask(tools=[WEATHER])))

    [started] = [e for e in events if isinstance(e, ToolCallStarted)]
    assert (started.index, started.name) == (0, "get_weather")
    pieces = [e.arguments_delta for e in events if isinstance(e, ToolCallDelta)]
    assert len(pieces) > 10
    assert json.loads("".join(pieces)) == arguments
    [done] = [e for e in events if isinstance(e, ToolCallReady)]
    assert done.call.id == started.id
    assert json.loads(done.call.arguments) == arguments
    end = finished(events)
    assert end.finish_reason == "tool_calls"
    assert end.message.tool_calls == [done.call]
    tools = wire_server.requests[0].body["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]


async def test_two_tool_calls_in_one_turn(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(
        Reply(
            "Checking both.",
            tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})],
        )
    )
    events = await drain(provider.stream(ask(tools=[WEATHER])))

    starts = [(e.index, e.id) for e in events if isinstance(e, ToolCallStarted)]
    assert [index for index, _ in starts] == [0, 1]
    assert starts[0][1] != starts[1][1]
    finishes = [e for e in events if isinstance(e, ToolCallReady)]
    assert [e.index for e in finishes] == [0, 1]
    assert [json.loads(e.call.arguments)["city"] for e in finishes] == ["Paris", "Oslo"]
    # finished calls come after all the text and argument deltas
    first_finish = events.index(finishes[0])
    assert not any(isinstance(e, TextDelta | ToolCallDelta) for e in events[first_finish:])
    assert finished(events).message.content == "Checking both."


async def test_usage_is_reported(provider: OpenAICompatProvider, wire_server: WireServer) -> None:
    wire_server.script(Reply("ok", usage=(42, 7)))
    events = await drain(provider.stream(ask()))
    [usage] = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (42, 7, 1)


async def test_complete_sends_a_non_streaming_request(
    provider: OpenAICompatProvider, wire_server: WireServer
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
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    calls = [
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    history: list[Message] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Weather in Paris and Oslo?"),
        AssistantMessage(content="", tool_calls=calls),
        ToolResultMessage(tool_call_id="call_a", name="get_weather", content="18C"),
        ToolResultMessage(
            tool_call_id="call_b", name="get_weather", content="no data", is_error=True
        ),
        AssistantMessage(content="Paris is 18C; Oslo is unknown."),
        UserMessage(content="Thanks"),
    ]
    await drain(provider.stream(ModelRequest(messages=history, tools=[WEATHER])))

    assert wire_server.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: no data"},
        {"role": "assistant", "content": "Paris is 18C; Oslo is unknown."},
        {"role": "user", "content": "Thanks"},
    ]


# --------------------------------------------------------------------------- errors


async def test_401_is_an_authentication_error(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Fault(401, message="Incorrect API key provided"))
    with pytest.raises(AuthenticationError) as caught:
        await drain(provider.stream(ask()))
    assert caught.value.status == 401 and not caught.value.retryable
    assert "Incorrect API key provided" in str(caught.value)
    assert "OPENAI_API_KEY" in str(caught.value)


async def test_429_carries_retry_after(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Fault(429, retry_after=2))
    with pytest.raises(RateLimitError) as caught:
        await drain(provider.stream(ask()))
    assert caught.value.retry_after == 2
    assert caught.value.retryable
    assert "Retry in 2s" in str(caught.value)


async def test_500_is_overloaded(provider: OpenAICompatProvider, wire_server: WireServer) -> None:
    wire_server.script(Fault(500))
    with pytest.raises(ProviderOverloadedError) as caught:
        await drain(provider.stream(ask()))
    assert caught.value.status == 500 and caught.value.retryable


async def test_stall_beyond_the_timeout_is_a_timeout(wire_server: WireServer) -> None:
    provider = OpenAICompatProvider(
        api_key="k", base_url=wire_server.openai_base_url, model="m", timeout=0.3
    )
    wire_server.script(Stall(2.0))
    t0 = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as caught:
        await drain(provider.stream(ask()))
    assert time.perf_counter() - t0 < 1.5
    assert "MODEL_TIMEOUT" in str(caught.value)
    await provider.aclose()


async def test_drop_mid_stream_is_a_stream_error(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Drop(3, Reply("partial answer", text_chunk=4)))
    events: list[ModelEvent] = []
    with pytest.raises(StreamError):
        async for event in provider.stream(ask()):
            events.append(event)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["part", "ial "]
    assert not any(isinstance(e, ResponseFinished) for e in events)


async def test_malformed_data_is_a_stream_error(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Malformed())
    with pytest.raises(StreamError, match="not valid"):
        await drain(provider.stream(ask()))


async def test_connection_refused_names_the_base_url(unused_port: int) -> None:
    base_url = f"http://127.0.0.1:{unused_port}/v1"
    provider = OpenAICompatProvider(name="local", api_key="k", base_url=base_url, model="m")
    with pytest.raises(ProviderConnectionError) as caught:
        await drain(provider.stream(ask()))
    message = str(caught.value)
    assert f"127.0.0.1:{unused_port}" in message and "LOCAL_BASE_URL" in message
    assert caught.value.retryable
    await provider.aclose()


async def test_tool_result_without_a_call_is_rejected(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    history: list[Message] = [
        UserMessage(content="hi"),
        ToolResultMessage(tool_call_id="call_ghost", name="get_weather", content="18C"),
    ]
    with pytest.raises(BadRequestError) as caught:
        await drain(provider.stream(ModelRequest(messages=history)))
    assert caught.value.status == 400
    assert "call_ghost" in str(caught.value)


async def test_tool_call_without_a_result_is_rejected(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    history: list[Message] = [
        UserMessage(content="hi"),
        AssistantMessage(tool_calls=[ToolCall(id="call_lost", name="get_weather")]),
        UserMessage(content="well?"),
    ]
    with pytest.raises(BadRequestError, match="call_lost"):
        await provider.complete(ModelRequest(messages=history))


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_wire_server_answers_other_processes(wire_server: WireServer) -> None:
    """CLI tests point a subprocess at the server; a plain HTTP client there gets SSE back."""
    script = (
        "import json, sys, urllib.request\n"
        "body = json.dumps({'model': 'm', 'stream': True,"
        " 'messages': [{'role': 'user', 'content': 'from afar'}]}).encode()\n"
        "request = urllib.request.Request(sys.argv[1] + '/chat/completions', body,"
        " {'content-type': 'application/json'})\n"
        "print(urllib.request.urlopen(request, timeout=5).read().decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, wire_server.openai_base_url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("data: {")]
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in lines
    )
    assert text == "echo: from afar"
    assert done.stdout.rstrip().endswith("data: [DONE]")
    assert wire_server.paths() == ["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers_are_parsed(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == seconds


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (403, None, AuthenticationError),
        (404, None, BadRequestError),
        (422, None, BadRequestError),
        (502, None, ProviderOverloadedError),
        (529, None, ProviderOverloadedError),
        (None, "overloaded_error", ProviderOverloadedError),
        (None, "rate_limit_error", RateLimitError),
        (None, "something_new", StreamError),
    ],
)
def test_statuses_and_stream_error_types_map_to_our_errors(
    status: int | None, error_type: str | None, expected: type[Exception]
) -> None:
    if status is None:
        error = in_stream_error("openai", "boom", error_type)
    else:
        error = status_error("openai", status, "boom", error_type=error_type)
    assert type(error) is expected


def test_other_statuses_are_retryable_only_from_500() -> None:
    assert status_error("openai", 501, "x").retryable
    assert not status_error("openai", 409, "x").retryable


async def test_answer_limit_uses_the_name_the_server_knows(wire_server: WireServer) -> None:
    compatible = OpenAICompatProvider(
        name="local", api_key="k", base_url=wire_server.openai_base_url, model="m"
    )
    wire_server.script(Reply(text="short"))
    await compatible.complete(ModelRequest(messages=[UserMessage(content="hi")], max_tokens=7))
    await compatible.aclose()
    assert wire_server.requests[-1].body["max_tokens"] == 7
    assert "max_completion_tokens" not in wire_server.requests[-1].body
    official = OpenAICompatProvider(name="openai", api_key="k", model="m")  # api.openai.com
    request = ModelRequest(messages=[], max_tokens=9)
    assert official._limit(request, "max_completion_tokens") == 9
    assert official._limit(request, "max_tokens") is openai.omit


# --------------------------------------------------------------------------- reasoning and parts


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_streamed_reasoning_becomes_reasoning_events_and_a_leading_part(
    provider: OpenAICompatProvider,
    wire_server: WireServer,
    field: Literal["reasoning_content", "reasoning"],
) -> None:
    wire_server.script(
        Reply("Paris.", reasoning="The user asks for a capital.", reasoning_field=field)
    )
    events = await drain(provider.stream(ask("Capital of France?")))

    thoughts = [e.text for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(thoughts) == "The user asks for a capital." and len(thoughts) > 1
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ReasoningDelta) for e in events[:first_text])
    message = finished(events).message
    assert message.content == [
        ReasoningPart(text="The user asks for a capital.", provider="openai"),
        TextPart(text="Paris."),
    ]
    assert (message.text, message.reasoning) == ("Paris.", "The user asks for a capital.")


async def test_reasoning_of_a_whole_answer_is_kept(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply("42.", reasoning="Six times seven."))
    response = await provider.complete(ask("6 x 7?"))
    assert response.message.reasoning == "Six times seven."
    assert response.message.text == "42."


async def test_reasoning_is_not_sent_back(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    wire_server.script(Reply("42.", reasoning="Six times seven."), Reply("You are welcome."))
    first = await provider.complete(ask("6 x 7?"))
    history: list[Message] = [
        UserMessage(content="6 x 7?"),
        first.message,
        UserMessage(content="Thanks"),
    ]
    response = await provider.complete(ModelRequest(messages=history))
    assert response.message.text == "You are welcome."
    sent = wire_server.requests[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": "42."}


async def test_user_and_tool_content_parts_are_sent_as_content_parts(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    history: list[Message] = [
        UserMessage(
            content=[
                TextPart(text="What is this?"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                ImagePart(url="https://example.com/cat.jpg"),
            ]
        ),
        AssistantMessage(tool_calls=[ToolCall(id="call_a", name="fetch")]),
        ToolResultMessage(
            tool_call_id="call_a",
            name="fetch",
            content=[
                TextPart(text="Fetched."),
                ResourcePart(uri="file:///notes.md", mime_type="text/markdown", text="# Notes"),
                DataPart(data={"size": 3}),
                ImagePart(url="https://example.com/chart.png"),
            ],
        ),
    ]
    await drain(provider.stream(ModelRequest(messages=history)))

    sent = wire_server.requests[0].body["messages"]
    assert sent[0] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ],
    }
    assert sent[2] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": [
            {"type": "text", "text": "Fetched."},
            {"type": "text", "text": "[resource file:///notes.md (text/markdown)]\n# Notes"},
            {"type": "text", "text": '{"size": 3}'},
            {"type": "text", "text": "[an image: sent in the next user message]"},
        ],
    }
    # tool messages take only text: the image follows the results, saying where it came from
    assert sent[3] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "The tool fetch (call call_a) returned:"},
            {"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}},
        ],
    }


@pytest.mark.parametrize("streamed", [True, False])
async def test_request_options_are_sent(
    provider: OpenAICompatProvider, wire_server: WireServer, streamed: bool
) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="hi")],
        tools=[WEATHER],
        tool_choice="get_weather",
        stop=["END"],
        top_p=0.9,
        seed=7,
        response_format={"type": "json_object"},
        parallel_tool_calls=False,
    )
    if streamed:
        await drain(provider.stream(request))
    else:
        await provider.complete(request)
    body = wire_server.requests[0].body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (body["stop"], body["top_p"], body["seed"]) == (["END"], 0.9, 7)
    assert body["response_format"] == {"type": "json_object"}
    assert body["parallel_tool_calls"] is False
    assert body.get("stream", False) is streamed


async def test_tool_options_are_left_out_without_tools(
    provider: OpenAICompatProvider, wire_server: WireServer
) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="hi")], tool_choice="required", parallel_tool_calls=True
    )
    await provider.complete(request)
    body = wire_server.requests[0].body
    assert "tool_choice" not in body and "parallel_tool_calls" not in body
    assert not {"stop", "top_p", "seed", "response_format"} & body.keys()
