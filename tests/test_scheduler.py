"""The scheduler's task lifecycle: every stream's outcome, children, one run per session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_template.core.bus import InProcessEventBus
from agent_template.core.scheduler import TaskScheduler
from agent_template.errors import StreamNotFoundError, TaskNotFoundError
from agent_template.models import (
    DoneEvent,
    ErrorEvent,
    RunQueued,
    Task,
    TaskState,
    TextDelta,
)


async def chat(task: Task) -> AsyncIterator[Any]:
    yield TextDelta(text="hi")
    await asyncio.sleep(0.01)
    yield DoneEvent(status="completed", output="hi")


def loop_with(**handlers: Any) -> TaskScheduler:
    return TaskScheduler(max_concurrent_tasks=1, handlers=handlers, bus=InProcessEventBus())


async def types_of(loop: TaskScheduler, task: Task) -> list[str]:
    return [c.type async for c in loop.subscribe(task.task_id)]


async def test_a_task_cancelled_before_its_first_step_frees_its_slot() -> None:
    loop = loop_with(chat=chat)
    first = await loop.create_task({"type": "chat"})
    await loop.cancel_task(first.task_id)  # its runner has not run a single step yet
    assert first.state is TaskState.CANCELLED
    assert loop.running_count == 0
    second = await loop.create_task({"type": "chat"})
    async with asyncio.timeout(2):
        await loop.wait(second.task_id)
        await loop.wait(first.task_id)
    assert second.state is TaskState.COMPLETED
    assert await types_of(loop, first) == ["done"]


async def test_a_failing_handler_tells_its_stream_how_it_ended() -> None:
    async def broken(task: Task) -> None:
        raise RuntimeError("storage down")

    loop = loop_with(chat=broken)
    task = await loop.create_task({"type": "chat"})
    consumer = loop.subscribe(task.task_id)
    chunks = [c async for c in consumer]
    assert [c.type for c in chunks] == ["error", "done"]
    assert isinstance(chunks[0].event, ErrorEvent)
    assert "storage down" in chunks[0].event.message
    assert chunks[1].event.status == "failed"
    assert task.state is TaskState.FAILED


async def test_every_stream_ends_with_one_done_chunk_carrying_the_final_state() -> None:
    gate = asyncio.Event()

    async def long(task: Task) -> AsyncIterator[Any]:
        yield TextDelta(text="a")
        await gate.wait()
        yield DoneEvent(status="completed", output="a")

    loop = TaskScheduler(max_concurrent_tasks=2, handlers={"chat": chat, "long": long})
    done = await loop.create_task({"type": "chat"})
    cancelled = await loop.create_task({"type": "long"})
    await loop.subscribe(cancelled.task_id).__anext__()  # it has started streaming
    await loop.cancel_task(cancelled.task_id)
    await loop.wait(done.task_id)
    finals = {}
    for task in (done, cancelled):
        chunks = [c async for c in loop.subscribe(task.task_id)]
        assert [c.type for c in chunks].count("done") == 1
        assert chunks[-1].type == "done"
        finals[task.task_id] = chunks[-1].event.status
    assert finals == {done.task_id: "completed", cancelled.task_id: "cancelled"}


async def test_a_waiting_parent_lends_its_slot_to_its_child_and_takes_it_with_it() -> None:
    loop: TaskScheduler | None = None
    child_started = asyncio.Event()

    async def child(task: Task) -> str:
        child_started.set()
        await asyncio.sleep(0.01 if task.payload.get("quick") else 60)
        return "child done"

    async def parent(task: Task) -> Any:
        assert loop is not None
        made = await loop.create_task(
            {"type": "child", "parent_id": task.task_id, "quick": task.payload["quick"]}
        )
        await loop.wait(made.task_id)
        return made.result

    loop = TaskScheduler(
        max_concurrent_tasks=1, handlers={"parent": parent, "child": child}, bus=InProcessEventBus()
    )
    quick = await loop.create_task({"type": "parent", "user_id": "u1", "quick": True})
    async with asyncio.timeout(2):  # the only slot is the parent's: no deadlock
        await loop.wait(quick.task_id)
    assert (quick.state, quick.result) == (TaskState.COMPLETED, "child done")
    (kid,) = loop.list_tasks(parent_id=quick.task_id)
    assert kid.user_id == "u1"  # a child belongs to its parent's user
    assert loop.peak_running == 1  # lending never ran more than the limit at once

    child_started.clear()
    slow = await loop.create_task({"type": "parent", "quick": False})
    await child_started.wait()
    await loop.cancel_task(slow.task_id)
    (slow_kid,) = loop.list_tasks(parent_id=slow.task_id)
    assert slow.state is TaskState.CANCELLED
    assert slow_kid.state is TaskState.CANCELLED  # cancelled with its parent
    assert loop.running_count == 0


async def test_runs_on_one_session_take_turns_in_order_and_say_they_wait() -> None:
    order: list[str] = []

    async def turn(task: Task) -> AsyncIterator[Any]:
        name = task.payload["name"]
        order.append(f"{name} starts")
        yield TextDelta(text=name)
        await asyncio.sleep(0.02)
        order.append(f"{name} ends")
        yield DoneEvent(status="completed", output=name)

    loop = TaskScheduler(max_concurrent_tasks=5, handlers={"chat": turn})
    a = await loop.create_task({"type": "chat", "session_id": "s", "name": "a"})
    b = await loop.create_task({"type": "chat", "session_id": "s", "name": "b"})
    c = await loop.create_task({"type": "chat", "session_id": "s", "name": "c"})
    other = await loop.create_task({"type": "chat", "session_id": "t", "name": "x"})
    first_of_b = await loop.subscribe(b.task_id).__anext__()
    assert isinstance(first_of_b.event, RunQueued)
    assert (first_of_b.event.holder, first_of_b.event.ahead) == (a.task_id, 1)
    await loop.run()
    assert order[:2] == ["a starts", "x starts"]  # another session does not wait
    mine = [o for o in order if not o.startswith("x")]
    assert mine == ["a starts", "a ends", "b starts", "b ends", "c starts", "c ends"]
    assert all(t.state is TaskState.COMPLETED for t in (a, b, c, other))


async def test_a_run_waiting_for_its_session_can_be_cancelled() -> None:
    gate = asyncio.Event()

    async def held(task: Task) -> AsyncIterator[Any]:
        await gate.wait()
        yield DoneEvent(status="completed", output="")

    loop = TaskScheduler(handlers={"chat": held})
    first = await loop.create_task({"type": "chat", "session_id": "s"})
    waiting = await loop.create_task({"type": "chat", "session_id": "s"})
    third = await loop.create_task({"type": "chat", "session_id": "s"})
    await loop.cancel_task(waiting.task_id)
    assert waiting.state is TaskState.CANCELLED
    assert await types_of(loop, waiting) == ["queued", "done"]
    gate.set()
    await loop.run()
    assert (first.state, third.state) == (TaskState.COMPLETED, TaskState.COMPLETED)
    assert loop.stats()["sessions_busy"] == 0


async def test_a_child_on_its_parents_session_runs_within_the_parents_turn() -> None:
    loop: TaskScheduler | None = None

    async def sub(task: Task) -> str:
        return "sub"

    async def parent(task: Task) -> Any:
        assert loop is not None
        made = await loop.create_task(
            {"type": "chat", "session_id": task.session_id, "parent_id": task.task_id, "sub": 1}
        )
        await loop.wait(made.task_id)
        return made.result

    async def route(task: Task) -> Any:
        return await (sub(task) if task.payload.get("sub") else parent(task))

    loop = TaskScheduler(handlers={"chat": route}, bus=InProcessEventBus())
    task = await loop.create_task({"type": "chat", "session_id": "s"})
    async with asyncio.timeout(2):
        await loop.wait(task.task_id)
    assert task.result == "sub"


async def test_tasks_and_their_streams_belong_to_their_user() -> None:
    loop = loop_with(chat=chat)
    task = await loop.create_task({"type": "chat", "user_id": "alice"})
    assert loop.get_task(task.task_id, user_id="alice") is task
    with pytest.raises(TaskNotFoundError):
        loop.get_task(task.task_id, user_id="bob")
    with pytest.raises(TaskNotFoundError):
        await loop.cancel_task(task.task_id, user_id="bob")
    with pytest.raises(StreamNotFoundError):
        loop.subscribe(task.task_id, user_id="bob")
    assert loop.list_tasks(user_id="bob") == []
    assert loop.list_tasks(user_id="alice") == [task]
    ownerless = await loop.create_task({"type": "chat"})  # a trusted caller's: nobody's
    with pytest.raises(TaskNotFoundError):
        loop.get_task(ownerless.task_id, user_id="bob")
    with pytest.raises(StreamNotFoundError):
        loop.subscribe(ownerless.task_id, user_id="bob")
    assert loop.get_task(ownerless.task_id) is ownerless
    await loop.run()


async def test_stop_interrupts_waiting_runs_and_says_so_on_their_streams() -> None:
    gate = asyncio.Event()

    started = asyncio.Event()

    async def held(task: Task) -> AsyncIterator[Any]:
        started.set()
        await gate.wait()
        yield DoneEvent(status="completed", output="")

    loop = TaskScheduler(handlers={"chat": held})
    running = await loop.create_task({"type": "chat", "session_id": "s"})
    queued = await loop.create_task({"type": "chat", "session_id": "s"})
    await started.wait()
    await loop.stop(deadline=0.05)
    assert (running.state, queued.state) == (TaskState.INTERRUPTED, TaskState.INTERRUPTED)
    chunks = [c async for c in loop.subscribe(queued.task_id)]
    assert chunks[-1].event.status == "interrupted"


async def test_whoever_waits_for_a_parent_finds_its_children_ended_too() -> None:
    loop: TaskScheduler | None = None
    child_started = asyncio.Event()

    async def child(task: Task) -> str:
        child_started.set()
        await asyncio.Event().wait()
        return "never"

    async def parent(task: Task) -> str:
        assert loop is not None
        await loop.create_task({"type": "child", "parent_id": task.task_id})
        await child_started.wait()
        return "parent done"  # returns without waiting for its child

    loop = TaskScheduler(
        max_concurrent_tasks=2, handlers={"parent": parent, "child": child}, bus=InProcessEventBus()
    )
    task = await loop.create_task({"type": "parent"})
    async with asyncio.timeout(2):
        await loop.wait(task.task_id)
    (kid,) = loop.list_tasks(parent_id=task.task_id)
    assert kid.state is TaskState.CANCELLED  # already, when the wait returns
    assert loop.running_count == 0
