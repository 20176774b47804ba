"""Anthropic's Messages API, on the official ``anthropic`` SDK.

The request side (messages, tools, options) is converted in :mod:`._anthropic_convert`; this
module sends requests and turns the answers, streamed or whole, into our events and messages.
Thinking blocks (``thinking``, with the ``signature`` that authenticates them, and
``redacted_thinking``) become reasoning events and parts, so that they can be sent back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

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

from agent_template.models import (
    AssistantMessage,
    ModelEvent,
    ModelRequest,
    ModelResponse,
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
from agent_template.services.model_provider import ModelProvider
from agent_template.services.providers._anthropic_convert import (
    PROVIDER,
    to_anthropic_messages,
    to_anthropic_tool_choice,
    to_anthropic_tools,
)
from agent_template.services.providers._assembly import PendingCall, answer_content
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

    The SDK client is created on first use, and again after :meth:`aclose` or when it is used
    from another event loop than the one it was made on. The SDK's own retries are off because
    :class:`~agent_template.services.model_provider.ModelManager` retries and fails over.

    Request options: ``tool_choice`` maps to ``auto``/``any``/``tool``/``none`` and
    ``parallel_tool_calls=False`` to ``disable_parallel_tool_use`` (both only with tools),
    ``stop`` to ``stop_sequences``; ``temperature`` and ``top_p`` are sent as they are.
    ``seed`` and ``response_format`` have no equivalent in the Messages API and are ignored.

    Args:
        api_key: the ``x-api-key`` to send.
        base_url: the API root; None for Anthropic's.
        model: the model used when a request names none.
        timeout: seconds to wait for a connection and for each read.
        max_tokens: the answer limit when a request sets none (the API requires one).
        label: the name in health figures when several keys share a provider.
    """

    name = PROVIDER

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
        self._loop: asyncio.AbstractEventLoop | None = None

    def _sdk(self) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            self._client = None  # its connections belong to a loop that has ended
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
            )
            self._loop = loop
        return self._client

    def _error(self, exc: Exception) -> ProviderError:
        return anthropic_error(
            exc,
            provider=self.name,
            base_url=str(self._sdk().base_url),
            base_url_var=_BASE_URL_VAR,
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        """The arguments of ``messages.create`` shared by :meth:`stream` and :meth:`complete`."""
        system, messages = to_anthropic_messages(request.messages)
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": self.max_tokens if request.max_tokens is None else request.max_tokens,
            "messages": messages,
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = to_anthropic_tools(request.tools)
            choice = to_anthropic_tool_choice(request.tool_choice, request.parallel_tool_calls)
            if choice is not None:
                params["tool_choice"] = choice
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        # This SDK's create() has no temperature or top_p parameters; the API still takes them.
        sampling = {"temperature": request.temperature, "top_p": request.top_p}
        extra = {key: value for key, value in sampling.items() if value is not None}
        if extra:
            params["extra_body"] = extra
        return params

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one answer; see :class:`ModelProvider` for the event contract.

        Raises:
            ProviderError: a subclass for each failure (authentication, rate limit, overload,
                timeout, connection, bad request, broken or malformed stream).
        """
        try:
            events = await self._sdk().messages.create(**self._params(request), stream=True)
        except anthropic.APIError as exc:
            raise self._error(exc) from exc

        model = request.model or self.model
        text: list[str] = []
        calls: dict[int, PendingCall] = {}  # by content-block index
        thinking: dict[int, tuple[list[str], ReasoningPart]] = {}  # by content-block index
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
                            elif delta.type == "thinking_delta" and delta.thinking:
                                self._block(thinking, event.index)[0].append(delta.thinking)
                                yield ReasoningDelta(text=delta.thinking)
                            elif delta.type == "signature_delta":
                                self._block(thinking, event.index)[1].signature = delta.signature
                        case "content_block_start":
                            block = event.content_block
                            if block.type == "tool_use":
                                call = PendingCall(len(calls), block.id, block.name, block.input)
                                calls[event.index] = call
                                yield ToolCallStarted(
                                    index=call.index, id=block.id, name=block.name
                                )
                            elif block.type == "thinking":
                                pieces, part = self._block(thinking, event.index)
                                part.signature = block.signature or None
                                if block.thinking:
                                    pieces.append(block.thinking)
                                    yield ReasoningDelta(text=block.thinking)
                            elif block.type == "redacted_thinking":
                                part = self._block(thinking, event.index)[1]
                                part.redacted_data = block.data
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
        reasoning = []
        for index in sorted(thinking):  # thinking goes back in the order it came
            pieces, part = thinking[index]
            part.text = "".join(pieces)
            reasoning.append(part)
        message = AssistantMessage(
            content=answer_content(reasoning, "".join(text)),
            tool_calls=tool_calls,
            provider=self.name,
            model=model,
        )
        yield ResponseFinished(finish_reason=_finish_reason(stop_reason), message=message)

    @staticmethod
    def _block(
        thinking: dict[int, tuple[list[str], ReasoningPart]], index: int
    ) -> tuple[list[str], ReasoningPart]:
        """The thinking block at ``index``: its text pieces so far and its part."""
        entry = thinking.get(index)
        if entry is None:
            entry = thinking[index] = ([], ReasoningPart(provider=PROVIDER))
        return entry

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One answer from a non-streaming request.

        Raises:
            ProviderError: as :meth:`stream` does.
        """
        try:
            answer = await self._sdk().messages.create(**self._params(request))
        except anthropic.APIError as exc:
            raise self._error(exc) from exc
        text: list[str] = []
        reasoning: list[ReasoningPart] = []
        calls: list[ToolCall] = []
        for block in answer.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                calls.append(
                    ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input))
                )
            elif block.type == "thinking":
                reasoning.append(
                    ReasoningPart(text=block.thinking, signature=block.signature, provider=PROVIDER)
                )
            elif block.type == "redacted_thinking":
                reasoning.append(ReasoningPart(redacted_data=block.data, provider=PROVIDER))
        usage = Usage(
            input_tokens=_input_tokens(answer.usage),
            output_tokens=answer.usage.output_tokens,
            requests=1,
        )
        message = AssistantMessage(
            content=answer_content(reasoning, "".join(text)),
            tool_calls=calls,
            provider=self.name,
            model=answer.model or request.model or self.model,
        )
        return ModelResponse(message, usage, _finish_reason(answer.stop_reason or "end_turn"))

    async def aclose(self) -> None:
        """Close the SDK client; the next request makes a new one."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()


def _input_tokens(usage: Any) -> int:
    """All input tokens: the uncached ones plus those written to and read from the cache."""
    return int(
        (usage.input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


def _finish_reason(stop_reason: str) -> str:
    return _FINISH_REASONS.get(stop_reason, stop_reason)
