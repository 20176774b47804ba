"""The session run lease, task ownership and recovery, on real SQLite and PostgreSQL.

"Another process" is a second SQLStore on the same database with its own engine and its own
owner string, which is all that tells two processes apart in the tables.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from agent_template.errors import SessionNotFoundError
from agent_template.models import Session, Task, TaskState, UserMessage
from agent_template.services.storage import MemorySessionStore, SQLStore
from agent_template.services.storage import schema as s

DEAD_PID = 2**22 + 12345  # above the default pid_max: no such process


def dead_owner() -> str:
    assert not os.path.exists(f"/proc/{DEAD_PID}")
    return f"{socket.gethostname()}:{DEAD_PID}:x"


@pytest.fixture
async def other_process(store: SQLStore) -> AsyncIterator[Callable[[str], SQLStore]]:
    """Build stores on the same database that pose as other processes (by owner string)."""
    made: list[SQLStore] = []

    def make(owner: str = "elsewhere:1:abc") -> SQLStore:
        twin = SQLStore(store.url, connect_args=store._connect_args, migrate=False)
        twin.owner = owner
        made.append(twin)
        return twin

    yield make
    for twin in made:
        await twin.close()


async def new_session(store: Any, session_id: str = "s1") -> str:
    await store.save_session(Session(session_id=session_id, user_id="ada"))
    return session_id


async def rows(store: SQLStore, table: Any) -> int:
    engine = await store.open()
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


# --------------------------------------------------------------------------- the run lease


async def test_one_holder_at_a_time_and_release(store: SQLStore) -> None:
    sid = await new_session(store)
    later = time.time() + 60
    assert await store.acquire_run(sid, "t1", later)
    assert await store.run_holder(sid) == "t1"
    assert not await store.acquire_run(sid, "t2", later)
    assert await store.acquire_run(sid, "t1", later + 60)  # the holder extends it
    await store.release_run(sid, "t2")  # not the holder: nothing happens
    assert await store.run_holder(sid) == "t1"
    await store.release_run(sid, "t1")
    assert await store.run_holder(sid) is None
    assert await store.acquire_run(sid, "t2", later)
    assert await store.run_holder(sid) == "t2"


async def test_a_missing_session_cannot_be_leased(store: SQLStore) -> None:
    with pytest.raises(SessionNotFoundError):  # not "held elsewhere": nobody would ever free it
        await store.acquire_run("no-such-session", "t1", time.time() + 60)
    assert await store.run_holder("no-such-session") is None


async def test_an_expired_lease_is_free(store: SQLStore, other_process: Any) -> None:
    sid = await new_session(store)
    assert await other_process().acquire_run(sid, "t1", time.time() - 1)
    assert await store.run_holder(sid) is None
    assert await store.acquire_run(sid, "t2", time.time() + 60)


async def test_a_dead_local_holder_frees_the_lease_at_once(
    store: SQLStore, other_process: Any
) -> None:
    sid = await new_session(store)
    assert await other_process(dead_owner()).acquire_run(sid, "t1", time.time() + 60)
    assert await store.run_holder(sid) is None
    assert await store.acquire_run(sid, "t2", time.time() + 60)
    assert await store.run_holder(sid) == "t2"
    # A holder on another host is never presumed dead, however its pid looks here.
    sid2 = await new_session(store, "s2")
    assert await other_process(f"other-host:{DEAD_PID}:x").acquire_run(sid2, "t3", time.time() + 60)
    assert not await store.acquire_run(sid2, "t4", time.time() + 60)


@pytest.mark.parametrize("held_by", ["nobody", "a dead process"])
async def test_racing_processes_never_both_win(
    store: SQLStore, other_process: Any, held_by: str
) -> None:
    sid = await new_session(store)
    if held_by != "nobody":
        assert await other_process(dead_owner()).acquire_run(sid, "t0", time.time() + 60)
    racers = [store, other_process("host-a:1:a"), other_process("host-b:2:b")]
    until = time.time() + 60
    won = await asyncio.gather(
        *(racers[i % 3].acquire_run(sid, f"t{i + 1}", until) for i in range(21))
    )
    assert won.count(True) == 1
    assert await store.run_holder(sid) == f"t{won.index(True) + 1}"


async def test_an_older_waiting_task_of_the_session_goes_first(
    store: SQLStore, other_process: Any
) -> None:
    sid = await new_session(store)
    now = time.time()
    elsewhere = other_process()
    older = Task(session_id=sid, created_at=now - 10)
    newer = Task(session_id=sid, created_at=now)
    await elsewhere.record_task(older, now + 60)  # pending, leased by a live process
    await store.record_task(newer, now + 60)
    assert not await store.acquire_run(sid, newer.task_id, now + 60)
    assert await store.run_holder(sid) is None  # refused although nobody holds it

    assert await elsewhere.acquire_run(sid, older.task_id, now + 60)
    older.state = TaskState.COMPLETED
    await elsewhere.record_task(older, None)
    await elsewhere.release_run(sid, older.task_id)
    assert await store.acquire_run(sid, newer.task_id, now + 60)


async def test_waiters_that_do_not_count_for_first_come_first_served(
    store: SQLStore, other_process: Any
) -> None:
    sid = await new_session(store)
    now = time.time()
    ignored = [
        (Task(session_id=sid, created_at=now - 40), other_process(), now - 1),  # lease expired
        (Task(session_id=sid, created_at=now - 30), other_process(dead_owner()), now + 60),
        (Task(session_id=sid, type="summarize", created_at=now - 20), other_process(), now + 60),
        (Task(session_id=sid, created_at=now - 10), other_process(), None),  # no lease
    ]
    for task, owner, lease in ignored:
        await owner.record_task(task, lease)
    mine = Task(session_id=sid, created_at=now)
    await store.record_task(mine, now + 60)
    assert await store.acquire_run(sid, mine.task_id, now + 60)
    await store.release_run(sid, mine.task_id)
    # With the summaries counted, the summarize task comes first.
    assert not await store.acquire_run(sid, mine.task_id, now + 60, kinds=("chat", "summarize"))
    # A task without a row skips the check altogether.
    assert await store.acquire_run(sid, "no-row", now + 60, kinds=("chat", "summarize"))


async def test_renewing_task_leases_renews_the_session_lease(
    store: SQLStore, other_process: Any
) -> None:
    sid = await new_session(store)
    elsewhere = other_process()
    assert await store.acquire_run(sid, "t1", time.time() - 1)  # already expired
    lost = await elsewhere.renew_leases([], time.time() + 60, holding=["t1"])
    assert lost == {"t1"}  # not its lease: not renewed, and said so
    assert await store.run_holder(sid) is None
    assert await store.renew_leases([], time.time() + 60, holding=["t1"]) == set()
    assert await store.run_holder(sid) == "t1"
    assert not await elsewhere.acquire_run(sid, "t2", time.time() + 60)


async def test_renewing_reports_tasks_another_process_took_over_and_only_those(
    store: SQLStore, other_process: Any
) -> None:
    sid = await new_session(store)
    now = time.time()
    mine, recovered = Task(session_id=sid), Task(session_id=sid)
    await store.record_task(mine, now + 60)
    await store.record_task(recovered, now + 60)
    recovered.state = TaskState.INTERRUPTED  # what another process's recover() leaves
    await other_process().record_task(recovered, None)
    ids = [mine.task_id, recovered.task_id, "not-recorded-yet"]
    assert await store.renew_leases(ids, now + 60) == {recovered.task_id}


# --------------------------------------------------------------------------- tasks and recovery


async def test_tasks_keep_their_user_parent_and_a_pending_lease(store: SQLStore) -> None:
    sid = await new_session(store)
    parent = Task(session_id=sid, user_id="ada")
    child = Task(session_id=sid, type="subagent", user_id="ada", parent_id=parent.task_id)
    await store.record_task(parent, None)
    await store.record_task(child, time.time() + 60)  # pending, with a lease
    loaded = {t.task_id: t for t in await store.load_tasks(sid)}
    assert (loaded[parent.task_id].user_id, loaded[parent.task_id].parent_id) == ("ada", None)
    assert loaded[child.task_id].parent_id == parent.task_id
    assert loaded[child.task_id].lease_owner == store.owner
    assert loaded[parent.task_id].lease_owner is None

    child.state = TaskState.COMPLETED
    await store.record_task(child, None)  # an update, not a second row
    assert [t.state for t in await store.load_tasks(sid) if t.task_id == child.task_id] == [
        "completed"
    ]
    assert await rows(store, s.tasks) == 2


async def test_recovery_covers_pending_tasks_and_frees_their_sessions(
    store: SQLStore, other_process: Any
) -> None:
    sid = await new_session(store)
    now = time.time()
    crashed = other_process(dead_owner())
    running = Task(session_id=sid, state=TaskState.RUNNING)
    waiting = Task(session_id=sid)  # pending, leased by the same dead process
    await crashed.record_task(running, now + 60)
    await crashed.record_task(waiting, now + 60)
    assert await crashed.acquire_run(sid, running.task_id, now + 60)
    await store.checkpoint(sid, running.task_id, "half")

    assert sorted(await store.recover()) == sorted([running.task_id, waiting.task_id])
    assert {t.state for t in await store.load_tasks(sid)} == {"interrupted"}
    assert (await store.load_records(sid))[-1].status == "interrupted"
    engine = await store.open()
    async with engine.connect() as conn:
        lease = (
            await conn.execute(
                select(s.sessions.c.run_holder, s.sessions.c.run_owner).where(
                    s.sessions.c.id == sid
                )
            )
        ).one()
    assert tuple(lease) == (None, None)


async def test_recovery_interrupts_old_rows_without_a_lease_owner(store: SQLStore) -> None:
    sid = await new_session(store)
    now = time.time()
    old = Task(session_id=sid, created_at=now - 120)
    recent = Task(session_id=sid, created_at=now - 5)
    old_running = Task(session_id=sid, state=TaskState.RUNNING, created_at=now - 61)
    for task in (old, recent, old_running):
        await store.record_task(task, None)  # as a version without pending leases wrote them
    assert sorted(await store.recover(now)) == sorted([old.task_id, old_running.task_id])
    states = {t.task_id: t.state for t in await store.load_tasks(sid)}
    assert states[recent.task_id] == "pending"


async def test_deleting_a_leased_session_still_works(store: SQLStore) -> None:
    sid = await new_session(store)
    task = Task(session_id=sid)
    await store.record_task(task, time.time() + 60)
    assert await store.acquire_run(sid, task.task_id, time.time() + 60)
    assert await store.delete_session(sid)
    assert await store.run_holder(sid) is None
    assert await store.load_tasks(sid) == []


# --------------------------------------------------------------------------- creating sessions


async def test_concurrent_creation_of_one_new_session_makes_one_row(
    store: SQLStore, other_process: Any
) -> None:
    stores = [store, other_process(), other_process()]
    results = await asyncio.gather(
        *(
            stores[i % 3].create_session_if_absent(Session(session_id="new", user_id=f"u{i}"))
            for i in range(20)
        )
    )
    assert await rows(store, s.sessions) == 1
    owners = {r.user_id for r in results}
    assert len(owners) == 1  # everyone got the winner's row
    stored = await store.load_session("new")
    assert stored is not None and stored.user_id in owners
    await store.append_messages("new", [UserMessage(content="hi")])
    again = await store.create_session_if_absent(Session(session_id="new", user_id="late"))
    assert (again.user_id, again.message_count) == (stored.user_id, 1)


async def test_concurrent_saves_of_one_new_session_do_not_fail(
    store: SQLStore, other_process: Any
) -> None:
    stores = [store, other_process(), other_process()]
    for attempt in range(5):  # later rounds find every connection open: a tighter race
        sid = "new" if attempt == 0 else f"new{attempt}"
        await asyncio.gather(
            *(
                stores[i % 3].save_session(Session(session_id=sid, user_id="ada", title=f"t{i}"))
                for i in range(20)
            )
        )
    assert await rows(store, s.sessions) == 5
    await store.append_messages("new", [UserMessage(content="hi")])
    await store.save_session(Session(session_id="new", user_id="ada", title="renamed"))
    stored = await store.load_session("new")
    assert stored is not None
    assert (stored.title, stored.message_count) == ("renamed", 1)  # the count is kept


# --------------------------------------------------------------------------- in memory


async def test_memory_store_run_lease_and_create_if_absent() -> None:
    store = MemorySessionStore()
    now = time.time()
    with pytest.raises(SessionNotFoundError):  # no such session
        await store.acquire_run("s1", "t1", now + 60)
    first = await store.create_session_if_absent(Session(session_id="s1", user_id="ada"))
    second = await store.create_session_if_absent(Session(session_id="s1", user_id="bob"))
    assert first.user_id == second.user_id == "ada"

    older, newer = Task(session_id="s1", created_at=now - 1), Task(session_id="s1")
    await store.record_task(older, now + 60)
    await store.record_task(newer, now + 60)
    assert not await store.acquire_run("s1", newer.task_id, now + 60)  # the older one first
    assert await store.acquire_run("s1", older.task_id, now - 1)  # expired at once
    assert await store.run_holder("s1") is None
    await store.renew_leases([older.task_id], now + 60, holding=[older.task_id])
    assert await store.run_holder("s1") == older.task_id
    assert not await store.acquire_run("s1", "other", now + 60)
    await store.release_run("s1", "other")
    assert await store.run_holder("s1") == older.task_id
    await store.release_run("s1", older.task_id)
    assert await store.acquire_run("s1", "no-row", now + 60)
    loaded = {t.task_id: t for t in await store.load_tasks("s1")}
    assert loaded[newer.task_id].user_id is None
