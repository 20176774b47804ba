"""The OpenAI chat-completions API, and every server that speaks it.

OpenAI, DeepSeek, Qwen (DashScope), Ollama, vLLM and other local servers all take the same
requests, so one provider class serves them; the registry configures each by name, base URL and
key. Local models often write tool calls as text; with ``text_tool_calls`` such calls become real
ones (see :mod:`._text_tools`). Messages are converted in :mod:`._openai_convert`, the stream
parsed in :mod:`._openai_stream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from agent_template.errors import ConfigurationError, ProviderError, StreamError

try:
    import openai
except ImportError as exc:  # pragma: no cover - openai is a core dependency
    raise ConfigurationError(
        "The OpenAI-compatible providers need the 'openai' package: pip install openai"
    ) from exc

from agent_template.models import (
    AssistantMessage,
    ModelEvent,
    ModelRequest,
    ModelResponse,
    ReasoningPart,
    ToolCall,
    Usage,
)
from agent_template.services.model_provider import ModelProvider
from agent_template.services.providers._assembly import answer_content
from agent_template.services.providers._errors import openai_error
from agent_template.services.providers._openai_convert import (
    to_openai_messages,
    to_openai_tool_choice,
    to_openai_tools,
)
from agent_template.services.providers._openai_stream import (
    chunk_events,
    reasoning_of,
    text_call_events,
)
from agent_template.services.providers._text_tools import TextToolCallParser

__all__ = ["OpenAICompatProvider", "to_openai_messages", "to_openai_tools"]

_DEFAULT_TIMEOUT_S = 60.0


class OpenAICompatProvider(ModelProvider):
    """A provider for the OpenAI chat-completions API, on the official ``openai`` SDK.

    The SDK client is created on first use, and again after :meth:`aclose` or when it is used
    from another event loop than the one it was made on (an ``httpx`` client cannot cross
    loops). The SDK's own retries are off because
    :class:`~agent_template.services.model_provider.ModelManager` retries and fails over.

    Every :class:`ModelRequest` option is sent; ``tool_choice`` and ``parallel_tool_calls``
    only with tools, since the API refuses them without. Reasoning the model reported
    (DeepSeek's and Qwen's ``reasoning_content``, or ``reasoning``) arrives as reasoning events
    and parts; it is not sent back in later requests, as those servers require.

    Args:
        name: the configured provider name (``openai``, ``deepseek``, ``qwen``, ``ollama``,
            ``local``); it appears in messages, errors and health figures.
        api_key: the key sent as a bearer token (local servers accept any).
        base_url: the API root, such as ``http://localhost:11434/v1``; None for OpenAI's.
        model: the model used when a request names none.
        timeout: seconds to wait for a connection and for each read.
        text_tool_calls: recognise tool calls that the model writes as text.
        label: the name in health figures when several keys share a provider.
    """

    name = "openai"

    def __init__(
        self,
        *,
        name: str = "openai",
        api_key: str,
        base_url: str | None = None,
        model: str,
        timeout: float = _DEFAULT_TIMEOUT_S,
        text_tool_calls: bool = False,
        label: str | None = None,
    ) -> None:
        self.name = name
        super().__init__(model=model, label=label)
        self.base_url = base_url
        self.timeout = timeout
        self.text_tool_calls = text_tool_calls
        self._api_key = api_key
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _sdk(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            # Made on a loop that has ended (one asyncio.run per call): its connections
            # belong to that loop and cannot be used or closed from this one.
            self._client = None
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
            )
            self._loop = loop
        return self._client

    def _error(self, exc: Exception) -> ProviderError:
        from agent_template.services.providers import PROVIDERS

        spec = PROVIDERS.get(self.name)
        return openai_error(
            exc,
            provider=self.name,
            base_url=str(self._sdk().base_url),
            base_url_var=spec.base_url_var if spec else None,
        )

    def _limit(self, request: ModelRequest, parameter: str) -> int | openai.Omit:
        """The answer-length limit if ``parameter`` is the name this server understands.

        OpenAI's own API replaced ``max_tokens`` (which its reasoning models refuse) with
        ``max_completion_tokens``; compatible servers (vLLM, Ollama, DeepSeek...) know the
        former.
        """
        official = self.name == "openai" and self.base_url is None
        wanted = "max_completion_tokens" if official else "max_tokens"
        if request.max_tokens is None or parameter != wanted:
            return openai.omit
        return request.max_tokens

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        """The arguments of ``chat.completions.create`` shared by :meth:`stream` and
        :meth:`complete`; options the request leaves at None are not sent."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.messages),
            "max_tokens": self._limit(request, "max_tokens"),
            "max_completion_tokens": self._limit(request, "max_completion_tokens"),
        }
        if request.tools:
            params["tools"] = to_openai_tools(request.tools)
            if request.tool_choice is not None:
                params["tool_choice"] = to_openai_tool_choice(request.tool_choice)
            if request.parallel_tool_calls is not None:
                params["parallel_tool_calls"] = request.parallel_tool_calls
        options = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "seed": request.seed,
            "response_format": request.response_format,
        }
        params.update((key, value) for key, value in options.items() if value is not None)
        return params

    def _parser(self, request: ModelRequest) -> TextToolCallParser | None:
        if not (self.text_tool_calls and request.tools):
            return None
        return TextToolCallParser(tool.name for tool in request.tools)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one answer; see :class:`ModelProvider` for the event contract.

        Raises:
            ProviderError: a subclass for each failure (authentication, rate limit, timeout,
                connection, bad request, broken or malformed stream).
        """
        client = self._sdk()
        try:
            chunks = await client.chat.completions.create(
                **self._params(request), stream=True, stream_options={"include_usage": True}
            )
        except openai.APIError as exc:
            raise self._error(exc) from exc
        events = chunk_events(
            chunks,
            provider=self.name,
            model=request.model or self.model,
            base_url=str(client.base_url),
            parser=self._parser(request),
        )
        async with chunks, aclosing(events):
            async for event in events:
                yield event

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One answer from a non-streaming request.

        Raises:
            ProviderError: as :meth:`stream` does.
        """
        try:
            completion = await self._sdk().chat.completions.create(**self._params(request))
        except openai.APIError as exc:
            raise self._error(exc) from exc
        if not completion.choices:
            raise StreamError(self.name, "the answer had no choices")
        choice = completion.choices[0]
        text = choice.message.content or ""
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in choice.message.tool_calls or ()
            if c.type == "function"
        ]
        parser = self._parser(request)
        if parser is not None:
            text = parser.feed(text)
            rest, found = parser.finish()
            text += rest
            calls.extend(text_call_events(found, len(calls))[1])
        finish_reason: str = choice.finish_reason or "stop"
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        usage = Usage()
        if completion.usage is not None:
            usage = Usage(
                input_tokens=completion.usage.prompt_tokens,
                output_tokens=completion.usage.completion_tokens,
                requests=1,
            )
        thought = reasoning_of(choice.message.model_extra)
        reasoning = [ReasoningPart(text=thought, provider=self.name)] if thought else []
        message = AssistantMessage(
            content=answer_content(reasoning, text),
            tool_calls=calls,
            provider=self.name,
            model=completion.model or request.model or self.model,
        )
        return ModelResponse(message, usage, finish_reason)

    async def aclose(self) -> None:
        """Close the SDK client; the next request makes a new one."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()
