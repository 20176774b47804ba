"""The parts of context compression: token counting, conversation structure, results.

The public face is :mod:`agent_template.services.compressor`; this module holds what it is made of.
A conversation is read as *units* that are never split: an assistant message with tool calls
together with the tool results that answer them, or any other single message.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

from agent_template.models import (
    AssistantMessage,
    Content,
    DataPart,
    ImagePart,
    Message,
    ReasoningPart,
    ResourcePart,
    SystemMessage,
    TextPart,
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
# An image costs about 765 tokens at OpenAI's high detail and up to about 1,600 at Anthropic's
# for 1000x1000 pixels; one figure between them keeps the estimate honest without decoding it.
IMAGE_TOKENS = 1000
_BLOB_RESOURCE_TOKENS = 32  # a binary resource travels as a one-line placeholder

SUMMARY_PREFIX = (
    "Summary of the earlier conversation (older messages were condensed to save context):\n"
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
        size = content_size(message.content)
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


def content_size(content: Content) -> int:
    """A cheap measure of content that changes when it does: characters, or parts and text.

    The token cache compares it to tell an edited message from the one it estimated.
    """
    if isinstance(content, str):
        return len(content)
    size = len(content)
    for part in content:
        if isinstance(part, TextPart | ReasoningPart):
            size += len(part.text)
    return size


def content_tokens(content: Content) -> int:
    """Estimated tokens of content: text and reasoning by length, images at a fixed cost,
    data by its JSON and resources by their text."""
    if isinstance(content, str):
        return estimate_tokens(content)
    tokens = 0
    for part in content:
        match part:
            case TextPart():
                tokens += estimate_tokens(part.text)
            case ReasoningPart():
                tokens += estimate_tokens(part.text or part.redacted_data or "")
            case ImagePart():
                tokens += IMAGE_TOKENS
            case DataPart():
                tokens += estimate_tokens(json.dumps(part.data, default=str))
            case ResourcePart():
                text = part.text
                tokens += estimate_tokens(text) if text is not None else _BLOB_RESOURCE_TOKENS
                tokens += estimate_tokens(part.uri)
            case _:
                assert_never(part)
    return tokens


def _message_tokens(message: Message) -> int:
    tokens = MESSAGE_OVERHEAD + content_tokens(message.content)
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
    content = message.content
    if not isinstance(content, str):  # parts: their JSON, so any change to one shows
        content = json.dumps([part.model_dump(mode="json") for part in content])
    digest.update(f"{message.role}\0{content}\0".encode())
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
    if not isinstance(message, UserMessage):
        return False
    content = message.content
    return isinstance(content, str) and content.startswith(SUMMARY_PREFIX)


# --------------------------------------------------------------------------- results and state


@dataclass(slots=True)
class CompactionState:
    """A session's standing summary: it replaces the first ``covered`` history messages.

    ``covered`` counts messages after the instructions; ``anchor`` fingerprints the first and
    the last of them, so a different or rewound history is recognised and not given the summary.
    """

    summary: str
    covered: int
    anchor: str
    message: UserMessage = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.message = summary_message(self.summary)  # one object, so its estimate stays cached

    def matches(self, body: Sequence[Message]) -> bool:
        """Whether ``body`` (the history after the instructions) still starts as summarised."""
        covered = self.covered
        if not 0 < covered <= len(body) or anchor(body, covered) != self.anchor:
            return False
        return covered == len(body) or not isinstance(body[covered], ToolResultMessage)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "covered": self.covered, "anchor": self.anchor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompactionState:
        return cls(str(data["summary"]), int(data["covered"]), str(data["anchor"]))


@dataclass(slots=True)
class CompactionResult:
    """What one compaction did. ``messages`` is the compacted conversation (a new list)."""

    messages: list[Message]
    tokens_before: int
    tokens_after: int
    limit: int
    strategy: str
    summarized_messages: int = 0
    dropped_messages: int = 0
    cleared_outputs: int = 0
    manual: bool = False
    summary: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.tokens_after <= self.limit


def anchor(body: Sequence[Message], covered: int) -> str:
    """Fingerprints of the first and last covered messages: cheap, and enough to tell a history
    that only grew from one that was replaced, cut at the front or rewound."""
    return f"{fingerprint(body[0])}:{fingerprint(body[covered - 1])}"
