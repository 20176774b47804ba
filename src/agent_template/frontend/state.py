"""What the client tracks besides its widgets: pending approvals (each asked once) and the
context use the status bar shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Approvals", "ContextUse", "nested_approval"]


class Approvals:
    """Pending approval requests, oldest first. An id answered or resolved is never asked
    again, whether the request comes back in a replayed stream or from the REST list."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}
        self.done: set[str] = set()

    def add(self, request: dict[str, Any]) -> bool:
        """Record a request; False when it is known already or was answered."""
        approval_id = str(request.get("approval_id") or "")
        if not approval_id or approval_id in self.done or approval_id in self.pending:
            return False
        state = request.get("state")
        if state not in (None, "pending"):  # the REST list's answered ones
            self.done.add(approval_id)
            return False
        self.pending[approval_id] = request
        return True

    def resolve(self, approval_id: str) -> dict[str, Any] | None:
        """The request is answered (here or elsewhere); returns it if it was pending."""
        self.done.add(approval_id)
        return self.pending.pop(approval_id, None)

    def reopen(self, request: dict[str, Any]) -> None:
        """Sending the answer failed: the request is pending again, first in line."""
        approval_id = str(request["approval_id"])
        self.done.discard(approval_id)
        self.pending = {approval_id: request, **self.pending}

    def oldest(self) -> dict[str, Any] | None:
        """The request to show."""
        return next(iter(self.pending.values()), None)

    def __len__(self) -> int:
        return len(self.pending)


def nested_approval(data: dict[str, Any]) -> dict[str, Any] | None:
    """The approval request inside a ``subagent_event``'s data (at any depth), if any."""
    event = data.get("event")
    while isinstance(event, dict):
        kind = event.get("type")
        if kind == "approval_request":
            return {**event, "task_id": data.get("task_id")}
        if kind != "subagent":
            return None
        data, event = event, event.get("event")
    return None


@dataclass(slots=True)
class ContextUse:
    """Tokens of the latest model request (the context used) and of the whole session."""

    last_request: int = 0
    total: int = 0
    limit: int | None = None
    by_task: dict[str, int] = field(default_factory=dict)

    def add(self, task_id: str | None, usage: dict[str, Any]) -> int:
        """A ``usage`` frame's figures; returns the request's tokens."""
        tokens_in = int(usage.get("input_tokens") or 0)
        tokens_out = int(usage.get("output_tokens") or 0)
        self.last_request = tokens_in + tokens_out
        self.total += tokens_in + tokens_out
        if task_id:
            self.by_task[task_id] = self.by_task.get(task_id, 0) + tokens_in + tokens_out
        return tokens_in + tokens_out
