"""Our messages, tools and options in the chat-completions format.

Kept apart from the provider (:mod:`.openai_compat`) because it changes when the content model
or the wire format grows, not when the request flow does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, assert_never

from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionContentPartTextParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
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
from agent_template.services.providers._content import data_url, part_as_text

__all__ = ["to_openai_messages", "to_openai_tool_choice", "to_openai_tools"]

_TOOL_ERROR_PREFIX = "Error: "  # the chat API has no error flag on tool results
_KEYWORDS: dict[str, Literal["auto", "none", "required"]] = {
    "auto": "auto",
    "none": "none",
    "required": "required",
}


def _image(part: ImagePart) -> ChatCompletionContentPartParam:
    url = part.url if part.data is None else data_url(part.media_type or "", part.data)
    return {"type": "image_url", "image_url": {"url": url or ""}}


def _user_parts(content: Content) -> str | list[ChatCompletionContentPartParam]:
    """User content: a string as it is, parts as content parts (reasoning left out)."""
    if isinstance(content, str):
        return content
    out: list[ChatCompletionContentPartParam] = []
    for part in content:
        match part:
            case TextPart():
                out.append({"type": "text", "text": part.text})
            case ImagePart():
                out.append(_image(part))
            case ResourcePart() | DataPart():
                out.append({"type": "text", "text": part_as_text(part)})
            case ReasoningPart():
                pass  # a model's own reasoning is not sent back
            case _:
                assert_never(part)
    return out


def _tool_parts(
    message: ToolResultMessage,
) -> tuple[str | list[ChatCompletionContentPartTextParam], list[ChatCompletionContentPartParam]]:
    """A tool result's content, and its images, which tool messages cannot carry."""
    prefix = _TOOL_ERROR_PREFIX if message.is_error else ""
    content = message.content
    if isinstance(content, str):
        return prefix + content, []
    texts: list[ChatCompletionContentPartTextParam] = []
    images: list[ChatCompletionContentPartParam] = []
    if prefix:
        texts.append({"type": "text", "text": prefix.rstrip()})
    for part in content:
        match part:
            case TextPart():
                texts.append({"type": "text", "text": part.text})
            case ResourcePart() | DataPart():
                texts.append({"type": "text", "text": part_as_text(part)})
            case ImagePart():
                images.append(_image(part))
            case ReasoningPart():
                pass
            case _:
                assert_never(part)
    if images:
        count = "an image" if len(images) == 1 else f"{len(images)} images"
        texts.append({"type": "text", "text": f"[{count}: sent in the next user message]"})
    return texts, images


def to_openai_messages(messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
    """Our messages in the chat-completions format.

    Tool messages take only text, so the images of a turn's tool results follow those
    results in one user message that says which call they came from.
    """
    out: list[ChatCompletionMessageParam] = []
    images: list[ChatCompletionContentPartParam] = []

    def flush_images() -> None:
        if images:
            out.append({"role": "user", "content": list(images)})
            images.clear()

    for message in messages:
        if not isinstance(message, ToolResultMessage):
            flush_images()
        match message:
            case SystemMessage():
                out.append({"role": "system", "content": message.content})
            case UserMessage():
                out.append({"role": "user", "content": _user_parts(message.content)})
            case AssistantMessage():
                text = message.text
                if not message.tool_calls:
                    out.append({"role": "assistant", "content": text})
                    continue
                calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in message.tool_calls
                ]
                out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
            case ToolResultMessage():
                content, found = _tool_parts(message)
                out.append(
                    {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}
                )
                if found:
                    where = f"The tool {message.name} (call {message.tool_call_id}) returned:"
                    images.append({"type": "text", "text": where})
                    images.extend(found)
            case _:
                assert_never(message)
    flush_images()
    return out


def to_openai_tools(tools: Sequence[ToolDefinition]) -> list[ChatCompletionFunctionToolParam]:
    """Tool definitions in the chat-completions format."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


def to_openai_tool_choice(choice: ToolChoice) -> ChatCompletionToolChoiceOptionParam:
    """``auto``, ``none`` and ``required`` as they are; any other value names the one tool."""
    keyword = _KEYWORDS.get(choice)
    if keyword is not None:
        return keyword
    return {"type": "function", "function": {"name": choice}}
