"""Anthropic's Messages API, on the official ``anthropic`` SDK.

The native API differs from chat completions in ways the conversion below takes care of: system
text goes in ``system``, tool calls are ``tool_use`` blocks in the assistant's content, and tool
results are ``tool_result`` blocks in the next user message (all results of one turn together).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, assert_never

from agent_template.errors import (
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    StreamError,
)

try:
    import anthropic
    import httpx2
except ImportError as exc:  # pragma: no cover - anthropic is a core dependency
    raise ConfigurationError(
        "The anthropic provider needs the 'anthropic' package: pip install anthropic"
    ) from exc
from anthropic.types import ContentBlockParam, MessageParam, ToolParam, ToolResultBlockParam

from agent_template.models import (
    AssistantMessage,
    Message,
    ModelEvent,
    ModelRequest,
    ModelResponse,
    ResponseFinished,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStarted,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UsageEvent,
    UserMessage,
)
from agent_template.services.model_provider import ModelProvider
from agent_template.services.providers._errors import anthropic_error

__all__ = ["AnthropicProvider", "to_anthropic_messages", "to_anthropic_tools"]

_DEFAULT_TIMEOUT_S = 60.0
_DEFAULT_MAX_TOKENS = 4096  # the Messages API requires a limit; this one suits chat turns
_BASE_URL_VAR = "ANTHROPIC_BASE_URL"
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


class AnthropicProvider(ModelProvider):
    """A provider for Anthropic's Messages API.

    The SDK client is created on first use; the SDK's own retries are off because
    :class:`~agent_template.services.model_provider.ModelManager` retries and fails over.

    Args:
        api_key: the ``x-api-key`` to send.
        base_url: the API root; None for Anthropic's.
        model: the model used when a request names none.
        timeout: seconds to wait for a connection and for each read.
        max_tokens: the answer limit when a request sets none (the API requires one).
        label: the name in health figures when several keys share a provider.
    """

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str,
        timeout: float = _DEFAULT_TIMEOUT_S,
        max_tokens: int = _DEFAULT_MAX_TOKENS,
        label: str | None = None,
    ) -> None:
        super().__init__(model=model, label=label)
        self.base_url = base_url
        self.timeout = timeout
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._client: anthropic.AsyncAnthropic | None = None

    def _sdk(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
            )
        return self._client

    def _error(self, exc: Exception) -> ProviderError:
        return anthropic_error(
            exc,
            provider=self.name,
            base_url=str(self._sdk().base_url),
            base_url_var=_BASE_URL_VAR,
        )

    def _max_tokens(self, request: ModelRequest) -> int:
        return self.max_tokens if request.max_tokens is None else request.max_tokens

    def _extra_body(self, request: ModelRequest) -> dict[str, Any] | None:
        # The SDK's create() has no temperature parameter any more; the API still takes it.
        return None if request.temperature is None else {"temperature": request.temperature}

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one answer; see :class:`ModelProvider` for the event contract.

        Raises:
            ProviderError: a subclass for each failure (authentication, rate limit, overload,
                timeout, connection, bad request, broken or malformed stream).
        """
        system, messages = to_anthropic_messages(request.messages)
        try:
            events = await self._sdk().messages.create(
                model=request.model or self.model,
                max_tokens=self._max_tokens(request),
                messages=messages,
                system=system or anthropic.omit,
                tools=to_anthropic_tools(request.tools) or anthropic.omit,
                extra_body=self._extra_body(request),
                stream=True,
            )
        except anthropic.APIError as exc:
            raise self._error(exc) from exc

        model = request.model or self.model
        text: list[str] = []
        calls: dict[int, _Call] = {}  # by content-block index
        stop_reason: str | None = None
        input_tokens = output_tokens = 0
        finished = False
        async with events:
            try:
                async for event in events:
                    match event.type:
                        case "content_block_delta":
                            delta = event.delta
                            if delta.type == "text_delta":
                                if delta.text:
                                    text.append(delta.text)
                                    yield TextDelta(text=delta.text)
                            elif delta.type == "input_json_delta" and delta.partial_json:
                                call = calls.get(event.index)
                                if call is None:
                                    raise StreamError(self.name, "input for an unknown block")
                                call.parts.append(delta.partial_json)
                                yield ToolCallDelta(
                                    index=call.index, arguments_delta=delta.partial_json
                                )
                        case "content_block_start":
                            block = event.content_block
                            if block.type == "tool_use":
                                call = _Call(len(calls), block.id, block.name, block.input)
                                calls[event.index] = call
                                yield ToolCallStarted(
                                    index=call.index, id=block.id, name=block.name
                                )
                        case "message_start":
                            model = event.message.model or model
                            input_tokens = _input_tokens(event.message.usage)
                        case "message_delta":
                            stop_reason = event.delta.stop_reason or stop_reason
                            output_tokens = event.usage.output_tokens
                            if event.usage.input_tokens is not None:
                                input_tokens = _input_tokens(event.usage)
                        case "message_stop":
                            finished = True
            except (anthropic.APITimeoutError, httpx2.TimeoutException) as exc:
                raise ProviderTimeoutError(
                    self.name, "the stream stalled before it finished"
                ) from exc
            except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
                raise StreamError(
                    self.name, "the connection broke before the answer was complete"
                ) from exc
            except anthropic.APIError as exc:  # an error event inside the stream
                raise self._error(exc) from exc
            except ValueError as exc:  # JSON or schema errors in an event
                raise StreamError(
                    self.name, f"the stream sent data that is not valid: {exc}"
                ) from exc
        if not finished or stop_reason is None:
            raise StreamError(self.name, "the stream ended before the model finished its answer")

        tool_calls = [call.done() for call in calls.values()]
        for index, tool_call in enumerate(tool_calls):
            yield ToolCallReady(index=index, call=tool_call)
        yield UsageEvent(
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens, requests=1)
        )
        message = AssistantMessage(
            content="".join(text), tool_calls=tool_calls, provider=self.name, model=model
        )
        yield ResponseFinished(finish_reason=_finish_reason(stop_reason), message=message)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One answer from a non-streaming request.

        Raises:
            ProviderError: as :meth:`stream` does.
        """
        system, messages = to_anthropic_messages(request.messages)
        try:
            answer = await self._sdk().messages.create(
                model=request.model or self.model,
                max_tokens=self._max_tokens(request),
                messages=messages,
                system=system or anthropic.omit,
                tools=to_anthropic_tools(request.tools) or anthropic.omit,
                extra_body=self._extra_body(request),
            )
        except anthropic.APIError as exc:
            raise self._error(exc) from exc
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in answer.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                calls.append(
                    ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input))
                )
        usage = Usage(
            input_tokens=_input_tokens(answer.usage),
            output_tokens=answer.usage.output_tokens,
            requests=1,
        )
        message = AssistantMessage(
            content="".join(text),
            tool_calls=calls,
            provider=self.name,
            model=answer.model or request.model or self.model,
        )
        return ModelResponse(message, usage, _finish_reason(answer.stop_reason or "end_turn"))

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


class _Call:
    """A tool call being assembled from ``input_json_delta`` pieces."""

    __slots__ = ("id", "index", "initial", "name", "parts")

    def __init__(self, index: int, call_id: str, name: str, initial: object) -> None:
        self.index = index
        self.id = call_id
        self.name = name
        self.initial = initial  # the block's input at its start; normally empty
        self.parts: list[str] = []

    def done(self) -> ToolCall:
        if self.parts:
            arguments = "".join(self.parts)
        else:
            arguments = json.dumps(self.initial) if self.initial else "{}"
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


def _input_tokens(usage: Any) -> int:
    """All input tokens: the uncached ones plus those written to and read from the cache."""
    return int(
        (usage.input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


def _finish_reason(stop_reason: str) -> str:
    return _FINISH_REASONS.get(stop_reason, stop_reason)


# --------------------------------------------------------------------------- conversion


def _tool_input(arguments: str) -> dict[str, object]:
    """A tool call's JSON arguments as the object the API wants back."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    # The model once wrote arguments that are not an object; keep them so it sees its mistake.
    return value if isinstance(value, dict) else {"raw_arguments": arguments}


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[MessageParam]]:
    """Our messages as Anthropic's ``system`` text and ``messages`` list.

    Consecutive messages of one role become one message, so the tool results of a turn travel
    together in the user message that follows the assistant's ``tool_use`` blocks.
    """
    system: list[str] = []
    turns: list[tuple[Literal["user", "assistant"], list[ContentBlockParam]]] = []

    def add(role: Literal["user", "assistant"], block: ContentBlockParam) -> None:
        if turns and turns[-1][0] == role:
            turns[-1][1].append(block)
        else:
            turns.append((role, [block]))

    for message in messages:
        match message:
            case SystemMessage():
                system.append(message.content)
            case UserMessage():
                add("user", {"type": "text", "text": message.content})
            case AssistantMessage():
                if message.content:
                    add("assistant", {"type": "text", "text": message.content})
                for call in message.tool_calls:
                    add(
                        "assistant",
                        {
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.name,
                            "input": _tool_input(call.arguments),
                        },
                    )
            case ToolResultMessage():
                result: ToolResultBlockParam = {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                }
                if message.is_error:
                    result["is_error"] = True
                add("user", result)
            case _:
                assert_never(message)
    out: list[MessageParam] = []
    for role, blocks in turns:
        if role == "user":
            out.append({"role": "user", "content": blocks})
        else:
            out.append({"role": "assistant", "content": blocks})
    return "\n\n".join(system), out


def to_anthropic_tools(tools: Sequence[ToolDefinition]) -> list[ToolParam]:
    """Tool definitions in the Messages API format."""
    return [
        {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
        for tool in tools
    ]
