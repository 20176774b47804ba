"""Sessions: a user's conversation and its settings."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["Session"]


def _new_id() -> str:
    return uuid.uuid4().hex


class Session(BaseModel):
    """A conversation owned by a user. Times are seconds since the epoch."""

    session_id: str = Field(default_factory=_new_id)
    user_id: str = "default"
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    model_settings: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    last_active_at: float = Field(default_factory=time.time)
    message_count: int = 0
