"""Tasks: units of work the scheduler runs (a chat turn, a tool call, a subagent run...)."""

from __future__ import annotations

import time
import uuid
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["TERMINAL_STATES", "Task", "TaskPriority", "TaskState"]


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # for a person's answer (an approval): holds its session, not a slot
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.INTERRUPTED}
)


class TaskPriority(IntEnum):
    """Higher runs first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


def _new_id() -> str:
    return uuid.uuid4().hex


class Task(BaseModel):
    """A unit of work with a priority, a state and timestamps (seconds since the epoch).

    A task belongs to ``user_id`` (None only for trusted in-process callers, which then act as
    the owner of the task's session). Its events are a stream of numbered chunks kept by the
    scheduler's stream store under the task's id, not on the task: a task is plain data.
    """

    task_id: str = Field(default_factory=_new_id)
    type: str = "chat"
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: TaskPriority = TaskPriority.NORMAL
    state: TaskState = TaskState.PENDING
    session_id: str | None = None
    user_id: str | None = None
    parent_id: str | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES
