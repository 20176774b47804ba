"""Starting a chat turn for a user: what the REST API and the WebSocket share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent_template.api.errors import ApiError
from agent_template.errors import SessionNotFoundError
from agent_template.models import Task, TaskPriority

if TYPE_CHECKING:
    from agent_template.api.state import ServerState

__all__ = ["StartedChat", "start_chat", "start_task"]

_LIVE = ("pending", "running")


@dataclass(slots=True)
class StartedChat:
    task: Task
    session_created: bool  # the session did not exist: it was made for this user


def _check_open(state: ServerState) -> None:
    if state.shutting_down:
        raise ApiError(
            503,
            "shutting_down",
            "The server is shutting down and takes no new work; retry after it restarts.",
            headers={"Retry-After": "5"},
        )


async def start_task(
    state: ServerState,
    user_id: str,
    spec: dict[str, object],
    *,
    priority: TaskPriority | int | None = None,
) -> Task:
    """Create a task of ``user_id`` under the per-user live-task limit.

    Raises:
        ApiError: 503 shutting down, 429 over ``MAX_TASKS_PER_USER``.
        SessionNotFoundError: the task names another user's session.
    """
    _check_open(state)
    if not await state.limits.take_task(user_id):
        limit = state.limits.max_tasks
        raise ApiError(
            429,
            "too_many_tasks",
            f"You have {limit} tasks running or queued, the most MAX_TASKS_PER_USER allows; "
            "wait for one to finish or cancel one.",
            {"max_tasks_per_user": limit},
            headers={"Retry-After": "5"},
        )
    try:
        task = await state.loop.create_task({**spec, "user_id": user_id}, priority=priority)
    except BaseException:
        await state.limits.task_ended(user_id)
        raise
    if task.done:
        await state.limits.task_ended(user_id)
    else:
        state.counted_tasks[task.task_id] = user_id
    return task


async def start_chat(
    state: ServerState,
    user_id: str,
    content: str,
    *,
    session_id: str | None = None,
    model: str | None = None,
    priority: TaskPriority | int | None = None,
    wait_for_session: bool = True,
) -> StartedChat:
    """Queue a chat turn of ``user_id`` on ``session_id`` (a new session when None, created
    for the user when it does not exist yet).

    Raises:
        ApiError: 409 ``session_busy`` when the session runs a turn and ``wait_for_session``
            is false; 503 while shutting down; 429 over the live-task limit.
        SessionNotFoundError: ``session_id`` is another user's session.
    """
    _check_open(state)
    sessions = state.sessions
    created = False
    if session_id is None:
        session = await sessions.create_session(user_id)
        session_id, created = session.session_id, True
    else:
        try:
            await sessions.get_session(session_id, user_id=user_id)
        except SessionNotFoundError:
            session = await sessions.get_or_create(session_id, user_id)  # raises if not theirs
            created = session.user_id == user_id
    if not wait_for_session and not created:
        busy = state.loop.list_tasks(session_id=session_id, state=_LIVE)
        holder = busy[0].task_id if busy else await sessions.store.run_holder(session_id)
        if holder is not None:
            raise ApiError(
                409,
                "session_busy",
                "The session is running another turn; retry when it ends, or send the "
                "message without asking not to wait and it is queued.",
                {"session_id": session_id, "running_task_id": holder},
            )
    spec: dict[str, object] = {"type": "chat", "message": content, "session_id": session_id}
    if model:
        spec["model"] = model
    task = await start_task(state, user_id, spec, priority=priority)
    return StartedChat(task=task, session_created=created)
