"""What both streaming parsers assemble: tool calls from argument pieces, and the answer.

The OpenAI-compatible and the Anthropic streams deliver a tool call's arguments as JSON text
in pieces and reasoning beside the text; both build the same :class:`AssistantMessage` from
them, so they share these helpers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agent_template.models import Content, ContentPart, ReasoningPart, TextPart, ToolCall

__all__ = ["PendingCall", "answer_content"]


class PendingCall:
    """A tool call being assembled from argument deltas.

    Args:
        index: the call's position among this answer's calls (our index, not the wire's).
        call_id: the provider's id for the call.
        name: the tool's name (some servers send it after the id; set it then).
        initial: arguments that came with the call's start (Anthropic's ``input``); used only
            when no deltas follow.
    """

    __slots__ = ("id", "index", "initial", "name", "parts")

    def __init__(self, index: int, call_id: str, name: str, initial: object = None) -> None:
        self.index = index
        self.id = call_id
        self.name = name
        self.initial = initial
        self.parts: list[str] = []

    def done(self) -> ToolCall:
        if self.parts:
            arguments = "".join(self.parts)
        else:
            arguments = json.dumps(self.initial) if self.initial else "{}"
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


def answer_content(reasoning: Sequence[ReasoningPart], text: str) -> Content:
    """An answer's content: plain text, or its reasoning parts first and then the text.

    Without reasoning the content stays a plain string, as answers have always been stored.
    """
    if not reasoning:
        return text
    parts: list[ContentPart] = list(reasoning)
    if text:
        parts.append(TextPart(text=text))
    return parts
