"""Todo lists: persisted per session, offered to the agent as tools, announced on the bus."""

from __future__ import annotations

from typing import Any

import pytest

from agent_template import AgentLoop, SessionManager
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.models import TodoItem, TodoListChanged, ToolResultMessage
from agent_template.services.providers.offline import TestProvider, TestTurn
from agent_template.services.storage import SQLStore
from agent_template.services.todo_manager import TodoManager

PLAN = [
    {"content": "Read the issue", "status": "completed"},
    {"content": "Write the code", "status": "in_progress"},
    {"content": "Run the tests", "status": "pending"},
]


async def test_replace_and_read_persist_and_announce(store: SQLStore) -> None:
    bus = InProcessEventBus()
    seen: list[Any] = []
    bus.add_listener(seen.append, types=["todos_changed"])
    manager = SessionManager(store=store)
    session = await manager.create_session("ada")
    todos = TodoManager(store, bus=bus)
    items = [TodoItem(**p) for p in PLAN]  # type: ignore[arg-type]
    await todos.replace(session.session_id, items)
    assert await todos.get(session.session_id) == items
    assert isinstance(seen[0], TodoListChanged)
    assert seen[0].items == items
    await todos.replace(session.session_id, items[:1])
    assert await todos.get(session.session_id) == items[:1]
    with pytest.raises(ValueError, match="only one item may be in_progress"):
        await todos.replace(session.session_id, [items[1], items[1]])


async def test_the_agent_plans_with_the_todo_tools(tmp_path: Any) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'a.db'}")  # type: ignore[call-arg]
    model = TestProvider(
        [
            TestTurn(tool_calls=[("todo_write", {"todos": PLAN})]),
            TestTurn(tool_calls=[("todo_read", {})]),
            "Planned.",
        ]
    )
    bus = InProcessEventBus()
    events: list[Any] = []
    bus.add_listener(events.append, types=["todos_changed"])
    loop = AgentLoop(settings, model=model, bus=bus)
    task = await loop.create_task({"message": "plan it", "session_id": "s1", "user_id": "ada"})
    await loop.run()
    assert task.result == "Planned."
    results = [m for m in model.requests[2].messages if isinstance(m, ToolResultMessage)]
    assert results[0].content == "Todo list saved: 3 items, 1 completed."
    assert (
        results[1].content == "1. [x] Read the issue\n2. [~] Write the code\n3. [ ] Run the tests"
    )
    assert len(events) == 1
    # stored: a new process sees the same plan
    reopened = TodoManager(SQLStore(settings.database_url))
    assert [i.content for i in await reopened.get("s1")] == [p["content"] for p in PLAN]
    await loop.sessions.close()
    await reopened.store.close()


async def test_todo_tools_need_a_session(tmp_path: Any) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'a.db'}")  # type: ignore[call-arg]
    model = TestProvider([TestTurn(tool_calls=[("todo_read", {})]), "ok"])
    loop = AgentLoop(settings, model=model, bus=InProcessEventBus())
    await loop.create_task({"message": "no session"})
    await loop.run()
    result = next(m for m in model.requests[1].messages if isinstance(m, ToolResultMessage))
    assert result.is_error
    assert "belongs to a session" in result.content
