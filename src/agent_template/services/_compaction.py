"""The parts of context compression: token counting, conversation structure, built-in strategies.

The public face is :mod:`agent_template.services.compressor`; this module holds what it is made of.
A conversation is read as *units* that are never split: an assistant message with tool calls
together with the tool results that answer them, or any other single message.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, assert_never, runtime_checkable

from agent_template.models import (
    AssistantMessage,
    Message,
    ModelRequest,
    ResponseFinished,
    SystemMessage,
    TextDelta,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from agent_template.utils.tokens import estimate_tokens

MESSAGE_OVERHEAD = 4  # role and delimiters that chat formats wrap around every message
TOOL_CALL_OVERHEAD = 3  # a call's id and wrapper (or, on a result, the id it answers)
TOOL_DEFINITION_OVERHEAD = 8  # the wrapper a provider puts around each tool's schema
RATIO_MIN, RATIO_MAX = (
    0.5,
    3.0,
)  # beyond these a reported usage is more likely wrong than the estimate
_RATIO_WEIGHT = 0.3  # weight of the newest observation; one odd answer must not swing estimates
TAIL_SHARE = 0.75  # recent turns may fill this much of the budget; the rest is for the summary
_CACHE_SIZE = 8192  # messages whose estimate is remembered; a long session reuses them every turn

SUMMARY_PREFIX = (
    "Summary of the earlier conversation (older messages were condensed to save context):\n"
)
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


# --------------------------------------------------------------------------- token counting


class TokenCounter:
    """Estimates tokens of messages and tool definitions, calibrated by reported usage.

    Estimates of messages are cached by identity: pydantic models that are not frozen cannot be
    hashed, so a ``WeakKeyDictionary`` is out; the cache holds each message, which keeps its
    ``id`` from being reused while the entry lives, and drops its oldest half when full.
    """

    def __init__(self) -> None:
        self.ratio = 1.0
        self.observations = 0
        self._messages: dict[int, tuple[Message, int, int]] = {}
        self._tools: dict[int, tuple[ToolDefinition, int]] = {}

    def message(self, message: Message) -> int:
        """Raw (uncalibrated) estimate of one message."""
        entry = self._messages.get(id(message))
        size = len(message.content)
        if entry is not None and entry[0] is message and entry[1] == size:
            return entry[2]
        tokens = _message_tokens(message)
        if len(self._messages) >= _CACHE_SIZE:
            _evict_half(self._messages)
        self._messages[id(message)] = (message, size, tokens)
        return tokens

    def messages(self, messages: Sequence[Message]) -> int:
        """Raw estimate of several messages."""
        one = self.message
        return sum(one(m) for m in messages)

    def tools(self, tools: Sequence[ToolDefinition]) -> int:
        """Raw estimate of tool definitions, as their JSON schemas."""
        total = 0
        for tool in tools:
            entry = self._tools.get(id(tool))
            if entry is None or entry[0] is not tool:
                schema = {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                }
                tokens = TOOL_DEFINITION_OVERHEAD + estimate_tokens(
                    json.dumps(schema, separators=(",", ":"))
                )
                if len(self._tools) >= _CACHE_SIZE:
                    _evict_half(self._tools)
                entry = self._tools[id(tool)] = (tool, tokens)
            total += entry[1]
        return total

    def calibrated(self, raw: int) -> int:
        """A raw estimate scaled by what the provider reported so far."""
        return math.ceil(raw * self.ratio)

    def observe(self, raw: int, actual: float) -> None:
        """Learn from a provider's count ``actual`` for a request estimated at ``raw``."""
        if raw <= 0 or actual <= 0:
            return
        seen = min(max(actual / raw, RATIO_MIN), RATIO_MAX)
        if self.observations:
            seen = self.ratio + _RATIO_WEIGHT * (seen - self.ratio)
        self.ratio = seen
        self.observations += 1


def _message_tokens(message: Message) -> int:
    tokens = MESSAGE_OVERHEAD + estimate_tokens(message.content)
    if isinstance(message, AssistantMessage):
        for call in message.tool_calls:
            tokens += TOOL_CALL_OVERHEAD + estimate_tokens(call.name)
            tokens += estimate_tokens(call.arguments)
    elif isinstance(message, ToolResultMessage):
        tokens += TOOL_CALL_OVERHEAD
    return tokens


