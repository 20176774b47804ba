"""Sessions: ``/api/v1/sessions``, their messages, their todo list and their tool settings.

A caller sees only their own sessions: another user's session answers 404, exactly like one
that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from agent_template.api.deps import CurrentUser, State
from agent_template.api.errors import ApiError
from agent_template.api.schemas import (
    BODY_ERRORS,
    CURSOR_ERROR,
    CompactionOut,
    MessageOut,
    MessagePage,
    Paging,
    SessionCreate,
    SessionOut,
    SessionPage,
    SessionUpdate,
    TodoOut,
    TodoPage,
    decode_cursor,
    encode_cursor,
    error_responses,
    invalid_cursor,
    page_of,
)
from agent_template.errors import AgentTemplateError

__all__ = ["router"]

router = APIRouter()

SessionPath = Annotated[str, Path(min_length=1, max_length=200, description="The session's id.")]

_LIVE = ("pending", "running")


@router.post(
    "/sessions",
    status_code=201,
    summary="Create a session",
    responses=error_responses(*BODY_ERRORS),
)
async def create_session(body: SessionCreate, state: State, user: CurrentUser) -> SessionOut:
    session = await state.sessions.create_session(user, title=body.title, metadata=body.metadata)
    return SessionOut.of(session)


@router.get(
    "/sessions",
    summary="List your sessions, most recently active first",
    responses=error_responses(400, 422, examples=CURSOR_ERROR),
)
async def list_sessions(
    state: State,
    user: CurrentUser,
    paging: Paging,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only sessions whose title or id contains this text (any case).",
        ),
    ] = None,
) -> SessionPage:
    # The store pages by offset: a cursor is the offset of the next page. One more session
    # than asked for tells whether there is a next page.
    start = decode_cursor("sessions", paging.cursor) or 0
    if type(start) is not int or start < 0:
        raise invalid_cursor(paging.cursor or "")
    if q is None:
        rows = await state.sessions.list_sessions(user, limit=paging.limit + 1, offset=start)
    else:
        rows = (await _matching(state, user, q.casefold()))[start : start + paging.limit + 1]
    more = len(rows) > paging.limit
    return SessionPage(
        items=[SessionOut.of(s) for s in rows[: paging.limit]],
        next_cursor=encode_cursor("sessions", start + paging.limit) if more else None,
    )


_SCAN_BATCH = 500


async def _matching(state: Any, user: str, needle: str) -> list[Any]:
    """The user's sessions whose title or id contains ``needle``, most recent first."""
    found: list[Any] = []
    offset = 0
    while True:
        batch = await state.sessions.list_sessions(user, limit=_SCAN_BATCH, offset=offset)
        found += [
            s
            for s in batch
            if needle in s.session_id.casefold() or needle in (s.title or "").casefold()
        ]
        if len(batch) < _SCAN_BATCH:
            return found
        offset += _SCAN_BATCH


@router.get(
    "/sessions/{session_id}",
    summary="Get a session",
    responses=error_responses(404, 422),
)
async def get_session(session_id: SessionPath, state: State, user: CurrentUser) -> SessionOut:
    return SessionOut.of(await state.sessions.get_session(session_id, user_id=user))


@router.patch(
    "/sessions/{session_id}",
    summary="Rename a session",
    responses=error_responses(404, *BODY_ERRORS),
)
async def rename_session(
    session_id: SessionPath, body: SessionUpdate, state: State, user: CurrentUser
) -> SessionOut:
    session = await state.sessions.rename_session(session_id, body.title, user_id=user)
    return SessionOut.of(session)


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a session, with its messages, tasks and todo list",
    description="A turn the session is running is cancelled first.",
    responses=error_responses(404, 422),
)
async def delete_session(session_id: SessionPath, state: State, user: CurrentUser) -> Response:
    sessions, loop = state.sessions, state.loop
    await sessions.get_session(session_id, user_id=user)  # 404 before anything is cancelled
    for task in loop.list_tasks(user_id=user, session_id=session_id, state=_LIVE):
        await loop.cancel_task(task.task_id, user_id=user)
    await sessions.delete_session(session_id, user_id=user)
    return Response(status_code=204)


@router.get(
    "/sessions/{session_id}/messages",
    summary="List a session's messages, oldest first",
    description=(
        "User messages, assistant answers (with their tool calls) and tool results, in "
        "order. An answer still being written is listed with status `streaming`. Pages go "
        "forward from the first message with `cursor`; to read backwards from the newest, "
        "pass `before` (a message's `seq`, or 0 for the newest messages): the page holds the "
        "latest `limit` messages before it, oldest first, and `older` is the `before` of the "
        "page preceding it."
    ),
    responses=error_responses(400, 404, 422, examples=CURSOR_ERROR),
)
async def list_messages(
    session_id: SessionPath,
    state: State,
    user: CurrentUser,
    paging: Paging,
    before: Annotated[
        int | None,
        Query(
            ge=0,
            description=(
                "Page backwards: the newest `limit` messages whose `seq` is below this one "
                "(0: the newest of all). Not with `cursor`."
            ),
        ),
    ] = None,
) -> MessagePage:
    sessions = state.sessions
    if before is not None:
        if paging.cursor is not None:
            raise ApiError(
                400,
                "bad_request",
                "Give either cursor (page forward) or before (page backward), not both.",
                {"parameters": ["cursor", "before"]},
            )
        await sessions.get_session(session_id, user_id=user)
        rows = await sessions.store.load_records(
            session_id, before_seq=before or None, limit=paging.limit + 1
        )
        more = len(rows) > paging.limit
        shown = rows[1:] if more else rows
        return MessagePage(
            items=[MessageOut.of(r) for r in shown],
            older=shown[0].seq if more and shown else None,
        )
    after = decode_cursor("messages", paging.cursor) or 0
    if type(after) is not int or after < 0:
        raise invalid_cursor(paging.cursor or "")
    await sessions.get_session(session_id, user_id=user)
    records = await sessions.store.load_records(session_id, after_seq=after)
    page = records[: paging.limit]
    more = len(records) > paging.limit
    return MessagePage(
        items=[MessageOut.of(r) for r in page],
        next_cursor=encode_cursor("messages", page[-1].seq) if more else None,
    )


