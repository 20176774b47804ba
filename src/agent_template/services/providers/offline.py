"""The offline provider ``test``: deterministic answers with no network.

It powers the set-up without any API key and makes run-loop tests exact. Without a script it
answers from the conversation: it reports tool results, calls a tool when the user writes
``call NAME {json arguments}``, and otherwise replies to the last user message, saying that it is
the offline model. With a script it plays the given turns in order.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent_template.errors import ProviderError
from agent_template.models import (
    AssistantMessage,
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStarted,
    ToolResultMessage,
    Usage,
    UsageEvent,
    UserMessage,
)
from agent_template.services.model_provider import ModelProvider
from agent_template.utils.tokens import estimate_tokens

__all__ = ["OFFLINE_NOTICE", "TestProvider", "TestTurn"]

OFFLINE_NOTICE = (
    "No model provider is configured, so the offline test model answers. "
    "Set OPENAI_API_KEY or ANTHROPIC_API_KEY (or DEFAULT_MODEL_PROVIDER) in .env "
    "to use a real model."
)
_CALL_RE = re.compile(r"^\s*call\s+([A-Za-z_][\w.-]*)\s*(\{.*\})?\s*$", re.DOTALL)
_WORD_RE = re.compile(r"\S+\s*|\s+")
_TRANSCRIPT_MARK = "Transcript of the earlier conversation"


@dataclass(slots=True)
class TestTurn:
    """One scripted model turn: text, tool calls (name and arguments), or an error to raise."""

    __test__ = False  # not a pytest test class

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    error: ProviderError | None = None


Script = Sequence[TestTurn | str] | Callable[[ModelRequest], TestTurn | str]


class TestProvider(ModelProvider):
    """Deterministic offline model.

    Args:
        script: turns to play in order (a string is a text turn), or a function from the
            request to the turn. Without one, the provider answers from the conversation.
        delay: seconds to wait before each streamed chunk, to imitate a slow model.
    """

    __test__ = False
    name = "test"

    def __init__(
        self,
        script: Script | None = None,
        *,
        model: str = "offline",
        delay: float = 0.0,
        label: str | None = None,
    ) -> None:
        super().__init__(model=model, label=label)
        self._script = script
        self._turn = 0
        self.delay = delay
        self.requests: list[ModelRequest] = []

    def _next_turn(self, request: ModelRequest) -> TestTurn:
        script = self._script
        if script is None:
            return _answer(request)
        if callable(script):
            turn = script(request)
        else:
            if self._turn >= len(script):
                raise ProviderError(self.name, "the test script has no more turns")
            turn = script[self._turn]
        self._turn += 1
        return TestTurn(text=turn) if isinstance(turn, str) else turn

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(replace(request, messages=list(request.messages)))  # snapshot
        turn = self._next_turn(request)
        if turn.error is not None:
            raise turn.error
        delay = self.delay
        if request.max_tokens and estimate_tokens(turn.text) > request.max_tokens:
            turn = TestTurn(turn.text[: request.max_tokens * 4], turn.tool_calls)  # like a model
        if turn.text:
            for word in _WORD_RE.findall(turn.text):
                if delay:
                    await asyncio.sleep(delay)
                yield TextDelta(text=word)
        calls: list[ToolCall] = []
        prefix = f"call_{sum(1 for m in request.messages if m.role == 'assistant')}"
        for index, (name, args) in enumerate(turn.tool_calls):
            call = ToolCall(
                id=f"{prefix}_{index}",
                name=name,
                arguments=args if isinstance(args, str) else json.dumps(args),
            )
            calls.append(call)
            yield ToolCallStarted(index=index, id=call.id, name=name)
            yield ToolCallDelta(index=index, arguments_delta=call.arguments)
            yield ToolCallReady(index=index, call=call)
        usage = Usage(
            input_tokens=sum(estimate_tokens(m.text) for m in request.messages),
            output_tokens=estimate_tokens(turn.text) + sum(len(c.arguments) // 4 for c in calls),
            requests=1,
        )
        yield UsageEvent(usage=usage)
        message = AssistantMessage(
            content=turn.text, tool_calls=calls, provider=self.name, model=self.model
        )
        yield ResponseFinished(finish_reason="tool_calls" if calls else "stop", message=message)


def _summarise(transcript: str) -> str:
    """A deterministic summary: the earlier summary, then the start of each user line."""
    lines = transcript.splitlines()
    earlier = [line[17:].strip() for line in lines if line.startswith("Earlier summary: ")]
    said = [line[6:].strip() for line in lines if line.startswith("User: ")]
    gist = "; ".join(" ".join(text.split()[:6]) for text in said)
    before = f"{earlier[0]} " if earlier else ""
    return f"{before}Then the user wrote {len(said)} messages: {gist}."


def _answer(request: ModelRequest) -> TestTurn:
    """What the offline model says when it has no script."""
    messages = request.messages
    results: list[ToolResultMessage] = []
    for message in reversed(messages):
        if not isinstance(message, ToolResultMessage):
            break
        results.append(message)
    if results:
        results.reverse()
        lines = [
            f"The tool {r.name} {'failed' if r.is_error else 'returned'}: {r.text}" for r in results
        ]
        return TestTurn(text="\n".join(lines))
    last = next((m for m in reversed(messages) if isinstance(m, UserMessage)), None)
    said = last.text.strip() if last else ""
    if said.startswith(_TRANSCRIPT_MARK):  # a context-compression request
        return TestTurn(text=_summarise(said))
    match = _CALL_RE.match(said)
    offered = {t.name for t in request.tools}
    if match and match.group(1) in offered:
        args = match.group(2) or "{}"
        return TestTurn(tool_calls=[(match.group(1), args)])
    earlier = sum(1 for m in messages if isinstance(m, UserMessage)) - 1
    history = f" This conversation has {earlier} earlier message(s) from you." if earlier else ""
    tools = f" Tools I can call: {', '.join(sorted(offered))}." if offered else ""
    return TestTurn(
        text=f"[offline test model] You said: {said!r}.{history}{tools} "
        "I am a deterministic stand-in for a real model; configure a provider for real answers."
    )