def _evict_half(cache: dict[int, Any]) -> None:
    for key in list(itertools.islice(cache, len(cache) // 2)):
        del cache[key]


# --------------------------------------------------------------------------- structure


def leading_system(messages: Sequence[Message]) -> int:
    """How many messages at the start are system messages (the instructions)."""
    count = 0
    for message in messages:
        if not isinstance(message, SystemMessage):
            break
        count += 1
    return count


def unit_starts(messages: Sequence[Message], start: int = 0) -> list[int]:
    """Indices from ``start`` where a unit begins; tool results belong to the unit before them."""
    return [
        i
        for i in range(start, len(messages))
        if i == start or not isinstance(messages[i], ToolResultMessage)
    ]


def paired(messages: Sequence[Message]) -> list[Message]:
    """``messages`` without unanswered tool calls and without results that have no call.

    An assistant message whose calls are not all answered right after it loses its calls (or
    disappears when it said nothing else); results not preceded by their call are dropped.
    """
    out: list[Message] = []
    i, n = 0, len(messages)
    while i < n:
        message = messages[i]
        j = i + 1
        while j < n and isinstance(messages[j], ToolResultMessage):
            j += 1
        if isinstance(message, AssistantMessage) and message.tool_calls:
            results = messages[i + 1 : j]
            answered = Counter(r.tool_call_id for r in results if isinstance(r, ToolResultMessage))
            if answered == Counter(call.id for call in message.tool_calls):
                out.extend(messages[i:j])
            elif message.content:
                out.append(message.model_copy(update={"tool_calls": []}))
        elif not isinstance(message, ToolResultMessage):
            out.append(message)
        i = j
    return out


def working_set(
    body: Sequence[Message], summary: tuple[Message, int] | None
) -> tuple[list[Message], list[int]]:
    """``body`` with a summary in place of the messages it covers, and each message's index.

    ``summary`` is the summary message and how many leading messages of ``body`` it covers; its
    index is -1. The last user message is kept even when the summary covers it.
    """
    if summary is None:
        return list(body), list(range(len(body)))
    message, covered = summary
    work, origin = [message], [-1]
    last_user = next(
        (i for i in range(len(body) - 1, -1, -1) if isinstance(body[i], UserMessage)), -1
    )
    if 0 <= last_user < covered:
        work.append(body[last_user])
        origin.append(last_user)
    work.extend(body[covered:])
    origin.extend(range(covered, len(body)))
    return work, origin


def split(
    counter: TokenCounter, work: list[Message], prefix: int, room: int, keep_recent: int
) -> tuple[int, int | None]:
    """Where the verbatim tail of ``work`` starts, and the last user message if kept apart.

    The tail is the latest ``keep_recent`` turns, or fewer when they take more than
    ``TAIL_SHARE`` of ``room``; at the least it is the latest unit, with the last user message
    (when it comes before that unit) kept apart. ``work[:prefix]`` is a summary, not a turn.
    """
    n = len(work)
    users = [i for i in range(prefix, n) if isinstance(work[i], UserMessage)]
    cap = room * TAIL_SHARE
    for k in range(keep_recent, 0, -1):
        start = users[-k] if k <= len(users) else prefix
        if counter.calibrated(counter.messages(work[start:])) <= cap:
            return start, None
    start = unit_starts(work, prefix)[-1] if n > prefix else n
    return start, users[-1] if users and users[-1] < start else None


def fingerprint(message: Message) -> str:
    """A short stable hash of a message, to recognise it in a later request or process."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{message.role}\0{message.content}\0".encode())
    if isinstance(message, AssistantMessage):
        digest.update(",".join(call.id for call in message.tool_calls).encode())
    elif isinstance(message, ToolResultMessage):
        digest.update(message.tool_call_id.encode())
    return digest.hexdigest()


def summary_message(summary: str) -> UserMessage:
    """The message that stands for the summarised part of a conversation.

    A user message rather than a system one: the summary retells tool outputs and other text the
    instructions never vouched for, so it must not gain their authority.
    """
    return UserMessage(content=SUMMARY_PREFIX + summary)


def is_summary(message: Message) -> bool:
    return isinstance(message, UserMessage) and message.content.startswith(SUMMARY_PREFIX)


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
                size = ctx.counter.calibrated(estimate_tokens(message.content))
                note = f"[tool output removed to save context: {size} tokens]"
                if len(note) < len(message.content):
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
            text = (await _answer_text(ctx.model, request)).strip()
        if not text:
            raise ValueError("the model returned an empty summary")
        allowed_chars = int(room / ctx.counter.ratio) * 4
        if len(text) > allowed_chars:  # the model ignored max_tokens
            text = text[: max(allowed_chars - 1, 0)] + "…"
        ctx.summary = text
        ctx.summarized += sum(1 for m in source if not is_summary(m))
        return [summary_message(text)]


def _line(message: Message) -> list[str]:
    match message:
        case UserMessage() if is_summary(message):
            lines = [f"Earlier summary: {message.content[len(SUMMARY_PREFIX) :]}"]
        case UserMessage():
            lines = [f"User: {message.content}"]
        case SystemMessage():
            lines = [f"System: {message.content}"]
        case AssistantMessage():
            lines = [f"Assistant: {message.content}"] if message.content else []
            lines += [f"Assistant called {c.name}({c.arguments})" for c in message.tool_calls]
        case ToolResultMessage():
            verb = "failed" if message.is_error else "returned"
            lines = [f"Tool {message.name} {verb}: {message.content}"]
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


async def _answer_text(model: Any, request: ModelRequest) -> str:
    """The text of one answer from anything with ``stream(ModelRequest)``."""
    parts: list[str] = []
    final = ""
    events = model.stream(request)
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ResponseFinished):
                final = event.message.content
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    return "".join(parts) or final
