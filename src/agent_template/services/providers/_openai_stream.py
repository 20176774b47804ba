"""Turn a chat-completions chunk stream into our model events.

Kept apart from the request side (:mod:`.openai_compat`) because it changes for other reasons:
SSE quirks of OpenAI-compatible servers, tool-call assembly, reasoning, and tool calls written
as text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from agent_template.errors import ProviderTimeoutError, StreamError
from agent_template.models import (
    AssistantMessage,
    ModelEvent,
    ReasoningDelta,
    ReasoningPart,
    ResponseFinished,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
    UsageEvent,
)
from agent_template.services.providers._assembly import PendingCall, answer_content
from agent_template.services.providers._errors import openai_error
from agent_template.services.providers._text_tools import TextToolCallParser

__all__ = ["TEXT_CALL_ID_PREFIX", "chunk_events", "reasoning_of", "text_call_events"]

TEXT_CALL_ID_PREFIX = "call_text_"
# DeepSeek and Qwen send reasoning as ``reasoning_content``; vLLM, Ollama and OpenRouter
# as ``reasoning``. The SDK keeps both as extra fields of the delta or message.
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_of(extra: Mapping[str, Any] | None) -> str:
    """The reasoning text among a delta's or message's extra fields ('' when there is none)."""
    if not extra:
        return ""
    for name in _REASONING_FIELDS:
        value = extra.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def text_call_events(
    found: list[tuple[str, str]], first_index: int
) -> tuple[list[ModelEvent], list[ToolCall]]:
    """Start and delta events for tool calls recognised in text, and the calls themselves.

    Each answer's calls get ids of their own (``call_text_<random>_<n>``): the model wrote no
    id, and ids repeated across turns would make a history whose results answer the wrong call.
    """
    events: list[ModelEvent] = []
    calls: list[ToolCall] = []
    answer = uuid.uuid4().hex[:12]
    for offset, (name, arguments) in enumerate(found):
        index = first_index + offset
        call_id = f"{TEXT_CALL_ID_PREFIX}{answer}_{offset}"
        call = ToolCall(id=call_id, name=name, arguments=arguments)
        calls.append(call)
        events.append(ToolCallStarted(index=index, id=call.id, name=name))
        events.append(ToolCallDelta(index=index, arguments_delta=arguments))
    return events, calls


async def chunk_events(
    chunks: AsyncIterator[ChatCompletionChunk],
    *,
    provider: str,
    model: str,
    base_url: str,
    parser: TextToolCallParser | None,
) -> AsyncGenerator[ModelEvent, None]:
    """Events for one streamed chat completion, ending with :class:`ResponseFinished`.

    Reasoning deltas become :class:`ReasoningDelta` events and one :class:`ReasoningPart` at
    the start of the answer's content.

    Raises:
        StreamError: the stream broke off, sent data that is not JSON, or ended unfinished.
        ProviderTimeoutError: the stream stalled for longer than the timeout.
    """
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, PendingCall] = {}  # by the wire's index
    finish_reason: str | None = None
    usage: Usage | None = None
    try:
        async for chunk in chunks:
            if chunk.model:
                model = chunk.model
            if chunk.usage is not None:
                usage = Usage(
                    input_tokens=chunk.usage.prompt_tokens,
                    output_tokens=chunk.usage.completion_tokens,
                    requests=1,
                )
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            extra = delta.model_extra
            if extra and (thought := reasoning_of(extra)):
                reasoning.append(thought)
                yield ReasoningDelta(text=thought)
            if delta.content:
                piece = parser.feed(delta.content) if parser is not None else delta.content
                if piece:
                    text.append(piece)
                    yield TextDelta(text=piece)
            if delta.tool_calls:
                for part in delta.tool_calls:
                    call = calls.get(part.index)
                    function = part.function
                    if call is None:
                        name = (function.name if function else None) or ""
                        call_id = part.id or f"call_{len(calls)}"
                        call = calls[part.index] = PendingCall(len(calls), call_id, name)
                        yield ToolCallStarted(index=call.index, id=call_id, name=name)
                    elif function is not None and function.name and not call.name:
                        call.name = function.name  # some servers send the name after the id
                    if function is not None and function.arguments:
                        call.parts.append(function.arguments)
                        yield ToolCallDelta(index=call.index, arguments_delta=function.arguments)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    except openai.APITimeoutError as exc:
        raise ProviderTimeoutError(provider, "the stream stalled before it finished") from exc
    except openai.APIConnectionError as exc:
        raise StreamError(provider, "the connection broke before the answer was complete") from exc
    except openai.APIError as exc:  # an error object sent inside the stream
        raise openai_error(exc, provider=provider, base_url=base_url) from exc
    except ValueError as exc:  # JSON or schema errors in a chunk
        raise StreamError(provider, f"the stream sent data that is not valid: {exc}") from exc
    if finish_reason is None:
        raise StreamError(provider, "the stream ended before the model finished its answer")

    tool_calls = [call.done() for call in calls.values()]
    if parser is not None:
        rest, found = parser.finish()
        if rest:
            text.append(rest)
            yield TextDelta(text=rest)
        if found:
            events, text_calls = text_call_events(found, len(tool_calls))
            for event in events:
                yield event
            tool_calls.extend(text_calls)
    for index, tool_call in enumerate(tool_calls):
        yield ToolCallReady(index=index, call=tool_call)
    if usage is not None:
        yield UsageEvent(usage=usage)
    if tool_calls and finish_reason == "stop":
        finish_reason = "tool_calls"  # some local servers say "stop" even when they call tools
    thoughts = [ReasoningPart(text="".join(reasoning), provider=provider)] if reasoning else []
    message = AssistantMessage(
        content=answer_content(thoughts, "".join(text)),
        tool_calls=tool_calls,
        provider=provider,
        model=model,
    )
    yield ResponseFinished(finish_reason=finish_reason, message=message)
