"""Built-in context-compression strategies, and the protocol for writing your own.

A strategy gets the older part of a conversation (the recent turns are kept aside), a token
budget and a :class:`CompactionContext`, and returns a shorter list of messages; whatever it
returns is repaired so that no tool call loses its result.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, assert_never, runtime_checkable

from agent_template.models import (
    AssistantMessage,
    Content,
    DataPart,
    ImagePart,
    Message,
    ModelRequest,
    ReasoningPart,
    ResourcePart,
    SystemMessage,
    TextPart,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services._compaction import (
    MESSAGE_OVERHEAD,
    SUMMARY_PREFIX,
    TokenCounter,
    content_tokens,
    is_summary,
    summary_message,
    unit_starts,
)
from agent_template.services.model_provider import collect_response
from agent_template.utils.tokens import estimate_tokens

SUMMARY_MAX_TOKENS = 1024  # longer summaries defeat their purpose
SUMMARY_MIN_TOKENS = 32  # with less room than this a summary says nothing useful; truncate instead
SUMMARY_TIMEOUT_S = 120.0  # a summary is one model answer; a hung provider must not hang the run
_LINE_CHARS = 2000  # per transcript line, so one huge tool output cannot crowd out the rest
_MIN_LINE_CHARS = 120  # lines are shortened down to this before the oldest are left out
_SUMMARY_INSTRUCTIONS = (
    "You condense conversations between a user and an AI assistant that uses tools. Summarise "
    "the transcript you are given so the assistant can carry on without it. Keep the user's "
    "goals, instructions and preferences, decisions made, facts learned, the results of tool "
    "calls (names, key values, file names, errors) and any open tasks. Write short plain "
    "sentences or bullet points, at most about {words} words, and add nothing that is not in "
    "the transcript."
)


# --------------------------------------------------------------------------- strategies


@dataclass(slots=True)
class CompactionContext:
    """What a strategy may use, and where it reports what it did.

    Attributes:
        counter: Token estimates (raw, and :meth:`tokens` for calibrated ones).
        model: The model for summaries (``async stream(ModelRequest)``), or None.
        limit: The token budget of the whole request; a summary request must fit it too.
        original: The compressible messages as they were before any strategy ran.
        session_id: The session being compacted, if any.
        manual: Whether the compaction was asked for explicitly.
        summary: Set by a strategy that wrote a summary (the compressor remembers it).
        summarized: Messages folded into a summary.
        dropped: Messages removed outright.
        cleared: Tool outputs replaced by a placeholder.
    """

    counter: TokenCounter
    model: Any
    limit: int
    original: list[Message]
    session_id: str | None = None
    manual: bool = False
    summary: str | None = None
    summarized: int = 0
    dropped: int = 0
    cleared: int = 0

    def tokens(self, messages: Sequence[Message]) -> int:
        """Calibrated estimate of ``messages``."""
        return self.counter.calibrated(self.counter.messages(messages))


@runtime_checkable
class CompressionStrategy(Protocol):
    """One way of making old messages smaller; plug your own into the compressor.

    ``apply`` gets the compressible (old) messages, the calibrated token budget they must fit
    and the :class:`CompactionContext`; it returns the replacement list, without changing the
    messages it was given. Broken tool-call pairs in the result are removed by the compressor.
    """

    name: str

    async def apply(
        self, messages: Sequence[Message], budget: int, ctx: CompactionContext
    ) -> list[Message]: ...


class DropToolOutputs:
    """Replaces the content of old tool results with a note of their size; calls stay paired."""

    name = "drop_tool_outputs"

    async def apply(
        self, messages: Sequence[Message], budget: int, ctx: CompactionContext
    ) -> list[Message]:
        out: list[Message] = []
        for message in messages:
            if isinstance(message, ToolResultMessage):
                raw = content_tokens(message.content)
                note = (
                    f"[tool output removed to save context: {ctx.counter.calibrated(raw)} tokens]"
                )
                if estimate_tokens(note) < raw:
                    message = message.model_copy(update={"content": note})
                    ctx.cleared += 1
            out.append(message)
        return out


class Truncate:
    """Drops the oldest units until the messages fit the budget."""

    name = "truncate"

    async def apply(
        self, messages: Sequence[Message], budget: int, ctx: CompactionContext
    ) -> list[Message]:
        counter = ctx.counter
        raw = counter.messages(messages)
        starts = [*unit_starts(messages), len(messages)]
        cut = 0
        for start, end in itertools.pairwise(starts):
            if counter.calibrated(raw) <= budget:
                break
            raw -= counter.messages(messages[start:end])
            cut = end
        ctx.dropped += cut
        return list(messages[cut:])


class Summarize:
    """Asks the model to summarise the old messages into one marked user message.

    It summarises ``ctx.original``, so tool outputs that an earlier strategy removed still
    inform the summary. Without a model, or without room for a useful summary, it changes
    nothing; an error of the model propagates (the compressor then truncates).

    Args:
        max_tokens: The longest summary to ask for.
        timeout: Seconds to wait for the summary.
    """

    name = "summarize"

    def __init__(
        self, *, max_tokens: int = SUMMARY_MAX_TOKENS, timeout: float = SUMMARY_TIMEOUT_S
    ) -> None:
        self.max_tokens = max_tokens
        self.timeout = timeout

    async def apply(
        self, messages: Sequence[Message], budget: int, ctx: CompactionContext
    ) -> list[Message]:
        source = ctx.original
        room = budget - ctx.counter.calibrated(MESSAGE_OVERHEAD + estimate_tokens(SUMMARY_PREFIX))
        room = min(room, self.max_tokens, ctx.limit // 4)  # the rest is the summariser's input
        if ctx.model is None or not source or room < SUMMARY_MIN_TOKENS:
            return list(messages)
        instructions = _SUMMARY_INSTRUCTIONS.format(words=room * 3 // 4)
        # The summariser's own request must fit the same window as the conversation's.
        space = ctx.limit - room - ctx.counter.calibrated(estimate_tokens(instructions) + 50)
        transcript = _transcript(source, max(space, 0) / ctx.counter.ratio)
        request = ModelRequest(
            messages=[
                SystemMessage(content=instructions),
                UserMessage(content=f"Transcript of the earlier conversation:\n\n{transcript}"),
            ],
            max_tokens=room,
        )
        async with asyncio.timeout(self.timeout):
            text = (await collect_response(ctx.model.stream(request))).message.text.strip()
        if not text:
            raise ValueError("the model returned an empty summary")
        allowed_chars = int(room / ctx.counter.ratio) * 4
        if len(text) > allowed_chars:  # the model ignored max_tokens
            text = text[: max(allowed_chars - 1, 0)] + "…"
        ctx.summary = text
        ctx.summarized += sum(1 for m in source if not is_summary(m))
        return [summary_message(text)]


def _readable(content: Content) -> str:
    """Content as a transcript shows it: the text, with a note for each image or resource."""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        match part:
            case TextPart():
                pieces.append(part.text)
            case ImagePart():
                pieces.append("[image]")
            case ResourcePart():
                pieces.append(part.text if part.text is not None else f"[resource {part.uri}]")
            case DataPart():
                pieces.append(json.dumps(part.data, default=str))
            case ReasoningPart():
                pass  # the model's private reasoning adds nothing a summary needs
            case _:
                assert_never(part)
    return " ".join(piece for piece in pieces if piece)


def _line(message: Message) -> list[str]:
    match message:
        case UserMessage() if is_summary(message):
            lines = [f"Earlier summary: {message.text[len(SUMMARY_PREFIX) :]}"]
        case UserMessage():
            lines = [f"User: {_readable(message.content)}"]
        case SystemMessage():
            lines = [f"System: {message.content}"]
        case AssistantMessage():
            said = _readable(message.content)
            lines = [f"Assistant: {said}"] if said else []
            lines += [f"Assistant called {c.name}({c.arguments})" for c in message.tool_calls]
        case ToolResultMessage():
            verb = "failed" if message.is_error else "returned"
            lines = [f"Tool {message.name} {verb}: {_readable(message.content)}"]
        case _:
            assert_never(message)
    return [_clip(line, _LINE_CHARS) for line in lines]


def _transcript(messages: Sequence[Message], tokens: float) -> str:
    """A transcript within ``tokens`` (raw): lines are shortened first, then the oldest dropped.

    An earlier summary comes first and keeps at most half of the room.
    """
    lines = [line for m in messages for line in _line(m)]
    first: list[str] = []
    if lines and messages and is_summary(messages[0]):
        first = [_clip(lines.pop(0), int(tokens * 2))]  # 4 characters a token: half the room
        tokens -= estimate_tokens(first[0])
    cap = _LINE_CHARS
    while cap > _MIN_LINE_CHARS and sum(estimate_tokens(x) + 1 for x in lines) > tokens:
        cap //= 2
        lines = [_clip(line, cap) for line in lines]
    kept: list[str] = []
    for line in reversed(lines):
        cost = estimate_tokens(line) + 1
        if cost > tokens:
            break
        kept.append(line)
        tokens -= cost
    kept.reverse()
    if len(kept) < len(lines):
        first.append(f"[... {len(lines) - len(kept)} earlier lines omitted ...]")
    return "\n".join(first + kept)


def _clip(line: str, chars: int) -> str:
    return line if len(line) <= chars else line[: max(chars - 1, 0)] + "…"
