"""The task monitor (state, elapsed time, tokens, cancel) and the session's todo list."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable, Static

__all__ = ["TaskPanel", "TaskRow", "TodoPanel"]

LIVE_STATES = frozenset({"pending", "running", "waiting"})
_STATE_STYLE = {
    "pending": "yellow",
    "running": "bold green",
    "waiting": "bold magenta",
    "completed": "dim",
    "failed": "red",
    "cancelled": "dim yellow",
    "interrupted": "yellow",
}
_TODO_MARK = {"completed": "✓", "in_progress": "▶", "pending": "○", "cancelled": "✗"}


@dataclass(slots=True)
class TaskRow:
    """What the monitor knows of a task."""

    task_id: str
    kind: str = "chat"
    state: str = "pending"
    parent_id: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    tokens: int = 0

    def update(self, data: dict[str, Any]) -> None:
        """Take the fields of a task frame (or of the REST API's task)."""
        self.kind = str(data.get("type") or self.kind)
        self.state = str(data.get("state") or self.state)
        self.parent_id = data.get("parent_id", self.parent_id)
        for name in ("created_at", "started_at", "finished_at"):
            value = data.get(name)
            if value is not None:
                setattr(self, name, float(value))

    def elapsed(self, now: float) -> float | None:
        """Seconds it ran (or has run so far)."""
        start = self.started_at or self.created_at
        if start is None:
            return None
        return max(0.0, (self.finished_at or now) - start)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class TaskPanel(DataTable[Any]):
    """Tasks of the session, newest first; ``x`` cancels the highlighted one."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("x", "cancel_task", "Cancel task")]

    class CancelRequested(Message):
        """The user asked to cancel a task."""

        def __init__(self, task_id: str) -> None:
            super().__init__()
            self.task_id = task_id

    def __init__(self, *, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.clock = clock
        self.task_rows: dict[str, TaskRow] = {}
        self.border_title = "Tasks"

    def on_mount(self) -> None:
        """Columns, and a tick that keeps running tasks' times current."""
        self.add_columns("task", "state", "elapsed", "tokens")
        self.set_interval(1.0, self._tick)

    def task_row(self, task_id: str) -> TaskRow:
        """The row of ``task_id`` (made when new)."""
        row = self.task_rows.get(task_id)
        if row is None:
            row = self.task_rows[task_id] = TaskRow(task_id)
        return row

    def upsert(self, data: dict[str, Any]) -> None:
        """A task frame or REST task: add or update its row."""
        task_id = str(data.get("task_id") or "")
        if task_id:
            self.task_row(task_id).update(data)
            self.render_rows()

    def add_tokens(self, task_id: str, tokens: int) -> None:
        """Tokens a model request of the task used."""
        self.task_row(task_id).tokens += tokens
        self.render_rows()

    def clear_rows(self) -> None:
        """Forget every task (another session is shown)."""
        self.task_rows.clear()
        self.render_rows()

    @property
    def live(self) -> list[TaskRow]:
        """Tasks still pending, running or waiting."""
        return [row for row in self.task_rows.values() if row.state in LIVE_STATES]

    def render_rows(self) -> None:
        """Repaint the table (a few dozen rows at most)."""
        if not self.is_mounted:
            return
        now = self.clock()
        cursor = self.cursor_row
        self.clear()
        rows = sorted(self.task_rows.values(), key=lambda r: r.created_at or 0.0, reverse=True)
        for row in rows:
            label = ("↳ " if row.parent_id else "") + row.task_id[:8]
            if row.kind != "chat":
                label += f" {row.kind}"
            self.add_row(
                label,
                Text(row.state, _STATE_STYLE.get(row.state, "")),
                _duration(row.elapsed(now)),
                str(row.tokens) if row.tokens else "-",
                key=row.task_id,
            )
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))

    def _tick(self) -> None:
        if self.live and self.display:
            self.render_rows()

    def action_cancel_task(self) -> None:
        """Cancel the highlighted task."""
        if not self.task_rows or self.cursor_row < 0:
            return
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        if key is not None:
            self.post_message(self.CancelRequested(str(key)))


class TodoPanel(Static):
    """The session's todo list, replaced whole on every ``todo`` frame."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("No todos yet.", **kwargs)
        self.items: list[dict[str, Any]] = []
        self.border_title = "Todos"

    def set_items(self, items: list[dict[str, Any]]) -> None:
        """Show ``items`` (``content`` and ``status`` each)."""
        self.items = items
        if not items:
            self.update("No todos yet.")
            return
        out = Text()
        for item in items:
            status = str(item.get("status", "pending"))
            out.append(f"{_TODO_MARK.get(status, '•')} ", _STATE_STYLE.get(status, ""))
            style = (
                "dim strike" if status == "completed" else "bold" if status == "in_progress" else ""
            )
            out.append(str(item.get("content", "")), style)
            out.append("\n")
        out.rstrip()
        self.update(out)
