"""One run per session: turns never interleave, within a process or across processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_template import AgentLoop, SessionManager, tool
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.core.stream_store import MemoryStreamStore
from agent_template.models import Message, TaskState, ToolResultMessage
from agent_template.services.providers.offline import TestProvider, TestTurn
from agent_template.services.storage import SQLStore
from tests.conftest import DEFAULT_TEST_DATABASE_URL, service_missing

SLOW_TOOLS = '''
import time
from agent_template import tool

@tool
def slow(x: int) -> int:
    """Wait a moment, then give x back."""
    time.sleep(0.3)
    return x
'''


def turns_of(history: list[Message]) -> list[list[Message]]:
    """The history cut at each user message."""
    turns: list[list[Message]] = []
    for message in history:
        if message.role == "user":
            turns.append([])
        turns[-1].append(message)
    return turns


def assert_contiguous_turns(history: list[Message], expected: int) -> None:
    turns = turns_of(history)
    assert len(turns) == expected, [m.role for m in history]
    for turn in turns:
        assert [m.role for m in turn] == ["user", "assistant", "tool", "assistant"]
        asked = turn[0].content
        result = turn[2]
        assert isinstance(result, ToolResultMessage)
        assert f'"x": {result.content}' in str(asked)  # this turn's tool answered this turn


@tool
async def slow(x: int) -> int:
    """Wait a moment, then give x back."""
    await asyncio.sleep(0.05)
    return x


def _script(request: Any) -> TestTurn:
    last = request.messages[-1]
    if last.role == "user":
        return TestTurn(tool_calls=[("slow", {"x": int(str(last.content).split()[-1])})])
    return TestTurn(text="done")


async def test_two_chat_tasks_on_one_session_take_turns(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, context_compression=False)  # type: ignore[call-arg]
    store = SQLStore(f"sqlite:///{tmp_path / 'agent.db'}")
    sessions = SessionManager(store=store)
    model = TestProvider(_script, delay=0.005)
    loop = AgentLoop(
        settings,
        model=model,
        tools=[slow],
        session_manager=sessions,
        todo_tools=False,
        bus=InProcessEventBus(),
        streams=MemoryStreamStore(),
    )
    session = await sessions.create_session("alice")
    tasks = [
        await loop.create_task(
            {"message": f"x: {i}", "session_id": session.session_id, "user_id": "alice"}
        )
        for i in range(3)
    ]
    await loop.run()
    assert all(t.state is TaskState.COMPLETED for t in tasks)
    history = await sessions.get_messages(session.session_id)
    turns = turns_of(history)
    assert [t[0].content for t in turns] == ["x: 0", "x: 1", "x: 2"]  # in the order asked
    for i, turn in enumerate(turns):
        assert [m.role for m in turn] == ["user", "assistant", "tool", "assistant"]
        assert turn[2].content == str(i)
    # Each run's first request carried the whole history the earlier runs left: the system
    # prompt, four messages per earlier turn, then its own question.
    firsts = [r for r in model.requests if r.messages[-1].role == "user"]
    assert [len(r.messages) for r in firsts] == [2, 6, 10]
    assert [r.messages[-1].content for r in firsts] == ["x: 0", "x: 1", "x: 2"]
    await sessions.close()


async def test_a_finished_run_frees_its_session_in_its_last_write(tmp_path: Path) -> None:
    from sqlalchemy import event

    settings = Settings(_env_file=None, context_compression=False)  # type: ignore[call-arg]
    store = SQLStore(f"sqlite:///{tmp_path / 'agent.db'}")
    sessions = SessionManager(store=store)
    loop = AgentLoop(
        settings,
        model=TestProvider(lambda request: "hello"),
        session_manager=sessions,
        todo_tools=False,
        bus=InProcessEventBus(),
        streams=MemoryStreamStore(),
    )
    session = await sessions.create_session("alice")
    writes: list[list[str]] = [[]]

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        writes[-1].append(" ".join(sql.split()[:3]))

    def commit(conn: Any) -> None:
        writes.append([])

    engine = store.statement_engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    spec = {"message": "hi", "session_id": session.session_id, "user_id": "alice"}
    task = await loop.create_task(spec)
    await loop.wait(task.task_id)
    assert task.state is TaskState.COMPLETED
    last = [w for w in writes if w][-1]
    assert last == ["INSERT INTO tasks", "UPDATE sessions SET"]  # the task, then the lease
    assert await store.run_holder(session.session_id) is None
    # The next run takes the session at once.
    again = await loop.create_task(spec)
    await asyncio.wait_for(loop.wait(again.task_id), 30)
    assert again.state is TaskState.COMPLETED
    await sessions.close()


@contextlib.asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    import asyncpg

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(plain, timeout=5)
    except Exception as exc:
        service_missing(f"PostgreSQL at {url}", exc)
    name = f"runs_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'agent.db'}"
    else:
        async with fresh_pg_database() as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_cli_runs_started_together_on_one_session_never_interleave(
    kind: str, tmp_path: Path
) -> None:
    (tmp_path / "slowtools.py").write_text(SLOW_TOOLS)
    async with database(kind, tmp_path) as url:
        env = {**os.environ, "DATABASE_URL": url, "DEFAULT_MODEL_PROVIDER": "test"}
        env.pop("REDIS_URL", None)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent_template.cli",
                    "run",
                    "--tools",
                    "slowtools",
                    "--session",
                    "S",
                    f'call slow {{"x": {i}}}',
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        store = SQLStore(url)
        try:
            history = [r.message for r in await store.load_records("S")]
        finally:
            await store.close()
    assert_contiguous_turns(history, expected=3)
    queued = [err for _, err in outputs if "waiting for" in err]
    assert queued  # at least one run said it waited its turn


async def test_a_run_waits_for_a_session_another_process_holds_and_can_be_cancelled(
    tmp_path: Path,
) -> None:
    from agent_template.core.scheduler import TaskScheduler
    from agent_template.models import DoneEvent, RunQueued, Session, Task, TextDelta

    url = f"sqlite:///{tmp_path / 'agent.db'}"
    here, there = SQLStore(url), SQLStore(url)  # two processes' stores on one database
    there.owner = "other-host:1:x"
    await here.save_session(Session(session_id="s", user_id="ada"))
    release = asyncio.Event()

    async def held(task: Task) -> AsyncIterator[Any]:
        yield TextDelta(text="busy")
        await release.wait()
        yield DoneEvent(status="completed", output="")

    async def quick(task: Task) -> AsyncIterator[Any]:
        yield DoneEvent(status="completed", output="mine")

    elsewhere = TaskScheduler(handlers={"chat": held}, task_store=there)
    local = TaskScheduler(handlers={"chat": quick}, task_store=here)
    try:
        first = await elsewhere.create_task({"type": "chat", "session_id": "s"})
        waiting = await local.create_task({"type": "chat", "session_id": "s"})
        queued = await local.subscribe(waiting.task_id).__anext__()
        assert isinstance(queued.event, RunQueued)
        assert queued.event.holder == first.task_id  # it knows whom it waits for
        assert waiting.state is TaskState.PENDING and local.running_count == 0  # no slot held
        given_up = await local.create_task({"type": "chat", "session_id": "s"})
        await local.cancel_task(given_up.task_id)  # a waiting run can be cancelled
        assert given_up.state is TaskState.CANCELLED
        release.set()
        async with asyncio.timeout(10):
            await local.wait(waiting.task_id)  # it took the session once the other let go
        assert (first.state, waiting.state) == (TaskState.COMPLETED, TaskState.COMPLETED)
        assert waiting.result == "mine"
    finally:
        await elsewhere.stop()
        await local.stop()
        await here.close()
        await there.close()


async def test_cancelling_a_run_that_polls_for_its_session(tmp_path: Path) -> None:
    from agent_template.core.scheduler import TaskScheduler
    from agent_template.models import DoneEvent, Session, Task

    url = f"sqlite:///{tmp_path / 'agent.db'}"
    here, there = SQLStore(url), SQLStore(url)
    there.owner = "other-host:1:x"
    await here.save_session(Session(session_id="s", user_id="ada"))
    assert await there.acquire_run("s", "held-elsewhere", time.time() + 60)

    async def never(task: Task) -> AsyncIterator[Any]:
        yield DoneEvent(status="completed", output="")

    local = TaskScheduler(handlers={"chat": never}, task_store=here)
    try:
        polling = await local.create_task({"type": "chat", "session_id": "s"})
        behind = await local.create_task({"type": "chat", "session_id": "s"})
        await asyncio.sleep(0.1)  # a few tries for the lease
        await local.cancel_task(polling.task_id)
        await local.cancel_task(behind.task_id)
        assert (polling.state, behind.state) == (TaskState.CANCELLED, TaskState.CANCELLED)
        assert local.pending_count == 0
        assert await here.run_holder("s") == "held-elsewhere"  # we never took it
    finally:
        await local.stop()
        await here.close()
        await there.close()


async def test_a_run_whose_session_was_taken_over_is_interrupted(tmp_path: Path) -> None:
    from sqlalchemy import update

    from agent_template.core.scheduler import TaskScheduler
    from agent_template.models import DoneEvent, Session, Task, TextDelta
    from agent_template.services.storage import schema

    store = SQLStore(f"sqlite:///{tmp_path / 'agent.db'}")
    await store.save_session(Session(session_id="s", user_id="ada"))
    started = asyncio.Event()

    async def long(task: Task) -> AsyncIterator[Any]:
        yield TextDelta(text="working")
        started.set()
        await asyncio.Event().wait()  # until stopped
        yield DoneEvent(status="completed", output="")

    loop = TaskScheduler(handlers={"chat": long}, task_store=store, lease_s=0.3)
    try:
        task = await loop.create_task({"type": "chat", "session_id": "s"})
        await started.wait()
        engine = await store.open()
        async with engine.begin() as conn:  # what a process that found the lease expired does
            await conn.execute(
                update(schema.sessions)
                .where(schema.sessions.c.id == "s")
                .values(run_holder="intruder", run_owner="other-host:1:x")
            )
        async with asyncio.timeout(5):
            await loop.wait(task.task_id)
        assert task.state is TaskState.INTERRUPTED  # it stopped rather than run beside it
        chunks = [c async for c in loop.subscribe(task.task_id)]
        assert chunks[-1].event.status == "interrupted"
        assert await store.run_holder("s") == "intruder"  # and it did not release theirs
    finally:
        await loop.stop()
        await store.close()


async def test_a_run_cancelled_while_its_session_lease_is_being_taken_stays_cancelled(
    tmp_path: Path,
) -> None:
    import sqlite3

    from agent_template.core.scheduler import TaskScheduler
    from agent_template.models import DoneEvent, Session, Task

    db = tmp_path / "agent.db"
    store = SQLStore(f"sqlite:///{db}")
    await store.save_session(Session(session_id="s", user_id="ada"))

    async def quick(task: Task) -> AsyncIterator[Any]:
        yield DoneEvent(status="completed", output="ok")

    loop = TaskScheduler(handlers={"chat": quick}, task_store=store)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process writing: our writes must wait
        doomed = Task(type="chat", session_id="s")
        creating = asyncio.create_task(loop.create_task(doomed))
        while doomed.task_id not in {t.task_id for t in loop.list_tasks()}:
            await asyncio.sleep(0.01)
        cancelling = asyncio.create_task(loop.cancel_task(doomed.task_id))
        await asyncio.sleep(0.05)  # the cancel has begun, while the creation waits on the lock
        blocker.execute("COMMIT")
        await creating
        await cancelling
        assert doomed.state is TaskState.CANCELLED
        assert loop.running_count == 0
        assert await store.run_holder("s") is None  # a lease it got meanwhile was given back
        after = await loop.create_task({"type": "chat", "session_id": "s"})
        async with asyncio.timeout(5):
            await loop.wait(after.task_id)
        assert after.result == "ok"
    finally:
        blocker.close()
        await loop.stop()
        await store.close()


async def test_a_run_on_a_session_that_does_not_exist_fails_instead_of_waiting(
    tmp_path: Path,
) -> None:
    from agent_template.core.scheduler import TaskScheduler
    from agent_template.models import DoneEvent, Task

    store = SQLStore(f"sqlite:///{tmp_path / 'agent.db'}")

    async def quick(task: Task) -> AsyncIterator[Any]:
        yield DoneEvent(status="completed", output="ok")

    loop = TaskScheduler(handlers={"chat": quick}, task_store=store)
    try:
        task = await loop.create_task({"type": "chat", "session_id": "gone"})
        async with asyncio.timeout(5):
            await loop.run()  # returns: nothing waits for ever
        assert task.state is TaskState.FAILED
        chunks = [c async for c in loop.subscribe(task.task_id)]
        assert chunks[-2].event.code == "session_not_found"
    finally:
        await loop.stop()
        await store.close()
