"""Tasks: ``/api/v1/tasks``: create, list, inspect, cancel, and follow a task's stream.

A caller sees only their own tasks: another user's task answers 404, exactly like one that
does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from agent_template.api.chat import start_chat, start_task
from agent_template.api.deps import CurrentUser, State
from agent_template.api.errors import ApiError
from agent_template.api.schemas import (
    BODY_ERRORS,
    CURSOR_ERROR,
    Paging,
    TaskAccepted,
    TaskCreate,
    TaskOut,
    TaskPage,
    decode_cursor,
    encode_cursor,
    error_responses,
    invalid_cursor,
)
from agent_template.api.sse import SSE_RESPONSE, SSEResponse, chunk_events
from agent_template.errors import StreamNotFoundError, TaskNotFoundError
from agent_template.models import TaskState

__all__ = ["router"]

router = APIRouter()

TaskPath = Annotated[str, Path(min_length=1, max_length=200, description="The task's id.")]

_NOT_FOUND = {404: ("task_not_found", "Task '9f1c' does not exist (it may have been cleaned up).")}


@router.post(
    "/tasks",
    status_code=202,
    summary="Create a task (a chat turn, or another registered type)",
    description=(
        "Queues the task and answers at once; follow it on `stream_url` (Server-Sent "
        "Events) or poll GET /api/v1/tasks/{task_id}."
    ),
    responses=error_responses(404, *BODY_ERRORS),
)
async def create_task(body: TaskCreate, state: State, user: CurrentUser) -> TaskAccepted:
    if body.type == "chat":
        if body.message is None:
            raise ApiError(
                422,
                "invalid_request",
                "Invalid request: message: a chat task needs a message.",
                {"errors": [{"field": "message", "problem": "required for type chat"}]},
            )
        started = await start_chat(
            state,
            user,
            body.message,
            session_id=body.session_id,
            model=body.model,
            priority=body.priority,
        )
        return TaskAccepted.of(started.task, session_created=started.session_created)
    known = state.loop.handler_types
    if body.type not in known:
        raise ApiError(
            422,
            "unknown_task_type",
            f"There is no task type {body.type!r}; this server runs: {', '.join(known)}.",
            {"known_types": known},
        )
    spec: dict[str, Any] = {**body.payload, "type": body.type}
    for key in ("session_id", "message", "model"):
        value = getattr(body, key)
        if value is not None:
            spec[key] = value
    task = await start_task(state, user, spec, priority=body.priority)
    return TaskAccepted.of(task, session_created=False)


@router.get(
    "/tasks",
    summary="List your tasks, oldest first",
    description=(
        "The tasks this server knows: queued, running and recently finished ones. With "
        "`session_id`, also the session's finished tasks kept in storage."
    ),
    responses=error_responses(400, 404, 422, examples=CURSOR_ERROR),
)
async def list_tasks(
    state: State,
    user: CurrentUser,
    paging: Paging,
    session_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    task_state: Annotated[
        list[TaskState] | None,
        Query(alias="state", description="Only tasks in these states (repeat for several)."),
    ] = None,
) -> TaskPage:
    after = decode_cursor("tasks", paging.cursor)
    if after is not None and not _is_position(after):
        raise invalid_cursor(paging.cursor or "")
    states = {str(s) for s in task_state} if task_state else None
    found: dict[str, Any] = {}
    if session_id is not None:
        for record in await state.sessions.get_tasks(session_id, user_id=user):
            if record.user_id in (None, user) and (states is None or record.state in states):
                found[record.task_id] = record
    for task in state.loop.list_tasks(user_id=user, session_id=session_id, state=states):
        found[task.task_id] = task  # the live view wins over the stored one
    ordered = sorted(found.values(), key=lambda t: (t.created_at, t.task_id))
    if after is not None:
        key = (after[0], after[1])
        ordered = [t for t in ordered if (t.created_at, t.task_id) > key]
    page = ordered[: paging.limit]
    more = len(ordered) > paging.limit
    last = page[-1] if page else None
    return TaskPage(
        items=[TaskOut.of(t) for t in page],
        next_cursor=(
            encode_cursor("tasks", [last.created_at, last.task_id]) if more and last else None
        ),
    )


def _is_position(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int | float)
        and isinstance(value[1], str)
    )


@router.get(
    "/tasks/{task_id}",
    summary="Get a task",
    responses=error_responses(404, 422, examples=_NOT_FOUND),
)
async def get_task(task_id: TaskPath, state: State, user: CurrentUser) -> TaskOut:
    return TaskOut.of(state.loop.get_task(task_id, user_id=user))


@router.delete(
    "/tasks/{task_id}",
    summary="Cancel a task",
    description=(
        "A queued task never starts; a running one stops promptly, keeping what it wrote "
        "so far. Answers the task in its final state (a task already finished is left as it "
        "is)."
    ),
    responses=error_responses(404, 422, examples=_NOT_FOUND),
)
async def cancel_task(task_id: TaskPath, state: State, user: CurrentUser) -> TaskOut:
    return TaskOut.of(await state.loop.cancel_task(task_id, user_id=user))


@router.get(
    "/tasks/{task_id}/stream",
    response_class=Response,  # it answers an SSEResponse (see SSE_RESPONSE)
    summary="Follow a task's stream (Server-Sent Events), or resume it",
    description=(
        "The task's chunks as Server-Sent Events, from the first retained one, or after "
        "`Last-Event-ID` (sent by a reconnecting EventSource) or `after_seq`: a client that "
        "reconnects gets every chunk it missed, with no gap and no duplicate while the "
        "server retains them (STREAM_RETAIN_CHUNKS, and STREAM_LINGER seconds after the "
        "end). Chunks no longer retained are announced by a `stream_gap` event; a stream no "
        "longer kept at all answers 404 `stream_not_found`."
    ),
    responses={
        **SSE_RESPONSE,
        **error_responses(
            404,
            422,
            examples={404: ("stream_not_found", "Task '9f1c' has no stream to follow.")},
        ),
    },
)
async def stream_task(
    task_id: TaskPath,
    state: State,
    user: CurrentUser,
    after_seq: Annotated[
        int | None, Query(ge=0, description="The last chunk number already received.")
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(ge=0, description="The id of the last event received; wins over after_seq."),
    ] = None,
) -> SSEResponse:
    after = last_event_id if last_event_id is not None else after_seq
    loop = state.loop
    try:
        consumer = loop.subscribe(task_id, user_id=user, after_seq=after, policy="wait")
    except StreamNotFoundError:
        try:
            task = loop.get_task(task_id, user_id=user)
        except TaskNotFoundError:
            raise StreamNotFoundError(task_id) from None
        where = f"GET /api/v1/sessions/{task.session_id}/messages" if task.session_id else ""
        raise ApiError(
            404,
            "stream_not_found",
            f"Task '{task_id}' ({task.state}) has no stream to follow any more: its chunks "
            "are no longer retained." + (f" Read what it wrote with {where}." if where else ""),
            {"task_id": task_id, "state": str(task.state)},
        ) from None
    events = chunk_events(consumer, keepalive_s=state.settings.ws_heartbeat_s)  # WS_HEARTBEAT_S
    return SSEResponse(events, on_close=consumer.close)
