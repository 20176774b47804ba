"""Two users on one store: a session, its messages, tasks, todos and streams are its owner's."""

from __future__ import annotations

from typing import Any

import pytest

from agent_template import AgentLoop, SessionManager
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.core.stream_store import MemoryStreamStore
from agent_template.errors import SessionNotFoundError, StreamNotFoundError, TaskNotFoundError
from agent_template.models import SessionChanged, TaskStateChanged
from agent_template.services.providers.offline import TestProvider


def loop_on(store: Any, bus: InProcessEventBus) -> AgentLoop:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return AgentLoop(
        settings,
        model=TestProvider(lambda request: "hello"),
        session_manager=SessionManager(store=store),
        bus=bus,
        streams=MemoryStreamStore(),
    )


async def test_another_users_session_is_not_found_anywhere(store: Any) -> None:
    bus = InProcessEventBus()
    events: list[Any] = []
    bus.add_listener(events.append)
    loop = loop_on(store, bus)
    sessions = loop.sessions
    alice = await sessions.create_session("alice", title="alice's")
    task = await loop.create_task(
        {"message": "hi", "session_id": alice.session_id, "user_id": "alice"}
    )
    await loop.wait(task.task_id)
    sid = alice.session_id

    # bob knows the id: nothing of it is his, and nothing says it exists
    for attempt in (
        sessions.get_or_create(sid, "bob"),
        sessions.get_session(sid, user_id="bob"),
        sessions.get_history(sid, user_id="bob"),
        sessions.get_tasks(sid, user_id="bob"),
        sessions.load_todos(sid, user_id="bob"),
        sessions.rename_session(sid, "mine now", user_id="bob"),
        sessions.delete_session(sid, user_id="bob"),
        sessions.create_session("bob", session_id=sid),
        loop.create_task({"message": "show me", "session_id": sid, "user_id": "bob"}),
        loop.create_task({"type": "chat", "session_id": sid, "user_id": "bob", "x": 1}),
    ):
        with pytest.raises(SessionNotFoundError) as caught:
            await attempt
        assert caught.value.session_id == sid
    with pytest.raises(TaskNotFoundError):
        loop.get_task(task.task_id, user_id="bob")
    with pytest.raises(StreamNotFoundError):
        loop.subscribe(task.task_id, user_id="bob")
    assert await sessions.list_sessions("bob") == []
    assert loop.list_tasks(user_id="bob") == []

    # alice still has everything, untouched
    assert [s.session_id for s in await sessions.list_sessions("alice")] == [sid]
    kept = await sessions.get_session(sid, user_id="alice")
    assert (kept.user_id, kept.title) == ("alice", "alice's")
    assert [m.role for m in await sessions.get_messages(sid, user_id="alice")] == [
        "user",
        "assistant",
    ]
    assert loop.list_tasks(user_id="alice") == [task]
    assert [t.user_id for t in await sessions.get_tasks(sid, user_id="alice")] == ["alice"]

    # and every event about it says whose it is
    about = [e for e in events if isinstance(e, TaskStateChanged | SessionChanged)]
    assert about and all(e.user_id == "alice" for e in about)


async def test_a_new_session_id_is_created_for_the_caller_who_then_owns_it(store: Any) -> None:
    loop = loop_on(store, InProcessEventBus())
    task = await loop.create_task({"message": "hi", "session_id": "demo", "user_id": "carol"})
    await loop.wait(task.task_id)
    assert (await loop.sessions.get_session("demo")).user_id == "carol"
    assert task.user_id == "carol"
    with pytest.raises(SessionNotFoundError):
        await loop.create_task({"message": "hi", "session_id": "demo", "user_id": "dave"})


async def test_a_task_without_a_user_acts_as_the_sessions_owner_but_cannot_create_one(
    store: Any,
) -> None:
    loop = loop_on(store, InProcessEventBus())
    session = await loop.sessions.create_session("erin")
    task = await loop.create_task({"message": "hi", "session_id": session.session_id})
    assert task.user_id == "erin"  # the spec's in-process example: no user given
    await loop.wait(task.task_id)
    with pytest.raises(SessionNotFoundError):
        await loop.create_task({"message": "hi", "session_id": "nobody-made-this"})


async def test_concurrent_get_or_create_gives_one_session(store: Any) -> None:
    import asyncio

    sessions = SessionManager(store=store)
    made = await asyncio.gather(*(sessions.get_or_create("same", "frank") for _ in range(20)))
    assert {s.session_id for s in made} == {"same"}
    assert [s.session_id for s in await sessions.list_sessions("frank")] == ["same"]
