"""Tools: ``GET /api/v1/tools`` lists the agent's tools; ``POST /api/v1/tools/call`` runs one.

A call made here goes the way the agent's own calls go: the same registry, argument
validation and time limit (``ToolManager``), the same ``before_tool_call`` and
``after_tool_call`` hooks (a hook may refuse the call) and the same bus events.
"""

from __future__ import annotations

import json
import uuid

from fastapi import APIRouter

from agent_template.api.deps import CurrentUser, State
from agent_template.api.schemas import (
    BODY_ERRORS,
    CURSOR_ERROR,
    Paging,
    ToolCallRequest,
    ToolCallResult,
    ToolOut,
    ToolPage,
    error_responses,
    page_of,
)
from agent_template.core.hooks import HookContext
from agent_template.core.run_loop import RunConfig, _executor
from agent_template.models import ToolCall
from agent_template.services.tool_manager import ToolContext

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/tools",
    summary="List the tools the agent may call, with their JSON schemas",
    responses=error_responses(400, 422, examples=CURSOR_ERROR),
)
async def list_tools(state: State, user: CurrentUser, paging: Paging) -> ToolPage:
    tools = state.loop.agent.tools.tools()
    items, cursor = page_of("tools", tools, paging)
    return ToolPage(
        items=[
            ToolOut(
                name=t.definition.name,
                description=t.definition.description,
                parameters=t.definition.parameters,
                source=t.source,
            )
            for t in items
        ],
        next_cursor=cursor,
    )


@router.post(
    "/tools/call",
    summary="Run one tool",
    description=(
        "Validates the arguments against the tool's schema (422 when they do not fit) and "
        "runs it within its time limit. A tool that fails or times out answers 200 with "
        "`is_error` true and the reason in `content`, as the model would read it. A tool "
        "that works on a session (todo_read, todo_write) needs `session_id`, one of yours."
    ),
    responses=error_responses(
        404,
        *BODY_ERRORS,
        examples={
            404: ("tool_not_found", "Tool 'weather': no such tool. Available tools: todo_read."),
            422: ("tool_invalid_arguments", "Tool 'todo_write': invalid arguments (todos: ...)."),
        },
    ),
)
async def call_tool(body: ToolCallRequest, state: State, user: CurrentUser) -> ToolCallResult:
    agent = state.loop.agent
    tools = agent.tools
    arguments = json.dumps(body.arguments)
    tools.get(body.name).parse_arguments(arguments)  # 404 unknown tool, 422 bad arguments
    session_id = body.session_id
    if session_id is not None:
        await state.sessions.get_session(session_id, user_id=user)  # 404 if not theirs
    call = ToolCall(id=f"api_{uuid.uuid4().hex[:16]}", name=body.name, arguments=arguments)
    config = RunConfig(
        context=ToolContext(session_id=session_id, user_id=user, deps=agent.deps),
        hooks=agent.hooks,
        bus=agent.bus,
        session_id=session_id,
        user_id=user,
        agent=agent.name,
    )
    hook_ctx = HookContext(session_id, agent.name, None, user) if agent.hooks else None
    execute, durations = _executor(tools, config, hook_ctx)
    result = await execute(call)
    return ToolCallResult(
        call_id=call.id,
        name=result.name,
        content=result.content,
        is_error=result.is_error,
        duration_ms=round(durations.get(call.id, 0.0), 3),
    )
