"""Conversation messages and token usage: what is sent to a model and what comes back.

A message's ``content`` is a plain string in the common case (and in all history stored
before content parts existed), or a list of :data:`ContentPart` values when it carries more
than text: images, a model's reasoning, an MCP resource, structured data. Code that needs the
words uses :attr:`~UserMessage.text`, which is right for both shapes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "AssistantMessage",
    "Content",
    "ContentPart",
    "DataPart",
    "ImagePart",
    "Message",
    "MessageStatus",
    "ReasoningPart",
    "ResourcePart",
    "SystemMessage",
    "TextPart",
    "ToolCall",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "content_text",
    "message_adapter",
]

MessageStatus: TypeAlias = Literal["complete", "streaming", "cancelled", "failed", "interrupted"]


class Usage(BaseModel):
    """Tokens spent; summed across the model calls of a run."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            requests=self.requests + other.requests,
        )


class ToolCall(BaseModel):
    """A model's request to run one tool; ``arguments`` is the raw JSON text the model wrote."""

    id: str
    name: str
    arguments: str = "{}"


# --------------------------------------------------------------------------- content parts


class TextPart(BaseModel):
    """Plain text."""

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image, by ``url`` or as base64 ``data`` with its ``media_type`` (``image/png``...).

    Raises:
        pydantic.ValidationError: when neither ``url`` nor ``data`` is given, or ``data``
            comes without ``media_type`` (the APIs need it to decode the bytes).
    """

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = None
    media_type: str | None = None

    @model_validator(mode="after")
    def _has_a_source(self) -> ImagePart:
        if self.url is None and self.data is None:
            raise ValueError("an image needs a url or base64 data")
        if self.data is not None and not self.media_type:
            raise ValueError("an image given as data needs its media_type, such as image/png")
        return self


class ReasoningPart(BaseModel):
    """A model's reasoning (DeepSeek's ``reasoning_content``, Anthropic's thinking).

    ``signature`` (Anthropic) authenticates the thinking when it is sent back;
    ``redacted_data`` holds a thinking block the provider encrypted, which has no readable
    ``text`` but must travel back unchanged. ``provider`` names the API that wrote it: only
    that API is sent it back.
    """

    type: Literal["reasoning"] = "reasoning"
    text: str = ""
    signature: str | None = None
    redacted_data: str | None = None
    provider: str | None = None


class ResourcePart(BaseModel):
    """An MCP embedded resource: its ``uri`` and either ``text`` or a base64 ``blob``."""

    type: Literal["resource"] = "resource"
    uri: str
    mime_type: str | None = None
    text: str | None = None
    blob: str | None = None


class DataPart(BaseModel):
    """Structured content (say, a tool's JSON result), sent to models as JSON text."""

    type: Literal["data"] = "data"
    data: Any


ContentPart = Annotated[
    TextPart | ImagePart | ReasoningPart | ResourcePart | DataPart, Field(discriminator="type")
]
# A plain string stays a plain string: cheaper to store and count, and what old history holds.
Content: TypeAlias = str | list[ContentPart]


def content_text(content: Content) -> str:
    """The text of ``content``: the string itself, or its text parts joined by newlines.

    Reasoning, images, resources and data are left out.
    """
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if isinstance(part, TextPart))


# --------------------------------------------------------------------------- messages


class SystemMessage(BaseModel):
    role: Literal["system"] = "system"
    content: str

    @property
    def text(self) -> str:
        return self.content


class UserMessage(BaseModel):
    role: Literal["user"] = "user"
    content: Content

    @property
    def text(self) -> str:
        """The message's text (see :func:`content_text`)."""
        return content_text(self.content)


class AssistantMessage(BaseModel):
    """A model's answer: text, tool calls, or both.

    ``content`` starts with the model's reasoning parts when it reported any. ``status`` is
    ``complete`` for a finished answer; a run that was cancelled, failed or interrupted keeps
    what the model produced up to then, marked with that status.
    """

    role: Literal["assistant"] = "assistant"
    content: Content = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    status: MessageStatus = "complete"
    provider: str | None = None
    model: str | None = None

    @property
    def text(self) -> str:
        """The answer's text, without its reasoning (see :func:`content_text`)."""
        return content_text(self.content)

    @property
    def reasoning(self) -> str:
        """The text of the reasoning parts, joined by newlines; empty without any."""
        if isinstance(self.content, str):
            return ""
        return "\n".join(p.text for p in self.content if isinstance(p, ReasoningPart) and p.text)


class ToolResultMessage(BaseModel):
    """The outcome of one tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: Content
    is_error: bool = False

    @property
    def text(self) -> str:
        """The result's text (see :func:`content_text`)."""
        return content_text(self.content)


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage,
    Field(discriminator="role"),
]
message_adapter: TypeAdapter[Message] = TypeAdapter(Message)