@router.post(
    "/sessions/{session_id}/compact",
    summary="Compact a session's context now",
    description=(
        "Summarises or drops the session's older turns in the context its next requests "
        "send, as happens on its own when the context nears the model's window. The stored "
        "messages stay whole. 409 while the session runs a turn."
    ),
    responses=error_responses(404, 409, 422),
)
async def compact_session(
    session_id: SessionPath, state: State, user: CurrentUser
) -> CompactionOut:
    loop = state.loop
    await state.sessions.get_session(session_id, user_id=user)
    if loop.list_tasks(user_id=user, session_id=session_id, state=(*_LIVE, "waiting")):
        raise ApiError(
            409,
            "session_busy",
            f"Session '{session_id}' is running a turn; compact it when the turn ends.",
            {"session_id": session_id},
        )
    result = await loop.compact_session(session_id)
    strategy = result.strategy or "none"
    return CompactionOut(
        session_id=session_id,
        compacted=strategy != "none",
        tokens_before=result.tokens_before,
        tokens_after=result.tokens_after,
        limit=result.limit,
        strategy=strategy,
        summarized_messages=result.summarized_messages,
        dropped_messages=result.dropped_messages,
        cleared_outputs=result.cleared_outputs,
        errors=list(result.errors),
    )


@router.get(
    "/sessions/{session_id}/todos",
    summary="Get a session's todo list (the agent's plan), in order",
    responses=error_responses(400, 404, 422, examples=CURSOR_ERROR),
)
async def list_todos(
    session_id: SessionPath, state: State, user: CurrentUser, paging: Paging
) -> TodoPage:
    rows = await state.sessions.load_todos(session_id, user_id=user)
    items, cursor = page_of("todos", rows, paging)
    return TodoPage(
        items=[TodoOut(content=r.content, status=r.status) for r in items], next_cursor=cursor
    )


# ----------------------------------------------------------------------------- tools


class SessionTools(BaseModel):
    """A session's own tool settings: tools turned off for it, and permission rules layered
    over the server's policy (the shape of ``PERMISSIONS_CONFIG``: ``allow``, ``ask``,
    ``deny``, ``default``). The server's deny rules always win."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "disabled": ["write_file", "edit_file"],
                "permissions": {"allow": ["shell(pytest *)"], "deny": ["shell(git push*)"]},
            }
        },
    )

    disabled: list[str] = Field(default_factory=list, max_length=1000)
    permissions: dict[str, Any] | None = None


class SessionToolState(BaseModel):
    name: str
    source: str
    enabled: bool


class SessionToolsOut(SessionTools):
    model_config = ConfigDict(extra="forbid")

    tools: list[SessionToolState] = Field(description="Every tool, and whether it is on here.")


def _tools_out(state: Any, settings: dict[str, Any]) -> SessionToolsOut:
    disabled = list(settings.get("disabled") or [])
    off = set(disabled)
    return SessionToolsOut(
        disabled=disabled,
        permissions=settings.get("permissions"),
        tools=[
            SessionToolState(name=t.name, source=t.source, enabled=t.name not in off)
            for t in state.loop.agent.tools.tools()
        ],
    )


@router.get(
    "/sessions/{session_id}/tools",
    summary="Show a session's tools and its own permission rules",
    responses=error_responses(404, 422),
)
async def get_session_tools(
    session_id: SessionPath, state: State, user: CurrentUser
) -> SessionToolsOut:
    settings = await state.sessions.load_tool_settings(session_id, user_id=user)
    return _tools_out(state, settings)


@router.put(
    "/sessions/{session_id}/tools",
    summary="Turn tools off for a session, and set its own permission rules",
    description=(
        "Replaces the session's tool settings; the next turn uses them. A name that is not a "
        "tool, or a rule that is not valid, is a 422 naming it."
    ),
    responses=error_responses(404, *BODY_ERRORS),
)
async def put_session_tools(
    session_id: SessionPath, body: SessionTools, state: State, user: CurrentUser
) -> SessionToolsOut:
    from agent_template.api.errors import ApiError

    await state.sessions.get_session(session_id, user_id=user)  # 404 first
    known = {t.name for t in state.loop.agent.tools.tools()}
    unknown = sorted(set(body.disabled) - known)
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"Not tools of this server: {', '.join(unknown)}. See GET /api/v1/tools.",
            {"errors": [{"field": "disabled", "problem": f"unknown tool {n!r}"} for n in unknown]},
        )
    settings: dict[str, Any] = {}
    if body.disabled:
        settings["disabled"] = sorted(set(body.disabled))
    if body.permissions:
        settings["permissions"] = body.permissions
    try:
        state.loop.approvals.use_session_settings(session_id, settings)
    except AgentTemplateError as exc:
        raise ApiError(
            422,
            "invalid_request",
            f"Invalid permissions: {exc}",
            {"errors": [{"field": "permissions", "problem": str(exc)}]},
        ) from None
    await state.sessions.save_tool_settings(session_id, settings, user_id=user)
    return _tools_out(state, settings)
