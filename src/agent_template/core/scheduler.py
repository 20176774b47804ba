"""TaskScheduler: the scheduler that runs tasks by priority within a concurrency limit.

Tasks (a chat turn, a tool call, a subagent run, a summarisation) are created with a priority
and started by :meth:`TaskScheduler._dispatch` whenever a slot frees, never exceeding
``max_concurrent_tasks``. Within a priority the order is FIFO; a task's effective priority
grows with its waiting time (one level per ``aging_s``), so a stream of urgent work cannot
starve low-priority tasks. Every state change is published on the event bus.

What a task does is decided by the handler registered for its ``type``: an async function that
returns a result, or an async generator of events that are published on the task's
:class:`~agent_template.core.stream_gen.ChunkStream` (the run loop's events, for a chat turn).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from pydantic import BaseModel

from agent_template.core.stream_gen import ChunkStream
from agent_template.errors import AgentTemplateError, ConfigurationError, TaskNotFoundError
from agent_template.models import (
    DoneEvent,
    ErrorEvent,
    Task,
    TaskPriority,
    TaskState,
    TaskStateChanged,
    TextDelta,
)

if TYPE_CHECKING:
    from agent_template.core.bus import EventBus
    from agent_template.core.hooks import HookRegistry

__all__ = ["TaskHandler", "TaskScheduler", "TaskStore"]


class TaskStore(Protocol):
    """Where task states are recorded; a running task holds a lease this process renews."""

    async def record_task(self, task: Task, lease_until: float | None) -> None: ...
    async def renew_leases(self, task_ids: Iterable[str], until: float) -> None: ...


# A handler returns events (an async iterator, possibly from a coroutine) or a result.
TaskHandler: TypeAlias = Callable[[Task], AsyncIterator[BaseModel] | Awaitable[Any]]

log = logging.getLogger("agent_template.agent_loop")

DEFAULT_AGING_S = 10.0  # a waiting task gains one priority level per this many seconds
DEFAULT_LEASE_S = 15.0  # a crashed process's running tasks are known dead this long after
DEFAULT_SHUTDOWN_S = 10.0
FINISHED_KEPT = 10_000  # finished tasks kept for get/list before the oldest are forgotten
STREAMS_KEPT = 1_000  # finished tasks whose chunks stay resumable, newest first
STREAM_LINGER_S = 300.0  # and for at most this long after the task finished
_YIELD_EVERY = 64  # events between forced yields, so a fast producer cannot starve readers


class TaskScheduler:
    """Runs tasks by priority, at most ``max_concurrent_tasks`` at once.

    Args:
        max_concurrent_tasks: the concurrency limit.
        handlers: task type -> handler.
        bus: where task state changes go; the process's default bus if omitted.
        hooks: ``task_state`` hooks are called on every change.
        aging_s: seconds of waiting that raise a task's effective priority by one level.
        retain_chunks: chunks each task's stream keeps for late readers.
        task_store: records every state change; running tasks hold a lease renewed every
            third of ``lease_s``, so another process can tell a crash from a long task.
    """

    def __init__(
        self,
        *,
        max_concurrent_tasks: int = 10,
        handlers: Mapping[str, TaskHandler] | None = None,
        bus: EventBus | None = None,
        hooks: HookRegistry | None = None,
        aging_s: float = DEFAULT_AGING_S,
        retain_chunks: int = 10_000,
        task_store: TaskStore | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if max_concurrent_tasks < 1:
            raise ConfigurationError("MAX_CONCURRENT_TASKS must be at least 1.")
        if bus is None:
            from agent_template.core.bus import default_bus

            bus = default_bus()
        self.bus = bus
        self.hooks = hooks
        self.max_concurrent_tasks = max_concurrent_tasks
        self.aging_s = aging_s
        self.retain_chunks = retain_chunks
        self._handlers: dict[str, TaskHandler] = dict(handlers or {})
        self._tasks: dict[str, Task] = {}
        self._finished: deque[str] = deque()
        self._kept_streams: deque[Task] = deque()
        self._pending: dict[int, deque[Task]] = {int(p): deque() for p in TaskPriority}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._accepting = True
        self._idle: asyncio.Event | None = None
        self.peak_running = 0
        self.chunks_dropped = 0  # by finished tasks' streams, for slow consumers
        self.task_store = task_store
        self.lease_s = lease_s
        self._renewer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ handlers

    def register_handler(self, task_type: str, handler: TaskHandler) -> None:
        self._handlers[task_type] = handler

    @property
    def handler_types(self) -> list[str]:
        return sorted(self._handlers)

    # ------------------------------------------------------------------ tasks

    async def create_task(
        self,
        spec: Mapping[str, Any] | Task,
        *,
        priority: TaskPriority | int | None = None,
        session_id: str | None = None,
    ) -> Task:
        """Queue a task and return it; it starts when a slot is free.

        ``spec`` is a :class:`Task` or a mapping with ``type`` (default ``chat``), optional
        ``priority``, ``session_id`` and ``parent_id``; other keys become the payload.

        Raises:
            ConfigurationError: no handler for the task type, or the loop is shutting down.
        """
        if not self._accepting:
            raise ConfigurationError("The agent loop is shutting down and takes no new tasks.")
        task = spec if isinstance(spec, Task) else _task_from(spec)
        if priority is not None:
            task.priority = TaskPriority(priority)
        if session_id is not None:
            task.session_id = session_id
        if task.type not in self._handlers:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise ConfigurationError(
                f"No handler for task type {task.type!r}; registered types: {known}."
            )
        task._stream = ChunkStream(task.task_id, retain=self.retain_chunks)
        self._tasks[task.task_id] = task
        self._pending[int(task.priority)].append(task)
        await self._changed(task, None)
        self._dispatch()
        return task

    def get_task(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id) from None

    def list_tasks(
        self,
        *,
        session_id: str | None = None,
        state: TaskState | str | Iterable[TaskState | str] | None = None,
    ) -> list[Task]:
        """Tasks, oldest first, filtered by session and state."""
        states: set[str] | None = None
        if state is not None:
            states = {str(state)} if isinstance(state, str) else {str(s) for s in state}
        return [
            t
            for t in self._tasks.values()
            if (session_id is None or t.session_id == session_id)
            and (states is None or t.state.value in states)
        ]

    async def cancel_task(self, task_id: str) -> Task:
        """Cancel a task: a pending one never starts; a running one stops promptly."""
        task = self.get_task(task_id)
        if task.state is TaskState.PENDING:
            self._pending[int(task.priority)].remove(task)
            await self._finish(task, TaskState.CANCELLED)
            self._dispatch()
        elif task.state is TaskState.RUNNING:
            runner = self._running.get(task_id)
            if runner is not None:
                runner.cancel()
                await asyncio.wait([runner])
        return task

    async def wait(self, task_id: str) -> Task:
        """Wait until the task reaches a final state (wrap in ``asyncio.timeout`` to bound it)."""
        task = self.get_task(task_id)
        if not task.done and task.stream is not None:
            await task.stream.wait_closed()
        return task

    # ------------------------------------------------------------------ scheduling

    @property
    def pending_count(self) -> int:
        return sum(len(q) for q in self._pending.values())

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _next(self) -> Task | None:
        """The waiting task with the highest priority, counting one level per ``aging_s``."""
        best: Task | None = None
        best_score = float("-inf")
        now = time.time()
        for level, queue in self._pending.items():
            if queue:
                head = queue[0]
                score = level + (now - head.created_at) / self.aging_s
                if score > best_score:
                    best, best_score = head, score
        if best is not None:
            self._pending[int(best.priority)].popleft()
        return best

    def _dispatch(self) -> None:
        while len(self._running) < self.max_concurrent_tasks:
            task = self._next()
            if task is None:
                break
            task.state, task.started_at = TaskState.RUNNING, time.time()  # visible at once
            runner = asyncio.create_task(self._execute(task), name=f"task {task.task_id}")
            self._running[task.task_id] = runner
        self.peak_running = max(self.peak_running, len(self._running))
        if self._idle is not None and not self._running and not self.pending_count:
            self._idle.set()

    async def _execute(self, task: Task) -> None:
        stream: ChunkStream = task.stream
        state = TaskState.COMPLETED
        outcome: Any = None
        try:
            await self._announce(task, TaskState.PENDING)
            outcome = self._handlers[task.type](task)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if not hasattr(outcome, "__anext__"):
                task.result = outcome
            else:
                publish = stream.publish
                n = 0
                async for event in outcome:
                    publish(event)
                    kind = type(event)
                    if kind is TextDelta:
                        n += 1
                        if n == _YIELD_EVERY:
                            n = 0
                            await asyncio.sleep(0)
                    elif kind is DoneEvent:
                        task.result = event.output
                        if event.status != "completed":
                            state = TaskState(event.status)
                    elif kind is ErrorEvent:
                        task.error = event.message
        except asyncio.CancelledError:
            state = TaskState.INTERRUPTED if not self._accepting else TaskState.CANCELLED
            if outcome is not None and hasattr(outcome, "aclose"):
                await outcome.aclose()  # stops the model stream and tools, keeps the partial
        except AgentTemplateError as exc:
            state, task.error = TaskState.FAILED, str(exc)
        except Exception as exc:  # a handler's bug fails its task, not the loop
            state, task.error = TaskState.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            self._running.pop(task.task_id, None)
        await self._finish(task, state)
        self._dispatch()

    async def _finish(self, task: Task, state: TaskState) -> None:
        task.finished_at = time.time()
        await self._changed(task, state)
        task.stream.close()
        self.chunks_dropped += task.stream.dropped
        self._finished.append(task.task_id)
        while len(self._finished) > FINISHED_KEPT:
            self._tasks.pop(self._finished.popleft(), None)
        self._release_streams(task)

    def _release_streams(self, finished: Task) -> None:
        """Let go of old finished tasks' chunks: memory stays bounded however long we run.

        Readers already attached keep their stream; only new joins are refused then.
        """
        kept = self._kept_streams
        kept.append(finished)
        cutoff = time.time() - STREAM_LINGER_S
        while kept and (len(kept) > STREAMS_KEPT or (kept[0].finished_at or 0) < cutoff):
            kept.popleft()._stream = None

    async def _changed(self, task: Task, state: TaskState | None) -> None:
        previous = None
        if state is not None:
            previous, task.state = task.state, state
        await self._announce(task, previous)

    async def _announce(self, task: Task, previous: TaskState | None) -> None:
        if self.task_store is not None and task.session_id is not None:
            running = task.state is TaskState.RUNNING
            try:
                await self.task_store.record_task(
                    task, time.time() + self.lease_s if running else None
                )
            except Exception:  # the run goes on; the next state change records it again
                log.exception("could not record task %s as %s", task.task_id, task.state)
            if running and self._renewer is None:
                self._renewer = asyncio.create_task(self._renew_leases(), name="task leases")
        self.bus.publish(
            TaskStateChanged(
                session_id=task.session_id,
                task_id=task.task_id,
                task=task.model_copy(),
                previous=previous,
            )
        )
        if self.hooks is not None and self.hooks.has("task_state"):
            from agent_template.core.hooks import HookContext

            await self.hooks.task_state(task, HookContext(task.session_id, None, task.task_id))

    async def _renew_leases(self) -> None:
        """Extend the leases of running tasks until none is left."""
        assert self.task_store is not None
        try:
            while self._running:
                await asyncio.sleep(self.lease_s / 3)
                if self._running:
                    try:
                        await self.task_store.renew_leases(
                            list(self._running), time.time() + self.lease_s
                        )
                    except Exception:  # retried at the next tick, well before expiry
                        log.exception("could not renew task leases")
        finally:
            self._renewer = None

    # ------------------------------------------------------------------ service

    async def start(self) -> None:
        """Run as a service: accept tasks (they run as soon as they are created)."""
        self._accepting = True

    async def run(self) -> None:
        """Run until every queued and running task has finished, then return."""
        self._accepting = True
        while self._running or self.pending_count:
            self._idle = asyncio.Event()
            self._dispatch()
            await self._idle.wait()
        self._idle = None

    async def stop(self, deadline: float = DEFAULT_SHUTDOWN_S) -> None:
        """Graceful shutdown: take no new tasks, give running ones ``deadline`` seconds.

        Tasks still running then, and those never started, are marked ``interrupted``.
        """
        self._accepting = False
        for queue in self._pending.values():
            while queue:
                await self._finish(queue.popleft(), TaskState.INTERRUPTED)
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=deadline)
            for runner in late:
                runner.cancel()
            if late:
                await asyncio.wait(late)
        if self._renewer is not None:
            self._renewer.cancel()

    def stats(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        for t in self._tasks.values():
            by_state[t.state.value] = by_state.get(t.state.value, 0) + 1
        return {
            "pending": self.pending_count,
            "running": self.running_count,
            "peak_running": self.peak_running,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "tasks_by_state": by_state,
        }


def _task_from(spec: Mapping[str, Any]) -> Task:
    fields = dict(spec)
    task_type = str(fields.pop("type", "chat"))
    priority = fields.pop("priority", TaskPriority.NORMAL)
    if isinstance(priority, str):
        priority = TaskPriority[priority.upper()]
    return Task(
        type=task_type,
        priority=TaskPriority(priority),
        session_id=fields.pop("session_id", None),
        parent_id=fields.pop("parent_id", None),
        payload=fields,
    )
