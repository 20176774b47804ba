"""What the stores return: plain records, the same from every backend."""

from __future__ import annotations

from dataclasses import dataclass

from agent_template.models import Message

__all__ = ["MessageRecord", "TaskRecord", "TodoRecord"]


@dataclass(slots=True)
class MessageRecord:
    """A stored message with its place in the session."""

    seq: int
    message: Message
    status: str
    task_id: str | None
    created_at: float
    compressed: bool


@dataclass(slots=True)
class TaskRecord:
    task_id: str
    session_id: str | None
    type: str
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    lease_owner: str | None
    lease_expires_at: float | None


@dataclass(slots=True)
class TodoRecord:
    content: str
    status: str
    position: int = 0
