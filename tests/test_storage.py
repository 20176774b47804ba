"""The SQL repository on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import pytest
from sqlalchemy import event

from agent_template.errors import SessionNotFoundError
from agent_template.models import (
    AssistantMessage,
    Session,
    Task,
    TaskState,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.storage import SQLStore, TodoRecord


async def new_session(store: SQLStore, user: str = "u1", **kwargs: Any) -> Session:
    session = Session(user_id=user, **kwargs)
    await store.save_session(session)
    return session


async def test_sessions_round_trip_and_list_newest_first(store: SQLStore) -> None:
    a = await new_session(store, title="first", metadata={"k": [1, 2]})
    b = await new_session(store, user="u2")
    c = await new_session(store)
    c.last_active_at = time.time() + 10
    await store.save_session(c)
    loaded = await store.load_session(a.session_id)
    assert loaded is not None
    assert loaded.title == "first"
    assert loaded.metadata == {"k": [1, 2]}
    assert [s.session_id for s in await store.list_sessions("u1", 10, 0)] == [
        c.session_id,
        a.session_id,
    ]
    assert [s.session_id for s in await store.list_sessions(None, 1, 1)] == [b.session_id]
    assert await store.load_session("missing") is None


async def test_messages_keep_order_and_large_bodies_are_compressed(store: SQLStore) -> None:
    session = await new_session(store)
    big = "tool output line\n" * 500
    call = ToolCall(id="c1", name="grep", arguments='{"pattern": "x"}')
    seqs = await store.append_messages(
        session.session_id,
        [
            UserMessage(content="find x"),
            AssistantMessage(content="", tool_calls=[call]),
            ToolResultMessage(tool_call_id="c1", name="grep", content=big),
            AssistantMessage(content="found it"),
        ],
    )
    assert seqs == [1, 2, 3, 4]
    records = await store.load_records(session.session_id)
    assert [r.message.role for r in records] == ["user", "assistant", "tool", "assistant"]
    assert records[2].compressed
    assert not records[0].compressed
    assert records[2].message.content == big  # read back transparently
    assert records[1].message.tool_calls == [call]
    assert (await store.load_session(session.session_id)).message_count == 4  # type: ignore[union-attr]


async def test_append_to_a_missing_session_is_refused(store: SQLStore) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.append_messages("nope", [UserMessage(content="hi")])


async def test_checkpoints_are_rewritten_then_replaced_by_the_answer(store: SQLStore) -> None:
    session = await new_session(store)
    sid = session.session_id
    await store.append_messages(sid, [UserMessage(content="q")], task_id="t1")
    await store.checkpoint(sid, "t1", "Once upon")
    await store.checkpoint(sid, "t1", "Once upon a time")
    records = await store.load_records(sid)
    assert [(r.seq, r.status, r.message.content) for r in records] == [
        (1, "complete", "q"),
        (2, "streaming", "Once upon a time"),
    ]
    await store.append_messages(
        sid, [AssistantMessage(content="Once upon a time, the end.")], task_id="t1"
    )
    records = await store.load_records(sid)
    assert [(r.seq, r.status) for r in records] == [(1, "complete"), (2, "complete")]
    assert records[1].message.content == "Once upon a time, the end."
    assert await store.integrity_check() == []


async def test_recent_window_reads_from_the_end(store: SQLStore) -> None:
    session = await new_session(store)
    sid = session.session_id
    for start in range(0, 10_000, 1_000):
        await store.append_messages(
            sid, [UserMessage(content=f"m{i}") for i in range(start, start + 1_000)]
        )
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    await store.open()
    event.listen(store.statement_engine, "before_cursor_execute", capture)
    try:
        t0 = time.perf_counter()
        window = await store.load_records(sid, limit=50)
        elapsed = time.perf_counter() - t0
    finally:
        event.remove(store.statement_engine, "before_cursor_execute", capture)
    assert [r.seq for r in window] == list(range(9_951, 10_001))
    assert window[-1].message.content == "m9999"
    (query,) = [s for s in statements if "FROM messages" in s]
    assert "ORDER BY messages.seq DESC" in query
    assert "LIMIT" in query
    assert elapsed < 5  # generous: the point is the query shape above


async def test_older_pages_read_back_from_a_message_number(store: SQLStore) -> None:
    session = await new_session(store)
    sid = session.session_id
    await store.append_messages(sid, [UserMessage(content=f"m{i}") for i in range(1, 121)])
    page = await store.load_records(sid, before_seq=71, limit=30)
    assert [r.seq for r in page] == list(range(41, 71))
    first = await store.load_records(sid, before_seq=11, limit=30)
    assert [r.seq for r in first] == list(range(1, 11))
    assert await store.load_records(sid, before_seq=1, limit=30) == []
    between = await store.load_records(sid, after_seq=5, before_seq=9)
    assert [r.message.content for r in between] == ["m6", "m7", "m8"]


async def test_sqlite_statements_run_on_worker_threads_one_call_each(tmp_path: Any) -> None:
    import threading

    store = SQLStore(f"sqlite:///{tmp_path / 'w.db'}")
    await store.open()
    seen: list[tuple[str, str]] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((threading.current_thread().name, statement.split()[0]))

    event.listen(store.statement_engine, "before_cursor_execute", capture)
    try:
        session = await new_session(store)
        await store.append_messages(session.session_id, [UserMessage(content="hi")])
        records = await store.load_records(session.session_id)
    finally:
        await store.close()
    assert [r.message.content for r in records] == ["hi"]
    assert seen and all(name.startswith("sqlite") for name, _ in seen)
    assert threading.current_thread().name not in {name for name, _ in seen}


async def test_many_transactions_at_once_never_wait_for_each_other(store: SQLStore) -> None:
    # Each read keeps its connection between its statement and its end: more of them at
    # once than a pool would hold must still all finish (on SQLite, the worker threads take
    # the connections, so a bounded pool would leave them waiting for each other).
    session = await new_session(store)
    await store.append_messages(session.session_id, [UserMessage(content="hi")])
    reads = [store.load_records(session.session_id) for _ in range(120)]
    pages = await asyncio.wait_for(asyncio.gather(*reads), 60)
    assert all([r.message.content for r in page] == ["hi"] for page in pages)


async def test_delete_removes_messages_tasks_and_todos(store: SQLStore) -> None:
    session = await new_session(store)
    sid = session.session_id
    await store.append_messages(sid, [UserMessage(content="hi")])
    await store.record_task(Task(session_id=sid), None)
    await store.save_todos(sid, [TodoRecord("write tests", "pending")])
    assert await store.delete_session(sid)
    assert await store.load_records(sid) == []
    assert await store.load_tasks(sid) == []
    assert await store.load_todos(sid) == []
    assert not await store.delete_session(sid)
    assert await store.integrity_check() == []


async def test_expired_lease_marks_the_task_and_its_partial_answer_interrupted(
    store: SQLStore,
) -> None:
    session = await new_session(store)
    sid = session.session_id
    task = Task(session_id=sid, state=TaskState.RUNNING)
    live = Task(session_id=sid, state=TaskState.RUNNING)
    other = SQLStore.__new__(SQLStore)  # same database, another process's identity
    other.__dict__.update(store.__dict__)
    other.owner = "elsewhere:1:abc"
    await other.record_task(task, lease_until=time.time() - 1)  # expired
    await other.record_task(live, lease_until=time.time() + 60)  # still held
    await store.append_messages(sid, [UserMessage(content="q")], task_id=task.task_id)
    await store.checkpoint(sid, task.task_id, "half an ans")
    assert await store.recover() == [task.task_id]
    states = {t.task_id: t.state for t in await store.load_tasks(sid)}
    assert states == {task.task_id: "interrupted", live.task_id: "running"}
    last = (await store.load_records(sid))[-1]
    assert last.status == "interrupted"
    assert last.message.content == "half an ans"
    assert await store.recover() == []


async def test_a_dead_local_process_releases_its_lease_at_once(store: SQLStore) -> None:
    session = await new_session(store)
    task = Task(session_id=session.session_id, state=TaskState.RUNNING)
    other = SQLStore.__new__(SQLStore)
    other.__dict__.update(store.__dict__)
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    assert not os.path.exists(f"/proc/{dead_pid}")
    other.owner = f"{socket.gethostname()}:{dead_pid}:x"
    await other.record_task(task, lease_until=time.time() + 60)
    assert await store.recover() == [task.task_id]


async def test_todos_and_compaction_state(store: SQLStore) -> None:
    session = await new_session(store)
    sid = session.session_id
    items = [
        TodoRecord("a", "completed"),
        TodoRecord("b", "in_progress"),
        TodoRecord("c", "pending"),
    ]
    await store.save_todos(sid, items)
    assert [(t.content, t.status, t.position) for t in await store.load_todos(sid)] == [
        ("a", "completed", 0),
        ("b", "in_progress", 1),
        ("c", "pending", 2),
    ]
    await store.save_compaction(sid, {"summary": "s", "covers": 10})
    assert await store.load_compaction(sid) == {"summary": "s", "covers": 10}


async def test_an_unreachable_database_is_a_clear_error() -> None:
    from agent_template.errors import StorageUnavailableError

    store = SQLStore("postgresql+asyncpg://ada:secret@127.0.0.1:1/nowhere")
    with pytest.raises(StorageUnavailableError) as info:
        await store.load_session("s")
    message = str(info.value)
    assert "DATABASE_URL=postgresql+asyncpg://ada:***@127.0.0.1:1/nowhere" in message
    assert "secret" not in message
    assert "Check that it is running" in message


async def test_an_unknown_postgres_database_is_a_clear_error() -> None:
    from agent_template.errors import StorageUnavailableError
    from tests.conftest import DEFAULT_TEST_DATABASE_URL

    base = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    url = base.rsplit("/", 1)[0] + "/no_such_database_here"
    store = SQLStore(url)
    try:
        await store.open()
    except StorageUnavailableError as exc:
        assert 'database "no_such_database_here" does not exist' in str(exc)
    else:  # pragma: no cover - only if someone created it
        pytest.fail("opened a database that should not exist")


async def test_concurrent_first_calls_share_one_engine_and_leak_no_connection(
    store: SQLStore,
) -> None:
    import gc
    import warnings

    fresh = SQLStore(store.url, connect_args=store._connect_args, migrate=False)
    engines = await asyncio.gather(*(fresh.open() for _ in range(5)))
    assert all(e is engines[0] for e in engines)
    other = SQLStore(store.url, connect_args=store._connect_args, migrate=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await asyncio.gather(*(other.load_session("nope") for _ in range(9)))
        await other.close()
        await fresh.close()
        gc.collect()
    assert not [w for w in caught if "before being closed" in str(w.message)]
