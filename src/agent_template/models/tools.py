"""Tool definitions as the model sees them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ToolDefinition"]


class ToolDefinition(BaseModel):
    """A tool's name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
