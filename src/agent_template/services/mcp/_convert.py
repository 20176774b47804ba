"""MCP results as the core's content parts and messages.

Imported only once a server is in use: it imports the SDK's types.

Mapping: text to :class:`TextPart`; an image to :class:`ImagePart` (base64 ``data`` and
``media_type``); an embedded resource to :class:`ResourcePart` (``text`` or ``blob``); a
resource link to a :class:`TextPart` naming it (a link has no content to show); audio to a
:class:`TextPart` saying it was left out (no provider here takes audio in tool results).
``structuredContent`` becomes a :class:`DataPart` only when the result has no text: servers
are asked to repeat structured content as text, so adding it again would double the tokens.
A result of text alone is one plain string.
"""

from __future__ import annotations

from typing import Any

import mcp.types as mt

from agent_template.models import (
    AssistantMessage,
    ContentPart,
    DataPart,
    ImagePart,
    ResourcePart,
    TextPart,
    UserMessage,
)
from agent_template.services.mcp.errors import McpToolError

__all__ = ["content_parts", "prompt_messages", "resource_parts", "tool_result"]

_NO_ERROR_TEXT = "the tool reported an error without saying what went wrong"


def tool_result(result: mt.CallToolResult, *, tool: str, server: str) -> str | list[ContentPart]:
    """The result as the registry takes it: a string for text alone, else content parts.

    Raises:
        McpToolError: the result is an error (``isError``); its message is the server's text.
    """
    parts = content_parts(result.content)
    if result.is_error:
        text = "\n".join(p.text for p in parts if isinstance(p, TextPart)).strip()
        raise McpToolError(tool, server, text or _NO_ERROR_TEXT)
    has_text = any(isinstance(p, TextPart) for p in parts)
    if result.structured_content is not None and not has_text:
        parts.append(DataPart(data=result.structured_content))
    if all(isinstance(p, TextPart) for p in parts):
        return "\n".join(p.text for p in parts if isinstance(p, TextPart))
    return parts


def content_parts(blocks: list[mt.ContentBlock]) -> list[ContentPart]:
    """Each MCP content block as a core content part."""
    return [_part(block) for block in blocks]


def _part(block: mt.ContentBlock) -> ContentPart:
    match block:
        case mt.TextContent():
            return TextPart(text=block.text)
        case mt.ImageContent():
            return ImagePart(data=block.data, media_type=block.mime_type)
        case mt.EmbeddedResource():
            return _resource(block.resource)
        case mt.ResourceLink():
            return TextPart(text=_link_text(block))
        case mt.AudioContent():
            size = len(block.data) * 3 // 4  # base64: 4 characters carry 3 bytes
            return TextPart(text=f"[audio ({block.mime_type}, {size} bytes) not shown]")
    raise TypeError(f"unknown MCP content block {type(block).__name__}")  # pragma: no cover


def _resource(contents: mt.TextResourceContents | mt.BlobResourceContents) -> ResourcePart:
    if isinstance(contents, mt.TextResourceContents):
        return ResourcePart(uri=contents.uri, mime_type=contents.mime_type, text=contents.text)
    return ResourcePart(uri=contents.uri, mime_type=contents.mime_type, blob=contents.blob)


def _link_text(link: mt.ResourceLink) -> str:
    kind = f", {link.mime_type}" if link.mime_type else ""
    about = f": {link.description}" if link.description else ""
    return f"[resource link {link.uri} ({link.title or link.name}{kind}){about}]"


def resource_parts(result: mt.ReadResourceResult) -> list[ResourcePart]:
    """The contents of a read resource, one part per item."""
    return [_resource(item) for item in result.contents]


def prompt_messages(result: mt.GetPromptResult) -> list[UserMessage | AssistantMessage]:
    """A filled prompt's messages, each with its one content block as a part."""
    messages: list[UserMessage | AssistantMessage] = []
    for message in result.messages:
        part = _part(message.content)
        content: Any = part.text if isinstance(part, TextPart) else [part]
        if message.role == "assistant":
            messages.append(AssistantMessage(content=content))
        else:
            messages.append(UserMessage(content=content))
    return messages
