"""Approvals: ``/api/v1/approvals``: the tool calls waiting for a person, and the answers.

A run whose tool call needs approval (an ``ask`` rule of the permission policy) waits, and its
stream carries an ``approval_request`` frame. Answer it here (or with a WebSocket ``approve``
message): ``approve``, ``deny`` or ``always`` (approve it and the same calls for the rest of
the session). A request stays pending across a server restart; answering it afterwards
resumes the run. A caller sees only their own requests.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from agent_template.api.deps import CurrentUser, State
from agent_template.api.schemas import BODY_ERRORS, error_responses
from agent_template.services.storage.records import ApprovalRecord

__all__ = ["ApprovalAnswer", "ApprovalOut", "router"]

router = APIRouter()

ApprovalPath = Annotated[
    str, Path(min_length=1, max_length=64, description="The approval request's id.")
]

_NOT_FOUND = {404: ("approval_not_found", "Approval request 'ap_1f' does not exist.")}


class ApprovalOut(BaseModel):
    """An approval request and, once given, its answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "approval_id": "ap_5d0c2b9e61f84e0fa1b2",
                "task_id": "9f1c2e7d",
                "session_id": "demo",
                "call_id": "call_1",
                "tool": "shell",
                "arguments": {"command": "pytest -q && git push"},
                "reason": "shell(git push) needs approval",
                "parts": ["git push"],
                "state": "pending",
                "message": None,
                "created_at": 1764672000.0,
                "expires_at": 1764672300.0,
                "answered_at": None,
            }
        }
    )

    approval_id: str
    task_id: str
    session_id: str | None
    call_id: str
    tool: str
    arguments: dict[str, object] | str = Field(
        description="The call's arguments (as the model wrote them when not a JSON object)."
    )
    reason: str = Field(
        description="Why the policy asks: the rule, and for a shell command, which part."
    )
    parts: list[str] = Field(description="The commands of a shell call that need the answer.")
    state: Literal["pending", "approve", "deny", "always", "timeout"]
    message: str | None = None
    kind: Literal["tool_call", "question"] = Field(
        "tool_call",
        description="question: an MCP server asks the user during the call (`reason` is the "
        "question, `arguments` holds the `schema` of the answer or a `url`); approve with "
        "`content`, deny to decline.",
    )
    content: dict[str, object] | None = Field(None, description="A question's answer.")
    created_at: float
    expires_at: float = Field(description="When no answer counts as a denial.")
    answered_at: float | None = None

    @classmethod
    def of(cls, record: ApprovalRecord) -> ApprovalOut:
        try:
            arguments: dict[str, object] | str = json.loads(record.arguments)
        except ValueError:
            arguments = record.arguments
        if not isinstance(arguments, dict):
            arguments = record.arguments
        return cls(
            approval_id=record.id,
            task_id=record.task_id,
            session_id=record.session_id,
            call_id=record.call_id,
            tool=record.tool,
            arguments=arguments,
            reason=record.reason,
            parts=json.loads(record.parts or "[]"),
            state=record.state,  # type: ignore[arg-type]
            message=record.message,
            kind=record.kind,  # type: ignore[arg-type]
            content=json.loads(record.content) if record.content else None,
            created_at=record.created_at,
            expires_at=record.expires_at,
            answered_at=record.answered_at,
        )


class ApprovalList(BaseModel):
    items: list[ApprovalOut]


class ApprovalAnswer(BaseModel):
    """The answer: ``always`` approves this call and the same ones for the session."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"decision": "approve", "message": "fine, go ahead"}},
    )

    decision: Literal["approve", "deny", "always"]
    message: str | None = Field(
        None, max_length=2000, description="A note the model reads with the answer."
    )
    content: dict[str, object] | None = Field(
        None, description="The answer to a question (`kind` question), fitting its schema."
    )


@router.get(
    "/approvals",
    summary="List your pending approval requests",
    description="Oldest first; `session_id` narrows the list to one session.",
    responses=error_responses(),
)
async def list_approvals(
    state: State,
    user: CurrentUser,
    session_id: Annotated[str | None, Query(max_length=200)] = None,
) -> ApprovalList:
    records = await state.loop.approvals.pending(user_id=user, session_id=session_id)
    return ApprovalList(items=[ApprovalOut.of(r) for r in records])


@router.get(
    "/approvals/{approval_id}",
    summary="Show one approval request",
    responses=error_responses(404, examples=_NOT_FOUND),
)
async def get_approval(approval_id: ApprovalPath, state: State, user: CurrentUser) -> ApprovalOut:
    return ApprovalOut.of(await state.loop.approvals.get(approval_id, user_id=user))


@router.post(
    "/approvals/{approval_id}",
    summary="Answer an approval request",
    description=(
        "The waiting run goes on at once (or, if the server restarted since the request, "
        "is resumed). 409 when the request was answered already or expired."
    ),
    responses=error_responses(
        404,
        409,
        *BODY_ERRORS,
        examples={
            **_NOT_FOUND,
            409: ("approval_answered", "Approval request 'ap_1f' timed out already."),
        },
    ),
)
async def answer_approval(
    approval_id: ApprovalPath, body: ApprovalAnswer, state: State, user: CurrentUser
) -> ApprovalOut:
    record = await state.loop.approvals.answer(
        approval_id, body.decision, user_id=user, message=body.message, content=body.content
    )
    return ApprovalOut.of(record)
