"""Our messages, tools and options in the Messages API format.

The native API differs from chat completions in ways this module takes care of: system text
goes in ``system``, tool calls are ``tool_use`` blocks in the assistant's content, tool results
are ``tool_result`` blocks in the next user message (all results of one turn together), and
an assistant's thinking goes back as signed ``thinking`` (or ``redacted_thinking``) blocks
before its text and tool calls, which the API requires when tools are used with extended
thinking.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal, assert_never

from anthropic.types import (
    ContentBlockParam,
    ImageBlockParam,
    MessageParam,
    TextBlockParam,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceParam,
    ToolChoiceToolParam,
    ToolParam,
    ToolResultBlockParam,
)

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
    ToolChoice,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.providers._content import part_as_text

__all__ = ["to_anthropic_messages", "to_anthropic_tool_choice", "to_anthropic_tools"]

PROVIDER = "anthropic"  # the ReasoningPart.provider whose thinking is sent back
_ImageType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
_MEDIA_TYPES: dict[str, _ImageType] = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",  # a common misspelling; the bytes are the same
    "image/png": "image/png",
    "image/gif": "image/gif",
    "image/webp": "image/webp",
}

_ResultBlock = TextBlockParam | ImageBlockParam


def _image(part: ImagePart) -> ImageBlockParam:
    if part.data is None:
        return {"type": "image", "source": {"type": "url", "url": part.url or ""}}
    # The API takes four types; another goes as PNG, and the API says if the bytes are not.
    media_type = _MEDIA_TYPES.get((part.media_type or "").lower(), "image/png")
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": part.data},
    }


def _blocks(content: Content) -> list[_ResultBlock]:
    """Text and image blocks for content; resources and data as text, reasoning left out."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out: list[_ResultBlock] = []
    for part in content:
        match part:
            case TextPart():
                if part.text:  # the API refuses empty text blocks
                    out.append({"type": "text", "text": part.text})
            case ImagePart():
                out.append(_image(part))
            case ResourcePart() | DataPart():
                out.append({"type": "text", "text": part_as_text(part)})
            case ReasoningPart():
                pass
            case _:
                assert_never(part)
    return out


def _thinking(part: ReasoningPart) -> ContentBlockParam | None:
    """Anthropic's own thinking, as the block it came in; None for anything else.

    Thinking without a signature (or another provider's reasoning) cannot be verified, and
    the API refuses it.
    """
    if part.provider != PROVIDER:
        return None
    if part.redacted_data is not None:
        return {"type": "redacted_thinking", "data": part.redacted_data}
    if part.signature is None:
        return None
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _assistant_blocks(message: AssistantMessage) -> list[ContentBlockParam]:
    blocks: list[ContentBlockParam] = []
    content = message.content
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    else:
        thinking = [b for p in content if isinstance(p, ReasoningPart) if (b := _thinking(p))]
        blocks.extend(thinking)
        # Images are not allowed in assistant turns; text and text-like parts are.
        blocks.extend(b for b in _blocks(content) if b["type"] == "text")
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
        )
    return blocks


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

    def add(role: Literal["user", "assistant"], blocks: Sequence[ContentBlockParam]) -> None:
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))

    for message in messages:
        match message:
            case SystemMessage():
                system.append(message.content)
            case UserMessage():
                add("user", _blocks(message.content))
            case AssistantMessage():
                blocks = _assistant_blocks(message)
                if blocks:
                    add("assistant", blocks)
            case ToolResultMessage():
                content = message.content
                result: ToolResultBlockParam = {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": content if isinstance(content, str) else _blocks(content),
                }
                if message.is_error:
                    result["is_error"] = True
                add("user", [result])
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


def to_anthropic_tool_choice(
    choice: ToolChoice | None, parallel_tool_calls: bool | None
) -> ToolChoiceParam | None:
    """``tool_choice`` for our choice (``required`` is Anthropic's ``any``); None to omit it.

    Forbidding parallel calls is a flag on the choice (``disable_parallel_tool_use``), so it
    comes with an ``auto`` choice when the request names none. ``none`` has no such flag.
    """
    serial = parallel_tool_calls is False
    if choice == "none":
        return {"type": "none"}
    if choice is None and not serial:
        return None
    if choice is None or choice == "auto":
        auto: ToolChoiceAutoParam = {"type": "auto"}
        if serial:
            auto["disable_parallel_tool_use"] = True
        return auto
    if choice == "required":
        any_tool: ToolChoiceAnyParam = {"type": "any"}
        if serial:
            any_tool["disable_parallel_tool_use"] = True
        return any_tool
    named: ToolChoiceToolParam = {"type": "tool", "name": choice}
    if serial:
        named["disable_parallel_tool_use"] = True
    return named
