"""Chat turns over REST: ``POST /api/v1/messages`` answers when the turn ends (or at once with
the task), ``POST /api/v1/messages/stream`` streams the turn as Server-Sent Events."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from agent_template.api.chat import start_chat
from agent_template.api.deps import CurrentUser, State
from agent_template.api.errors import ApiError
from agent_template.api.protocol import frame, task_data
from agent_template.api.schemas import (
    BODY_ERRORS,
    AssistantReply,
    ChatRequest,
    MessageCreate,
    MessageReply,
    TaskAccepted,
    UsageOut,
    error_responses,
)
from agent_template.api.sse import SSE_RESPONSE, SSEResponse, chunk_events, event
from agent_template.models import DoneEvent, ErrorEvent

__all__ = ["router"]

router = APIRouter()

_RUN_ERRORS = {
    502: ("provider_unavailable", "The provider 'openai' is unavailable; retry later."),
}


@router.post(
    "/messages",
    response_model=MessageReply,
    summary="Send a message: run a chat turn and answer with the reply",
    description=(
        "Runs a chat turn in `session_id` (created for you if new; a new session without "
        "one) and answers with the final text when it ends. With `wait: false` it answers "
        "202 at once with the task. A turn that fails answers the run's error (502 for the "
        "model, 503 for storage; 409 `run_cancelled` for a turn cancelled meanwhile) with "
        "`task_id` and `session_id` in `details`; whatever was written before the failure "
        "is kept in the session."
    ),
    responses={
        202: {"model": TaskAccepted, "description": "Queued (`wait: false`)."},
        **error_responses(404, 409, 502, *BODY_ERRORS, examples=_RUN_ERRORS),
    },
)
async def send_message(
    body: MessageCreate, state: State, user: CurrentUser
) -> MessageReply | JSONResponse:
    started = await start_chat(
        state,
        user,
        body.content,
        session_id=body.session_id,
        model=body.model,
        priority=body.priority,
        wait_for_session=body.wait_for_session,
    )
    task = started.task
    if not body.wait:
        accepted = TaskAccepted.of(task, session_created=started.session_created)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    done: DoneEvent | None = None
    error: ErrorEvent | None = None
    async with state.loop.subscribe(task.task_id, user_id=user, policy="wait") as consumer:
        async for chunk in consumer:  # to the end: the outcome is in its last chunks
            kind = type(chunk.event)
            if kind is DoneEvent:
                done = chunk.event  # type: ignore[assignment]
            elif kind is ErrorEvent:
                error = chunk.event  # type: ignore[assignment]
    session_id = task.session_id or ""
    if done is None or done.status != "completed":
        raise _run_error(task.task_id, session_id, done, error)
    return MessageReply(
        task_id=task.task_id,
        session_id=session_id,
        session_created=started.session_created,
        message=AssistantReply(content=done.output),
        usage=UsageOut.of(done.usage),
        turns=done.turns,
    )


def _run_error(
    task_id: str, session_id: str, done: DoneEvent | None, error: ErrorEvent | None
) -> ApiError:
    """The error answer of a turn that did not complete."""
    ids = {"task_id": task_id, "session_id": session_id}
    status = done.status if done is not None else "interrupted"
    kept = " What it wrote so far is kept in the session."
    if status == "cancelled":
        return ApiError(
            409, "run_cancelled", "The turn was cancelled before it finished." + kept, ids
        )
    if status == "interrupted":
        return ApiError(
            503,
            "run_interrupted",
            "The server stopped before the turn finished." + kept + " Send it again.",
            ids,
            headers={"Retry-After": "5"},
        )
    code = error.code if error is not None else "run_failed"
    message = error.message if error is not None else "The turn failed."
    if code.startswith("storage"):
        return ApiError(503, code, message, ids, headers={"Retry-After": "5"})
    details = {**ids, "retryable": error.retryable} if error is not None else ids
    return ApiError(502, code, message, details)


@router.post(
    "/messages/stream",
    response_class=Response,  # it answers an SSEResponse (see SSE_RESPONSE)
    summary="Send a message and stream the reply (Server-Sent Events)",
    description=(
        "Runs a chat turn like POST /api/v1/messages and streams it as it happens. The "
        "first event, `task_created` (no `id`), names the task and session; then one event "
        "per chunk (`stream_data` text, `tool_call_started`, `tool_result`, `usage`, "
        "`error`...) up to `stream_complete`. Comment lines keep an idle stream alive. "
        "Closing the connection does not cancel the turn: reconnect with "
        "GET /api/v1/tasks/{task_id}/stream and `Last-Event-ID` to resume."
    ),
    responses={**SSE_RESPONSE, **error_responses(404, 409, *BODY_ERRORS)},
)
async def stream_message(body: ChatRequest, state: State, user: CurrentUser) -> SSEResponse:
    started = await start_chat(
        state,
        user,
        body.content,
        session_id=body.session_id,
        model=body.model,
        priority=body.priority,
        wait_for_session=body.wait_for_session,
    )
    task = started.task
    consumer = state.loop.subscribe(task.task_id, user_id=user, policy="wait")
    head = frame(
        "task_created",
        {**task_data(task), "session_created": started.session_created},
        session_id=task.session_id,
        task_id=task.task_id,
    )
    # One heartbeat interval for both transports: WS_HEARTBEAT_S.
    events = chunk_events(consumer, head=(event(head),), keepalive_s=state.settings.ws_heartbeat_s)
    return SSEResponse(events, on_close=consumer.close)
