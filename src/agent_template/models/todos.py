"""Todo items: the agent's own plan for a session."""

from __future__ import annotations

from typing import Literal, TypeAlias

from pydantic import BaseModel, Field

__all__ = ["TodoItem", "TodoStatus"]

TodoStatus: TypeAlias = Literal["pending", "in_progress", "completed"]


class TodoItem(BaseModel):
    """One step of the plan, in list order."""

    content: str = Field(min_length=1, description="What to do, as a short imperative.")
    status: TodoStatus = Field("pending", description="pending, in_progress or completed.")
