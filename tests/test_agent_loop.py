"""AgentLoop: priorities, the concurrency limit, fairness, cancellation, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_template import AgentLoop, SessionManager, StreamGenerator
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.core.scheduler import TaskScheduler as Scheduler
from agent_template.core.stream_store import MemoryStreamStore
from agent_template.errors import ConfigurationError, StreamNotFoundError, TaskNotFoundError
from agent_template.models import (
    AssistantMessage,
    DoneEvent,
    Task,
    TaskState,
    TaskStateChanged,
    TextDelta,
)
from agent_template.services.providers.offline import TestProvider
from agent_template.services.session_manager import MemorySessionStore


def scheduler(
    limit: int = 2, **kwargs: Any
) -> tuple[Scheduler, list[str], dict[str, asyncio.Event]]:
    """A scheduler whose ``job`` tasks wait on a per-task gate and record their start."""
    started: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    async def job(task: Task) -> str:
        name = task.payload["name"]
        started.append(name)
        await gates.setdefault(name, asyncio.Event()).wait()
        return name

    loop = Scheduler(
        max_concurrent_tasks=limit, handlers={"job": job}, bus=InProcessEventBus(), **kwargs
    )
    return loop, started, gates


async def until(predicate: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_priority_order_and_fifo_within_a_priority() -> None:
    loop, started, gates = scheduler(limit=1)
    blocker = await loop.create_task({"type": "job", "name": "blocker"})
    for name, prio in [("low1", 0), ("high1", 2), ("normal", 1), ("high2", 2), ("low2", 0)]:
        await loop.create_task({"type": "job", "name": name, "priority": prio})
    for name in ["blocker", "high1", "high2", "normal", "low1", "low2"]:
        gates.setdefault(name, asyncio.Event()).set()
    await loop.run()
    assert started == ["blocker", "high1", "high2", "normal", "low1", "low2"]
    assert loop.get_task(blocker.task_id).state is TaskState.COMPLETED
    assert loop.get_task(blocker.task_id).result == "blocker"


async def test_concurrency_limit_is_never_exceeded_under_load() -> None:
    running = 0
    peak = 0

    async def work(task: Task) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (task.payload["i"] % 3))
        running -= 1

    loop = Scheduler(max_concurrent_tasks=5, handlers={"w": work}, bus=InProcessEventBus())
    tasks = [await loop.create_task({"type": "w", "i": i}) for i in range(200)]
    await loop.run()
    assert peak == 5
    assert loop.peak_running == 5
    assert all(t.state is TaskState.COMPLETED for t in tasks)


async def test_low_priority_is_not_starved() -> None:
    loop, started, gates = scheduler(limit=1, aging_s=0.02)
    await loop.create_task({"type": "job", "name": "first"})
    await loop.create_task({"type": "job", "name": "old-low", "priority": "low"})
    await asyncio.sleep(0.1)  # the low task has now waited five aging periods
    for i in range(3):
        await loop.create_task({"type": "job", "name": f"new-high{i}", "priority": "high"})
    for name in ["first", "old-low", "new-high0", "new-high1", "new-high2"]:
        gates.setdefault(name, asyncio.Event()).set()
    await loop.run()
    assert started[:2] == ["first", "old-low"]


async def test_cancel_pending_never_starts_and_running_stops_promptly() -> None:
    loop, started, _ = scheduler(limit=1)
    running = await loop.create_task({"type": "job", "name": "running"})
    pending = await loop.create_task({"type": "job", "name": "pending"})
    await until(lambda: started == ["running"])
    await loop.cancel_task(pending.task_id)
    assert pending.state is TaskState.CANCELLED
    await loop.cancel_task(running.task_id)
    assert running.state is TaskState.CANCELLED
    await loop.run()
    assert started == ["running"]
    with pytest.raises(TaskNotFoundError):
        loop.get_task("nope")


async def test_every_state_change_is_an_event() -> None:
    bus = InProcessEventBus()
    seen: list[tuple[str, str | None, str]] = []

    def record(event: Any) -> None:
        if isinstance(event, TaskStateChanged):
            seen.append((event.task.payload["name"], event.previous, event.task.state))

    bus.add_listener(record)
    loop = Scheduler(handlers={"job": _instant}, bus=bus)
    await loop.create_task({"type": "job", "name": "a"})
    await loop.run()
    assert seen == [
        ("a", None, "pending"),
        ("a", "pending", "running"),
        ("a", "running", "completed"),
    ]


async def _instant(task: Task) -> str:
    return "ok"


async def test_list_by_session_and_state() -> None:
    loop, _, gates = scheduler(limit=1)
    a = await loop.create_task({"type": "job", "name": "a", "session_id": "s1"})
    b = await loop.create_task({"type": "job", "name": "b", "session_id": "s2"})
    assert loop.list_tasks(session_id="s1") == [a]
    assert loop.list_tasks(state="pending") == [b]
    assert loop.list_tasks(state=[TaskState.RUNNING, TaskState.PENDING]) == [a, b]
    gates.setdefault("a", asyncio.Event()).set()
    gates.setdefault("b", asyncio.Event()).set()
    await loop.run()
    assert loop.stats()["tasks_by_state"] == {"completed": 2}


async def test_unknown_task_type_is_rejected() -> None:
    loop = Scheduler(handlers={}, bus=InProcessEventBus())
    with pytest.raises(ConfigurationError, match="No handler for task type 'chat'"):
        await loop.create_task({"type": "chat"})


async def test_failing_handler_fails_only_its_task() -> None:
    async def boom(task: Task) -> None:
        raise RuntimeError("kaput")

    loop = Scheduler(handlers={"boom": boom, "ok": _instant}, bus=InProcessEventBus())
    bad = await loop.create_task({"type": "boom"})
    good = await loop.create_task({"type": "ok"})
    await loop.run()
    assert bad.state is TaskState.FAILED
    assert bad.error == "RuntimeError: kaput"
    assert good.state is TaskState.COMPLETED


async def test_shutdown_deadline_interrupts_the_rest() -> None:
    loop, started, gates = scheduler(limit=2)
    quick = await loop.create_task({"type": "job", "name": "quick"})
    stuck = await loop.create_task({"type": "job", "name": "stuck"})
    never = await loop.create_task({"type": "job", "name": "never"})
    await until(lambda: len(started) == 2)

    async def finish_quick() -> None:
        await asyncio.sleep(0.01)
        gates["quick"].set()

    helper = asyncio.create_task(finish_quick())
    await loop.stop(deadline=0.2)
    await helper
    assert quick.state is TaskState.COMPLETED
    assert stuck.state is TaskState.INTERRUPTED
    assert never.state is TaskState.INTERRUPTED
    assert started == ["quick", "stuck"]
    with pytest.raises(ConfigurationError, match="shutting down"):
        await loop.create_task({"type": "job", "name": "late"})


# --------------------------------------------------------------------------- chat tasks


def chat_loop(model: Any, **kwargs: Any) -> AgentLoop:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    sessions = SessionManager(store=MemorySessionStore())
    return AgentLoop(
        settings, model=model, session_manager=sessions, bus=InProcessEventBus(), **kwargs
    )


async def test_chat_task_streams_and_persists_the_turn() -> None:
    loop = chat_loop(TestProvider(["Hi there, friend."]))
    session = await loop.sessions.create_session(user_id="u1")
    task = await loop.create_task(
        {"type": "chat", "message": "hello", "session_id": session.session_id}
    )
    chunks = [c async for c in StreamGenerator().process_stream("stream_1", task)]
    assert "".join(c.content for c in chunks) == "Hi there, friend."
    assert isinstance(chunks[-1].event, DoneEvent)
    await loop.run()
    assert task.state is TaskState.COMPLETED
    assert task.result == "Hi there, friend."
    stored = await loop.sessions.get_messages(session.session_id)
    assert [m.role for m in stored] == ["user", "assistant"]


async def test_chat_task_continues_the_session() -> None:
    model = TestProvider(["one", "two"])
    loop = chat_loop(model)
    session = await loop.sessions.create_session("u1")
    for text in ["first", "second"]:
        task = await loop.create_task({"message": text, "session_id": session.session_id})
        async with asyncio.timeout(2):
            await loop.wait(task.task_id)
    sent = [getattr(m, "content", "") for m in model.requests[1].messages]
    assert sent[1:] == ["first", "one", "second"]


async def test_cancelling_a_chat_task_keeps_the_partial_answer() -> None:
    loop = chat_loop(TestProvider([" ".join(["word"] * 2000)], delay=0.001))
    session = await loop.sessions.create_session("u1")
    task = await loop.create_task({"message": "talk", "session_id": session.session_id})
    consumer = loop.subscribe(task.task_id)
    first = await consumer.__anext__()
    assert isinstance(first.event, TextDelta)
    await loop.cancel_task(task.task_id)
    assert task.state is TaskState.CANCELLED
    stored = await loop.sessions.get_messages(session.session_id)
    partial = stored[-1]
    assert isinstance(partial, AssistantMessage)
    assert partial.status == "cancelled"
    assert partial.content.startswith("word")
    rest = [c async for c in consumer]  # the stream ended: the consumer is not left hanging
    assert "".join(c.content for c in [first, *rest]) == partial.content


async def test_many_concurrent_chats_respect_the_limit() -> None:
    async def slow_stream(task: Task) -> AsyncIterator[Any]:
        yield TextDelta(text="x")
        await asyncio.sleep(0.01)
        yield DoneEvent(status="completed", output="x")

    loop = Scheduler(max_concurrent_tasks=10, handlers={"s": slow_stream}, bus=InProcessEventBus())
    tasks = [await loop.create_task({"type": "s"}) for _ in range(100)]
    await loop.run()
    assert loop.peak_running == 10
    assert all(t.result == "x" for t in tasks)


async def test_old_finished_streams_are_released() -> None:
    store = MemoryStreamStore(max_streams=3)
    loop = Scheduler(handlers={"job": _instant}, bus=InProcessEventBus(), streams=store)
    tasks = [await loop.create_task({"type": "job", "name": str(i)}) for i in range(5)]
    await loop.run()
    assert [t.task_id in store for t in tasks] == [False, False, True, True, True]
    assert loop.get_task(tasks[0].task_id).state is TaskState.COMPLETED  # the task itself stays
    assert (await loop.wait(tasks[0].task_id)).result == "ok"
    with pytest.raises(StreamNotFoundError):
        StreamGenerator(store).process_stream("late", tasks[0])


async def test_a_loop_without_its_own_store_shares_one_built_from_its_settings() -> None:
    settings = Settings(_env_file=None, stream_retain_chunks=7, stream_linger=1.5)  # type: ignore[call-arg]
    loop = AgentLoop(
        settings,
        model=TestProvider(["hi"]),
        session_manager=SessionManager(store=MemorySessionStore()),
        bus=InProcessEventBus(),
    )
    assert StreamGenerator().store is loop.streams  # the spec's StreamGenerator() finds tasks
    assert isinstance(loop.streams, MemoryStreamStore)
    assert (loop.streams.retain, loop.streams.linger_s) == (7, 1.5)
