"""Turn a chat-completions chunk stream into our model events.

Kept apart from the request side (:mod:`.openai_compat`) because it changes for other reasons:
SSE quirks of OpenAI-compatible servers, tool-call assembly, and tool calls written as text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import openai
from openai.types.chat import ChatCompletionChunk

from agent_template.errors import ProviderTimeoutError, StreamError
from agent_template.models import (
    AssistantMessage,
    ModelEvent,
    ResponseFinished,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
    UsageEvent,
)
from agent_template.services.providers._errors import openai_error
from agent_template.services.providers._text_tools import TextToolCallParser

__all__ = ["TEXT_CALL_ID_PREFIX", "chunk_events", "text_call_events"]

TEXT_CALL_ID_PREFIX = "call_text_"


class _Call:
    """A tool call being assembled from deltas."""

    __slots__ = ("id", "index", "name", "parts")

    def __init__(self, index: int, call_id: str, name: str) -> None:
        self.index = index
        self.id = call_id
        self.name = name
        self.parts: list[str] = []

    def done(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.name, arguments="".join(self.parts) or "{}")


def text_call_events(
    found: list[tuple[str, str]], first_index: int
) -> tuple[list[ModelEvent], list[ToolCall]]:
    """Start and delta events for tool calls recognised in text, and the calls themselves."""
    events: list[ModelEvent] = []
    calls: list[ToolCall] = []
    for offset, (name, arguments) in enumerate(found):
        index = first_index + offset
        call = ToolCall(id=f"{TEXT_CALL_ID_PREFIX}{offset}", name=name, arguments=arguments)
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

    Raises:
        StreamError: the stream broke off, sent data that is not JSON, or ended unfinished.
        ProviderTimeoutError: the stream stalled for longer than the timeout.
    """
    text: list[str] = []
    calls: dict[int, _Call] = {}  # by the wire's index
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
                        call = calls[part.index] = _Call(len(calls), call_id, name)
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
    message = AssistantMessage(
        content="".join(text), tool_calls=tool_calls, provider=provider, model=model
    )
    yield ResponseFinished(finish_reason=finish_reason, message=message)
