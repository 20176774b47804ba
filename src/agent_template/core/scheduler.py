"""TaskScheduler: runs tasks by priority within a concurrency limit, one run per session.

Tasks (a chat turn, a tool call, a subagent run, a summarisation) are created with a priority
and started whenever a slot frees, never exceeding ``max_concurrent_tasks``. Within a priority
the order is FIFO; a task's effective priority grows with its waiting time (one level per
``aging_s``), so a stream of urgent work cannot starve low-priority tasks.

Tasks of the types in ``session_kinds`` (chat turns) run one at a time per session, in the
order they were created: a later one waits, announced as queued, without holding a slot. With a
store that leases sessions (:class:`SessionLeases`), this holds across every process sharing the
database. A task that waits for another (a parent waiting for its child) lends its slot while
it waits, so children cannot be starved by their parents; ending a task cancels its live
descendants.

What a task does is decided by the handler registered for its ``type``: an async function that
returns a result, or an async generator of events. Every task has a stream of numbered chunks
in the :class:`~agent_template.core.stream_store.StreamStore` under its id: the handler's events,
then always its outcome (an ``error`` chunk when it failed, and a final ``done`` chunk with the
task's status). Every state change is recorded in the task store and published on the bus.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast, runtime_checkable

from pydantic import BaseModel

from agent_template.errors import AgentTemplateError, ConfigurationError, TaskNotFoundError
from agent_template.models import (
    DoneEvent,
    ErrorEvent,
    RunQueued,
    RunStatus,
    Task,
    TaskPriority,
    TaskQueued,
    TaskState,
    TaskStateChanged,
    TextDelta,
)

if TYPE_CHECKING:
    from agent_template.core.bus import EventBus
    from agent_template.core.hooks import HookRegistry
    from agent_template.core.stream_gen import ChunkStream, ConsumerPolicy, StreamConsumer
    from agent_template.core.stream_store import StreamStore

__all__ = ["SessionLeases", "TaskHandler", "TaskScheduler", "TaskStore"]


class TaskStore(Protocol):
    """Where task states are recorded; a live task holds a lease this process renews."""

    async def record_task(
        self, task: Task, lease_until: float | None, *, release_run: bool = False
    ) -> None:
        """Record ``task``; with ``release_run`` also free its session's run lease (in one
        write where the store can)."""
        ...

    async def renew_leases(
        self, task_ids: Iterable[str], until: float, *, holding: Iterable[str] = ...
    ) -> Collection[str]:
        """Extend leases; returns the ids whose lease is no longer this process's."""
        ...


@runtime_checkable
class SessionLeases(Protocol):
    """A session's run lease in shared storage: one holder at a time, across processes."""

    async def acquire_run(
        self, session_id: str, task_id: str, until: float, *, kinds: Iterable[str] = ...
    ) -> bool: ...
    async def release_run(self, session_id: str, task_id: str) -> None: ...
    async def run_holder(self, session_id: str) -> str | None: ...


# A handler returns events (an async iterator, possibly from a coroutine) or a result.
TaskHandler: TypeAlias = Callable[[Task], AsyncIterator[BaseModel] | Awaitable[Any]]

log = logging.getLogger("agent_template.scheduler")

DEFAULT_AGING_S = 10.0  # a waiting task gains one priority level per this many seconds
DEFAULT_LEASE_S = 15.0  # a crashed process's tasks are known dead this long after
DEFAULT_SHUTDOWN_S = 10.0
# Finished tasks kept in memory for get/list/wait, oldest forgotten first (the task store
# keeps their records). As many as a stream store keeps finished streams, by default.
FINISHED_KEPT = 1_000
SESSION_POLL_S = (0.02, 1.0)  # first and longest wait between tries for a session held elsewhere
_YIELD_EVERY = 128  # text deltas between forced yields: a fast producer cannot starve readers
_FINAL_STATUS: dict[TaskState, RunStatus] = {
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.INTERRUPTED: "interrupted",
    # Suspended while waiting for a person: this stream ends, the task goes on after a restart.
    TaskState.WAITING: "interrupted",
}

