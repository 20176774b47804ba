"""Todo management: a persisted todo list per session, offered to the agent as two tools.

``todo_write`` replaces the whole list (the agent rewrites its plan as it works) and
``todo_read`` returns it. Every change is stored, then announced with a ``todos_changed``
event.
"""

from __future__ import annotations

from typing import Any

from agent_template.models import TodoItem, TodoListChanged
from agent_template.services.storage.records import TodoRecord
from agent_template.services.tool_manager import FunctionTool, ToolContext

__all__ = ["TodoManager"]

MAX_TODOS = 100  # a plan longer than this is a sign the agent lost track


class TodoManager:
    """Reads and replaces the todo list of a session.

    Args:
        store: anything with ``save_todos``/``load_todos`` (the session store).
        bus: where ``todos_changed`` events go.
    """

    def __init__(self, store: Any, *, bus: Any = None) -> None:
        self.store = store
        self.bus = bus

    async def get(self, session_id: str) -> list[TodoItem]:
        rows = await self.store.load_todos(session_id)
        return [TodoItem(content=r.content, status=r.status) for r in rows]

    async def replace(
        self, session_id: str, items: list[TodoItem], *, user_id: str | None = None
    ) -> list[TodoItem]:
        """Store a new list.

        Raises:
            ValueError: more than one item in progress, or more than MAX_TODOS items.
        """
        if len(items) > MAX_TODOS:
            raise ValueError(f"a todo list holds at most {MAX_TODOS} items; merge some steps")
        if sum(1 for i in items if i.status == "in_progress") > 1:
            raise ValueError("only one item may be in_progress at a time; finish one first")
        await self.store.save_todos(
            session_id, [TodoRecord(i.content, i.status, n) for n, i in enumerate(items)]
        )
        if self.bus is not None:
            self.bus.publish(TodoListChanged(session_id=session_id, user_id=user_id, items=items))
        return items

    def tools(self) -> list[FunctionTool]:
        """``todo_write`` and ``todo_read``, bound to the calling run's session."""
        manager = self

        async def todo_write(ctx: ToolContext, todos: list[TodoItem]) -> str:
            """Replace your todo list for this conversation with the given items.

            Use it to plan multi-step work and to record progress: mark one item
            in_progress while you work on it and completed as soon as it is done.

            Args:
                todos: The whole list, in order; items left out are removed.
            """
            session_id = _session_of(ctx)
            items = await manager.replace(session_id, todos, user_id=ctx.user_id)
            done = sum(1 for i in items if i.status == "completed")
            return f"Todo list saved: {len(items)} items, {done} completed."

        async def todo_read(ctx: ToolContext) -> str:
            """Return your todo list for this conversation, in order."""
            items = await manager.get(_session_of(ctx))
            if not items:
                return "The todo list is empty."
            marks = {"pending": "[ ]", "in_progress": "[~]", "completed": "[x]"}
            return "\n".join(f"{n + 1}. {marks[i.status]} {i.content}" for n, i in enumerate(items))

        return [FunctionTool(todo_write), FunctionTool(todo_read)]


def _session_of(ctx: ToolContext) -> str:
    if not ctx.session_id:
        raise ValueError("the todo list belongs to a session; this run has none")
    return ctx.session_id
