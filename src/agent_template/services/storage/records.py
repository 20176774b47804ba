"""What the stores return: plain records, the same from every backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_template.models import Message

__all__ = ["ApprovalRecord", "MessageRecord", "TaskRecord", "TodoRecord"]


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
    """A stored task: its state, its times and the lease of the process running it.

    ``user_id`` and ``parent_id`` come last, with defaults, so records built positionally
    before they existed still work.
    """

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
    user_id: str | None = None
    parent_id: str | None = None


@dataclass(slots=True)
class TodoRecord:
    content: str
    status: str
    position: int = 0


@dataclass(slots=True)
class ApprovalRecord:
    """A stored approval request: the call that waits, and its answer once given.

    ``parts`` is a JSON list of the shell commands asked about; ``state`` is ``pending``,
    ``approve``, ``deny``, ``always`` or ``timeout``.
    """

    id: str
    task_id: str
    session_id: str | None
    user_id: str
    call_id: str
    tool: str
    arguments: str
    reason: str
    parts: str
    state: str
    message: str | None
    created_at: float
    expires_at: float
    answered_at: float | None = None
    kind: str = "tool_call"  # or "question": an MCP server's question to the user
    content: str | None = None  # the answer to a question, JSON

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}
