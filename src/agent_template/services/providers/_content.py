"""Content parts that an API cannot take as they are, in the text form both providers send.

MCP resources and structured data have no block of their own in either chat API; the model
gets them as text that says what they are.
"""

from __future__ import annotations

import json

from agent_template.models import DataPart, ResourcePart

__all__ = ["data_url", "part_as_text"]


def part_as_text(part: ResourcePart | DataPart) -> str:
    """A resource or data part as the text a model reads."""
    if isinstance(part, DataPart):
        return json.dumps(part.data, ensure_ascii=False, default=str)
    kind = f" ({part.mime_type})" if part.mime_type else ""
    if part.text is not None:
        return f"[resource {part.uri}{kind}]\n{part.text}"
    size = f", {len(part.blob) * 3 // 4} bytes" if part.blob else ""  # base64: 4 chars, 3 bytes
    return f"[resource {part.uri}{kind}{size}: binary content not shown]"


def data_url(media_type: str, data: str) -> str:
    """A ``data:`` URL for base64 ``data``, the form chat completions take inline images in."""
    return f"data:{media_type};base64,{data}"