_running_task: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agent_template_running_task", default=None
)


class _Line:
    """The tasks of one session that run one at a time: the holder, then the waiting."""

    __slots__ = ("admission", "holder", "leased", "parked", "waiting")

    def __init__(self, holder: Task) -> None:
        self.holder: Task | None = holder
        self.leased = False  # the holder has the store's lease (to release at its end)
        self.parked = False  # the lease is held without a process, while the holder waits
        self.waiting: deque[Task] = deque()
        self.admission: asyncio.Task[None] | None = None  # polling for a lease held elsewhere


class TaskScheduler:
    """Runs tasks by priority, at most ``max_concurrent_tasks`` at once.

    Args:
        max_concurrent_tasks: the concurrency limit.
        handlers: task type -> handler.
        bus: where task state changes go; the process's default bus if omitted.
        hooks: ``task_state`` hooks are called on every change.
        aging_s: seconds of waiting that raise a task's effective priority by one level.
        streams: where each task's stream of chunks lives; a store of its own if omitted.
        task_store: records every state change; live tasks hold a lease renewed every third
            of ``lease_s``, so another process can tell a crash from a long task.
        session_leases: leases sessions across processes (by default ``task_store`` when it
            can); without one, runs are one per session within this process only.
        session_kinds: task types that run one at a time per session.
        keep_finished: finished tasks kept in memory for :meth:`get_task` and the like.
    """

    def __init__(
        self,
        *,
        max_concurrent_tasks: int = 10,
        handlers: Mapping[str, TaskHandler] | None = None,
        bus: EventBus | None = None,
        hooks: HookRegistry | None = None,
        aging_s: float = DEFAULT_AGING_S,
        streams: StreamStore | None = None,
        task_store: TaskStore | None = None,
        session_leases: SessionLeases | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        session_kinds: Iterable[str] = ("chat",),
        keep_finished: int = FINISHED_KEPT,
    ) -> None:
        if max_concurrent_tasks < 1:
            raise ConfigurationError("MAX_CONCURRENT_TASKS must be at least 1.")
        if bus is None:
            from agent_template.core.bus import default_bus

            bus = default_bus()
        if streams is None:
            from agent_template.core.stream_store import MemoryStreamStore

            streams = MemoryStreamStore()
        self.bus = bus
        self.hooks = hooks
        self.streams = streams
        self.max_concurrent_tasks = max_concurrent_tasks
        self.aging_s = aging_s
        self.task_store = task_store
        if session_leases is None and isinstance(task_store, SessionLeases):
            session_leases = task_store
        self.session_leases = session_leases
        self.lease_s = lease_s
        self.session_kinds = frozenset(session_kinds)
        self.keep_finished = keep_finished
        self._handlers: dict[str, TaskHandler] = dict(handlers or {})
        self._tasks: dict[str, Task] = {}
        self._live_streams: dict[str, ChunkStream] = {}
        self._finished: deque[str] = deque()
        self._pending: dict[int, deque[Task]] = {int(p): deque() for p in TaskPriority}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lines: dict[str, _Line] = {}
        self._children: dict[str, set[str]] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._blocked = 0  # running tasks waiting for another task: their slots are lent
        self._lent: dict[str, int] = {}  # such a waiting task -> how many waits it has
        self._waits: dict[str, list[str]] = {}  # task id -> running tasks waiting for it
        self._interrupting: set[str] = set()  # running tasks being stopped as interrupted
        self._parked: dict[str, int] = {}  # running tasks waiting for a person -> waits
        self._suspending: set[str] = set()  # parked tasks being stopped to resume later
        self._accepting = True
        self._idle: asyncio.Event | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.peak_running = 0
        self.chunks_dropped = 0  # by finished tasks' streams, for slow consumers

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
        user_id: str | None = None,
    ) -> Task:
        """Queue a task and return it; it starts when a slot (and its session) is free.

        ``spec`` is a :class:`Task` or a mapping with ``type`` (default ``chat``), optional
        ``priority``, ``session_id``, ``user_id`` and ``parent_id``; other keys become the
        payload. A child task (``parent_id``) belongs to its parent's user.

        Raises:
            ConfigurationError: no handler for the task type, or the loop is shutting down.
            TaskNotFoundError: ``parent_id`` names no task of this scheduler (or of the user).
        """
        if not self._accepting:
            raise ConfigurationError("The agent loop is shutting down and takes no new tasks.")
        task = spec if isinstance(spec, Task) else _task_from(spec)
        if priority is not None:
            task.priority = TaskPriority(priority)
        if session_id is not None:
            task.session_id = session_id
        if user_id is not None:
            task.user_id = user_id
        if task.type not in self._handlers:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise ConfigurationError(
                f"No handler for task type {task.type!r}; registered types: {known}."
            )
        if task.parent_id is not None:
            parent = self.get_task(task.parent_id, user_id=task.user_id)
            task.user_id = task.user_id or parent.user_id
            self._children.setdefault(parent.task_id, set()).add(task.task_id)
        self._live_streams[task.task_id] = self.streams.create(
            task.task_id,
            user_id=task.user_id,
            session_id=task.session_id,
            task_id=task.task_id,
            parent_id=task.parent_id,
        )
        self._tasks[task.task_id] = task
        await self._changed(task, None)
        if task.done:  # cancelled while its creation was being recorded
            await self._record(task)  # so the final state is the one stored last
            return task
        sid = task.session_id
        if sid is None or task.type not in self.session_kinds:
            self._enqueue(task)
            return task
        line = self._lines.get(sid)
        if line is None:
            self._lines[sid] = line = _Line(task)
            await self._admit(line, task)
        elif self._runs_under(task, line.holder):
            self._enqueue(task)  # a child of the session's run works within that run
        else:
            line.waiting.append(task)
            self._queued(task, ahead=len(line.waiting), holder=line.holder)
        return task

    def get_task(self, task_id: str, *, user_id: str | None = None) -> Task:
        """Raises TaskNotFoundError, also for a task that is not ``user_id``'s (existence does
        not leak). Without ``user_id`` (a trusted in-process caller) any task is found."""
        task = self._tasks.get(task_id)
        if task is None or (user_id is not None and task.user_id != user_id):
            raise TaskNotFoundError(task_id)
        return task

    def list_tasks(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        parent_id: str | None = None,
        state: TaskState | str | Iterable[TaskState | str] | None = None,
    ) -> list[Task]:
        """Tasks, oldest first, filtered by user, session, parent and state."""
        states: set[str] | None = None
        if state is not None:
            states = {str(state)} if isinstance(state, str) else {str(s) for s in state}
        return [
            t
            for t in self._tasks.values()
            if (user_id is None or t.user_id == user_id)
            and (session_id is None or t.session_id == session_id)
            and (parent_id is None or t.parent_id == parent_id)
            and (states is None or t.state.value in states)
        ]

    def subscribe(
        self,
        task_id: str,
        *,
        user_id: str | None = None,
        after_seq: int | None = None,
        policy: ConsumerPolicy | None = None,
    ) -> StreamConsumer:
        """A consumer of the task's chunks after ``after_seq`` (every retained one by default).

        Raises:
            StreamNotFoundError: no such task's stream, another user's, or released already.
        """
        return self.streams.subscribe(task_id, after_seq=after_seq, policy=policy, user_id=user_id)

    async def cancel_task(self, task_id: str, *, user_id: str | None = None) -> Task:
        """Cancel a task and its descendants: a waiting one never starts, a running one stops
        promptly (keeping what it produced)."""
        task = self.get_task(task_id, user_id=user_id)
        if task.done:
            return task
        runner = self._running.get(task_id)
        if runner is not None:
            runner.cancel()
            await asyncio.wait([runner])
            if not task.done:  # cancelled before its first step: it never cleaned up
                self._running.pop(task_id, None)
                await self._finish(task, TaskState.CANCELLED)
                self._dispatch()
            return task
        self._withdraw(task)
        await self._finish(task, TaskState.CANCELLED)
        self._dispatch()
        return task

    def _withdraw(self, task: Task) -> None:
        """Take a task that has not started out of every queue it waits in."""
        queue = self._pending[int(task.priority)]
        if task in queue:
            queue.remove(task)
            return
        line = self._lines.get(task.session_id or "")
        if line is None:
            return
        if task in line.waiting:
            line.waiting.remove(task)
            if line.holder is None and not line.waiting:
                del self._lines[task.session_id or ""]
        elif line.holder is task and line.admission is not None:
            line.admission.cancel()
            line.admission = None

    async def wait(self, task_id: str, *, user_id: str | None = None) -> Task:
        """Wait until the task reaches a final state (wrap in ``asyncio.timeout`` to bound it).

        Called from a running task (a parent waiting for its child), that task's slot is lent
        to others until the awaited task ends.
        """
        task = self.get_task(task_id, user_id=user_id)
        if task.done:
            return task
        done = self._done.get(task_id)
        if done is None:
            done = self._done[task_id] = asyncio.Event()
        waiter = _running_task.get()
        lends = waiter is not None and waiter in self._running and waiter != task_id
        if lends:
            self._lend(waiter, task_id)  # type: ignore[arg-type]
            self._dispatch()
        try:
            await done.wait()
        finally:
            if lends and not task.done:  # the waiter gave up first: it takes its slot back
                self._waits[task_id].remove(waiter)  # type: ignore[arg-type]
                self._unlend(waiter)  # type: ignore[arg-type]
        return task

    def _lend(self, waiter: str, awaited: str) -> None:
        """``waiter`` (running) waits for ``awaited``: its slot is free for others meanwhile."""
        count = self._lent.get(waiter, 0)
        self._lent[waiter] = count + 1
        if not count:
            self._blocked += 1
        self._waits.setdefault(awaited, []).append(waiter)

    def _unlend(self, waiter: str) -> None:
        count = self._lent.pop(waiter) - 1
        if count:
            self._lent[waiter] = count
        else:
            self._blocked -= 1

    # ------------------------------------------------------------------ waiting for people

    async def park(self, task_id: str, until: float) -> None:
        """The running task waits for a person (an approval) until ``until`` at the latest.

        Meanwhile its concurrency slot is free for other tasks, its state is ``waiting``, and
        its session stays held without a process (so that, when this process stops, the
        session is still the task's after a restart, until ``until``). Each ``park`` needs an
        :meth:`unpark`; a task may wait for several answers at once.
        """
        task = self._tasks.get(task_id)
        if task is None or task.done or task_id not in self._running:
            return
        count = self._parked.get(task_id, 0)
        self._parked[task_id] = count + 1
        line = self._lines.get(task.session_id or "")
        leases = self.session_leases
        if line is not None and line.holder is task and line.leased and leases is not None:
            park_run = getattr(leases, "park_run", None)
            if park_run is not None:
                try:
                    line.parked = bool(await park_run(task.session_id, task_id, until))
                except Exception:  # the lease is still renewed while this process lives
                    log.warning("could not park the session lease of task %s", task_id)
        if count:
            return
        self._blocked += 1
        await self._changed(task, TaskState.WAITING)
        self._dispatch()

    async def unpark(self, task_id: str) -> None:
        """The answer came (or the wait ended): the task runs again and holds its session."""
        count = self._parked.get(task_id, 0)
        if not count:
            return
        if count > 1:
            self._parked[task_id] = count - 1
            return
        del self._parked[task_id]
        self._blocked -= 1
        task = self._tasks.get(task_id)
        if task is None:
            return
        line = self._lines.get(task.session_id or "")
        if line is not None and line.holder is task and line.parked:
            line.parked = False
            await self._retake_session(task)
        if not task.done and task.state is TaskState.WAITING:
            await self._changed(task, TaskState.RUNNING)

    async def _retake_session(self, task: Task) -> None:
        leases, sid = self.session_leases, task.session_id
        if leases is None or sid is None:
            return
        try:
            await leases.acquire_run(
                sid, task.task_id, time.time() + self.lease_s, kinds=self.session_kinds
            )
        except Exception:  # the parked lease still holds until it expires
            log.warning("could not take session %s back for task %s", sid, task.task_id)

    def publisher(self, task_id: str) -> Callable[[Any], object] | None:
        """What puts an event into a live task's stream (None once the task ended)."""
        stream = self._live_streams.get(task_id)
        return None if stream is None else stream.publish

    def parked(self, task_id: str) -> bool:
        return task_id in self._parked

    def suspending(self, task_id: str) -> bool:
        """Whether the task is being stopped while it waits, to resume after a restart."""
        return task_id in self._suspending

    # ------------------------------------------------------------------ sessions

    def _runs_under(self, task: Task, holder: Task | None) -> bool:
        """Whether ``holder`` is an ancestor of ``task``."""
        parent_id = task.parent_id
        while parent_id is not None and holder is not None:
            if parent_id == holder.task_id:
                return True
            parent = self._tasks.get(parent_id)
            parent_id = parent.parent_id if parent is not None else None
        return False

    async def _admit(self, line: _Line, task: Task) -> None:
        """Give ``task`` its session (it heads the line) and queue it for a slot."""
        leases, sid = self.session_leases, task.session_id
        if leases is None or sid is None:
            self._enqueue(task)
            return
        try:
            acquired = await leases.acquire_run(
                sid, task.task_id, time.time() + self.lease_s, kinds=self.session_kinds
            )
        except Exception as exc:
            await self._fail_unstarted(task, exc)
            return
        if not await self._still_heads(line, task, acquired):
            return
        if acquired:
            line.leased = True
            self._enqueue(task)
            return
        holder = None
        try:
            holder = await leases.run_holder(sid)
        except Exception:  # only for the announcement; waiting goes on regardless
            log.debug("could not read the holder of session %s", sid, exc_info=True)
        if not await self._still_heads(line, task, False):
            return
        self._queued(task, ahead=0, holder=holder)
        line.admission = asyncio.create_task(
            self._await_lease(line, task, leases, sid), name=f"session {sid} for {task.task_id}"
        )

    async def _still_heads(self, line: _Line, task: Task, acquired: bool) -> bool:
        """After an await: whether ``task`` still waits at the head of its line (it was not
        cancelled, or stopped, meanwhile). If not, a lease it just got is given back."""
        heads = line.holder is task and self._lines.get(task.session_id or "") is line
        if heads and not task.done and self._accepting:
            return True
        if acquired and self.session_leases is not None and task.session_id is not None:
            await self.session_leases.release_run(task.session_id, task.task_id)
        if not task.done:  # stopped meanwhile: it never ran
            await self._finish(task, TaskState.INTERRUPTED)
        elif heads:  # it ended while it waited here: the line moves on without it
            await self._next_in_line(task)
        return False

    async def _await_lease(self, line: _Line, task: Task, leases: SessionLeases, sid: str) -> None:
        """Try for a session held by another process until it is free (or we are cancelled)."""
        delay, longest = SESSION_POLL_S
        try:
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                if await leases.acquire_run(
                    sid, task.task_id, time.time() + self.lease_s, kinds=self.session_kinds
                ):
                    break
        except Exception as exc:
            line.admission = None
            await self._fail_unstarted(task, exc)
            return
        line.admission = None
        if await self._still_heads(line, task, True):
            line.leased = True
            self._enqueue(task)

    async def _fail_unstarted(self, task: Task, exc: Exception) -> None:
        """A task that could not get its session (storage trouble, or the session is gone)
        fails with the cause."""
        if task.done:
            return
        message = str(exc) or type(exc).__name__
        task.error = message
        code = exc.code if isinstance(exc, AgentTemplateError) else "storage_error"
        await self._finish(task, TaskState.FAILED, error=ErrorEvent(code=code, message=message))
        self._dispatch()

    async def _next_in_line(self, task: Task) -> None:
        """``task`` left its session's line (it ended): the next waiting task takes it."""
        sid = task.session_id
        line = self._lines.get(sid or "")
        if line is None or line.holder is not task:
            return
        if line.leased and self.session_leases is not None and sid is not None:
            line.leased = False
            try:
                await self.session_leases.release_run(sid, task.task_id)
            except Exception:  # the lease expires by itself; the next run waits for that
                log.warning("could not release session %s; its lease will expire", sid)
        line.holder = None
        while line.waiting and self._accepting:
            nxt = line.waiting.popleft()
            if nxt.done:
                continue
            line.holder = nxt
            await self._admit(line, nxt)
            return
        if not line.waiting:
            del self._lines[sid or ""]

    def _queued(self, task: Task, *, ahead: int, holder: Task | str | None) -> None:
        holder_id = holder.task_id if isinstance(holder, Task) else holder
        self._live_streams[task.task_id].publish(RunQueued(ahead=ahead, holder=holder_id))
        self.bus.publish(
            TaskQueued(
                session_id=task.session_id,
                task_id=task.task_id,
                user_id=task.user_id,
                ahead=ahead,
                holder=holder_id,
            )
        )

    # ------------------------------------------------------------------ scheduling

    @property
    def pending_count(self) -> int:
        """Tasks waiting for a slot or for their session."""
        waiting = sum(len(line.waiting) for line in self._lines.values())
        admitting = sum(1 for line in self._lines.values() if line.admission is not None)
        return sum(len(q) for q in self._pending.values()) + waiting + admitting

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _enqueue(self, task: Task) -> None:
        self._pending[int(task.priority)].append(task)
        self._dispatch()

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
            if best.done:  # finished while it waited (cancelled): look again
                return self._next()
        return best

    def _dispatch(self) -> None:
        running = self._running
        while len(running) - self._blocked < self.max_concurrent_tasks:
            task = self._next()
            if task is None:
                break
            task.state, task.started_at = TaskState.RUNNING, time.time()  # visible at once
            running[task.task_id] = asyncio.create_task(
                self._execute(task), name=f"task {task.task_id}"
            )
        self.peak_running = max(self.peak_running, len(running) - self._blocked)
        if self._idle is not None and not running and not self.pending_count:
            self._idle.set()

    async def _execute(self, task: Task) -> None:
        _running_task.set(task.task_id)  # this asyncio task's own context
        stream = self._live_streams[task.task_id]
        state = TaskState.COMPLETED
        outcome: Any = None
        done: DoneEvent | None = None
        error: ErrorEvent | None = None
        try:
            await self._announce(task, TaskState.PENDING)
            outcome = self._handlers[task.type](task)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if not hasattr(outcome, "__anext__"):
                task.result = outcome
            else:
                publish = stream.publish
                budget = _YIELD_EVERY
                async for event in outcome:
                    kind = type(event)
                    if kind is TextDelta:  # the hot path: publish, and now and then yield
                        publish(event)
                        budget -= 1
                        if not budget:
                            budget = _YIELD_EVERY
                            await asyncio.sleep(0)
                        continue
                    if kind is DoneEvent:
                        done = event  # published last, with the task's final status
                        task.result = event.output
                        if event.status != "completed":
                            state = TaskState(event.status)
                        continue
                    if kind is ErrorEvent:
                        task.error = event.message
                    publish(event)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # handled here: the task ends cancelled
            interrupted = not self._accepting or task.task_id in self._interrupting
            state = TaskState.INTERRUPTED if interrupted else TaskState.CANCELLED
            if task.task_id in self._suspending:
                state = TaskState.WAITING  # stored as waiting: an answer resumes it later
            self._interrupting.discard(task.task_id)
            if outcome is not None and hasattr(outcome, "aclose"):
                await outcome.aclose()  # stops the model stream and tools, keeps the partial
        except Exception as exc:  # a handler's failure fails its task, not the loop
            state = TaskState.FAILED
            if isinstance(exc, AgentTemplateError):
                code, task.error = exc.code, str(exc)
            else:
                log.error("task %s (%s) failed", task.task_id, task.type, exc_info=exc)
                code, task.error = "task_failed", f"{type(exc).__name__}: {exc}"
            error = ErrorEvent(code=code, message=task.error)
        finally:
            self._running.pop(task.task_id, None)
        await self._finish(task, state, done=done, error=error)
        self._dispatch()

    async def _finish(
        self,
        task: Task,
        state: TaskState,
        *,
        done: DoneEvent | None = None,
        error: ErrorEvent | None = None,
    ) -> None:
        """Record the outcome, free the session, stop the descendants, end the stream, and
        only then tell whoever waits for the task."""
        suspended = state is TaskState.WAITING
        if not suspended:
            task.finished_at = time.time()
        if self._parked.pop(task.task_id, 0):
            self._blocked -= 1
        stream = self._live_streams.pop(task.task_id, None)
        try:
            await self._changed(task, state)  # a suspended task is stored without a lease
            self._suspending.discard(task.task_id)
            if suspended:
                self._leave_parked(task)
            else:
                await self._next_in_line_safely(task)
            for child_id in self._children.pop(task.task_id, ()):
                child = self._tasks.get(child_id)
                if child is not None and not child.done:
                    await self.cancel_task(child_id)
        finally:
            if stream is not None:
                status = _FINAL_STATUS[state]
                final = (
                    done.model_copy(update={"status": status})
                    if done is not None
                    else DoneEvent(status=status, output=task.result if _is_text(task) else "")
                )
                stream.end(final, error=error)
                self.chunks_dropped += stream.dropped
            for waiter in self._waits.pop(task.task_id, ()):
                self._unlend(waiter)  # it resumes: its slot is its own again
            event = self._done.pop(task.task_id, None)
            if event is not None:
                event.set()
            self._finished.append(task.task_id)
            while len(self._finished) > self.keep_finished:
                gone = self._finished.popleft()
                self._tasks.pop(gone, None)
                self._children.pop(gone, None)
            if not self._live_streams and self._renewer is not None:
                self._renewer.cancel()  # nothing left to renew; do not wait for its next tick
                self._renewer = None

    def _leave_parked(self, task: Task) -> None:
        """A suspended task leaves its line but keeps its parked session lease: the session
        stays its own until it resumes or the lease expires."""
        line = self._lines.get(task.session_id or "")
        if line is not None and line.holder is task:
            line.leased = line.parked = False
            line.holder = None
            if not line.waiting:
                del self._lines[task.session_id or ""]

    async def _next_in_line_safely(self, task: Task) -> None:
        if task.session_id is not None and task.session_id in self._lines:
            try:
                await self._next_in_line(task)
            except Exception:  # the next run then waits for the lease to expire
                log.exception("session %s: could not start its next run", task.session_id)

    async def _changed(self, task: Task, state: TaskState | None) -> None:
        previous = None
        if state is not None:
            previous, task.state = task.state, state
        await self._announce(task, previous)

    async def _record(self, task: Task) -> None:
        if self.task_store is None or task.session_id is None:
            return
        live = not task.done and task.task_id not in self._suspending
        # A finished run that holds its session frees it in the same write.
        line = None if live else self._lines.get(task.session_id)
        release = (
            line is not None
            and line.holder is task
            and line.leased
            and task.task_id not in self._suspending
            and cast("object", self.session_leases) is self.task_store
        )
        try:
            await self.task_store.record_task(
                task, time.time() + self.lease_s if live else None, release_run=release
            )
        except Exception:  # the run goes on; the next state change records it again
            log.exception("could not record task %s as %s", task.task_id, task.state)
        else:
            if release and line is not None:
                line.leased = False  # freed: the line moves on without releasing it again
        if live and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases(), name="task leases")

    async def _announce(self, task: Task, previous: TaskState | None) -> None:
        await self._record(task)
        self.bus.publish(
            TaskStateChanged(
                session_id=task.session_id,
                task_id=task.task_id,
                user_id=task.user_id,
                task=task.model_copy(),
                previous=previous,
            )
        )
        if self.hooks is not None and self.hooks.has("task_state"):
            from agent_template.core.hooks import HookContext

            await self.hooks.task_state(
                task, HookContext(task.session_id, None, task.task_id, task.user_id)
            )

    async def _renew_leases(self) -> None:
        """Extend the leases of live tasks (and the sessions they hold) until none is left.

        A lease that could not be extended is no longer ours (another process recovered the
        task, or took its session over after the lease expired): that run is interrupted, so
        that two runs never work on one session.
        """
        assert self.task_store is not None
        try:
            while self._live_streams:
                await asyncio.sleep(self.lease_s / 3)
                recorded = [
                    task_id
                    for task_id in self._live_streams
                    if (task := self._tasks.get(task_id)) is not None and task.session_id
                ]
                holding = [
                    line.holder.task_id
                    for line in self._lines.values()
                    if line.leased and not line.parked and line.holder is not None
                ]
                if not recorded and not holding:
                    continue
                try:
                    lost = await self.task_store.renew_leases(
                        recorded, time.time() + self.lease_s, holding=holding
                    )
                except Exception:  # retried at the next tick, well before expiry
                    log.exception("could not renew task leases")
                    continue
                for task_id in lost:
                    await self._lost_lease(task_id)
        finally:
            if self._renewer is asyncio.current_task():
                self._renewer = None

    async def _lost_lease(self, task_id: str) -> None:
        task = self._tasks.get(task_id)
        if task is None or task.done:
            return
        log.warning(
            "task %s lost its lease (another process took it over); it is interrupted", task_id
        )
        task.error = "Another process took this task's session over; the run was stopped."
        line = self._lines.get(task.session_id or "")
        if line is not None and line.holder is task:
            line.leased = False  # not ours to release any more
        runner = self._running.get(task_id)
        if runner is not None:
            self._interrupting.add(task_id)
            runner.cancel()
            await asyncio.wait([runner])
            if not task.done:
                self._running.pop(task_id, None)
                await self._finish(task, TaskState.INTERRUPTED)
        else:
            self._withdraw(task)
            await self._finish(task, TaskState.INTERRUPTED)
        self._dispatch()

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
        waiting = [t for q in self._pending.values() for t in q]
        for line in self._lines.values():
            waiting.extend(line.waiting)
            if line.admission is not None and line.holder is not None:
                waiting.append(line.holder)
        for task in waiting:
            self._withdraw(task)
            if not task.done:
                await self._finish(task, TaskState.INTERRUPTED)
        # Tasks waiting for a person cannot finish in the grace time: they stop now and stay
        # waiting in the store, to resume when the answer comes.
        parked = [self._running[t] for t in self._parked if t in self._running]
        self._suspending.update(t for t in self._parked if t in self._running)
        for runner in parked:
            runner.cancel()
        if parked:
            await asyncio.wait(parked)
        running = list(self._running.items())
        if running:
            _, late = await asyncio.wait([r for _, r in running], timeout=deadline)
            for runner in late:
                runner.cancel()
            if late:
                await asyncio.wait(late)
            for task_id, runner in running:  # cancelled before their first step
                unstarted = self._tasks.get(task_id)
                if runner in late and unstarted is not None and not unstarted.done:
                    self._running.pop(task_id, None)
                    await self._finish(unstarted, TaskState.INTERRUPTED)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        for t in self._tasks.values():
            by_state[t.state.value] = by_state.get(t.state.value, 0) + 1
        return {
            "pending": self.pending_count,
            "running": self.running_count,
            "peak_running": self.peak_running,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "sessions_busy": len(self._lines),
            "tasks_by_state": by_state,
        }


def _is_text(task: Task) -> bool:
    return isinstance(task.result, str)


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
        user_id=fields.pop("user_id", None),
        parent_id=fields.pop("parent_id", None),
        payload=fields,
    )
