"""Approvals: tool calls that wait for a person, durably.

The :class:`ApprovalManager` is the registry's :class:`~agent_template.services.tool_manager.
Authorizer`. Before each call it asks the permission policy: ``allow`` runs the call, ``deny``
refuses it (the model is told why), and ``ask`` stores an approval request, puts an
``approval_request`` event in the run's stream, and waits for the answer: approve, deny, or
always (approve this and the same calls for the rest of the session). No answer within
``APPROVAL_TIMEOUT_S`` is a denial.

While it waits, the run frees its concurrency slot and its task is ``waiting``; its session
stays its own (see :meth:`TaskScheduler.park`). The request is a row in the store, and the
assistant message with the pending call is in the history, so a request outlives the process:
when the server stops, waiting runs stop without closing their pending calls, and answering
the request afterwards resumes the run from that call (:meth:`ApprovalManager.answer`, then
the ``chat`` handler's resume). Another replica that holds the waiting run notices an answer
given elsewhere within :data:`POLL_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agent_template.errors import AgentTemplateError
from agent_template.models import ApprovalRequested, ApprovalResolved, ToolCall, ToolContext
from agent_template.services.storage.records import ApprovalRecord

if TYPE_CHECKING:
    from agent_template.services.mcp.models import ElicitationAnswer, ElicitationRequest
    from agent_template.services.permissions import PermissionPolicy
    from agent_template.services.tool_manager import Tool

__all__ = [
    "ApprovalAlreadyAnsweredError",
    "ApprovalManager",
    "ApprovalNotFoundError",
    "Decision",
]

log = logging.getLogger("agent_template.approvals")

Decision = Literal["approve", "deny", "always"]
ANSWERS: tuple[str, ...] = ("approve", "deny", "always")
POLL_S = 2.0  # how often a waiting run looks for an answer given to another process
RULES_TTL_S = 5.0  # a session's own rules, changed in another process, apply within this
_RULES_KEPT = 10_000  # sessions whose rules are kept in memory at once


class ApprovalNotFoundError(AgentTemplateError):
    """No such approval request (or it is another user's)."""

    code = "approval_not_found"

    def __init__(self, approval_id: str) -> None:
        super().__init__(
            f"Approval request '{approval_id}' does not exist. List the pending ones with "
            "GET /api/v1/approvals."
        )


class ApprovalAlreadyAnsweredError(AgentTemplateError):
    """The request was answered (or timed out) already."""

    code = "approval_answered"

    def __init__(self, record: ApprovalRecord) -> None:
        said = "timed out" if record.state == "timeout" else f"was answered '{record.state}'"
        super().__init__(f"Approval request '{record.id}' {said} already; it cannot change.")
        self.record = record


class ApprovalStore(Protocol):
    async def insert_approval(self, record: ApprovalRecord) -> None: ...
    async def load_approval(self, approval_id: str) -> ApprovalRecord | None: ...
    async def find_approvals(
        self,
        *,
        user_id: str | None = None,
        task_id: str | None = None,
        session_id: str | None = None,
        states: Sequence[str] = (),
        expired_before: float | None = None,
        limit: int = 1000,
    ) -> list[ApprovalRecord]: ...
    async def answer_approval(
        self,
        approval_id: str,
        state: str,
        message: str | None,
        at: float,
        content: str | None = None,
    ) -> bool: ...
    async def load_tool_settings(self, session_id: str) -> dict[str, Any] | None: ...


class Parking(Protocol):
    """What the manager needs of the scheduler (the agent loop)."""

    async def park(self, task_id: str, until: float) -> None: ...
    async def unpark(self, task_id: str) -> None: ...
    def suspending(self, task_id: str) -> bool: ...


# An answer: the decision, the note for the model, and a question's content (JSON).
_Answer = tuple[str, str | None, str | None]


@dataclass(slots=True)
class _Waiter:
    record: ApprovalRecord
    answered: asyncio.Future[_Answer]


class ApprovalManager:
    """Checks every tool call against the policy and runs the approvals of ``ask`` calls.

    Args:
        store: where requests live (the session store: SQL or memory).
        policy: the permission policy (:class:`~agent_template.services.permissions.
            PermissionPolicy`).
        timeout_s: an unanswered request is denied after this many seconds.
        resume: called with an answered request when no process waits in its run (the
            run stopped while waiting): the agent loop resumes the run.
    """

    def __init__(
        self,
        store: ApprovalStore,
        policy: PermissionPolicy,
        *,
        timeout_s: float = 300.0,
        resume: Callable[[ApprovalRecord], Any] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.timeout_s = timeout_s
        self.resume = resume
        self.scheduler: Parking | None = None
        self._waiting: dict[str, _Waiter] = {}  # approval id -> the run waiting here
        self._suspended: set[str] = set()  # call ids left open by runs stopped waiting
        self._grants: dict[str, Any] = {}  # session id -> its grants, once loaded
        self._policies: dict[str, tuple[float, PermissionPolicy]] = {}  # session -> until, policy

    # ------------------------------------------------------------------ the authorizer

    async def authorize(
        self, tool: Tool, call: ToolCall, context: ToolContext | None
    ) -> str | None:
        """None when the call may run; otherwise why not (the model reads it)."""
        arguments = _arguments(call.arguments)
        session_id = None
        if context is not None:  # a subagent has no session: its grants are its parent's
            session_id = context.session_id or context.extra.get("parent_session_id")
        grants = await self._session_grants(session_id) if session_id else None
        policy = await self._policy_for(session_id) if session_id else self.policy
        decision = policy.decide(tool.name, arguments, source=tool.source, session=grants)
        if decision.action == "allow":
            return None
        if decision.action == "deny":
            return f"{decision.reason} Do not retry it; tell the user if it matters."
        task_id = context.task_id if context is not None else None
        if task_id is not None:
            known = await self._answer_given(task_id, call.id)
            if known is not None:  # a resumed run: the answer came while it was stopped
                return _verdict(known.state, known.message, self.timeout_s)
        if context is None or context.emit is None or task_id is None:
            return (
                f"it needs a person's approval ({decision.reason}) and this run has nobody "
                "to ask. Allow the tool in PERMISSIONS_CONFIG to run it unattended."
            )
        return await self._ask(tool, call, context, decision)

    def keep_pending(self, call: ToolCall) -> bool:
        """Whether a stopped run leaves this call open (it waits for an answer)."""
        return call.id in self._suspended

    async def _ask(
        self, tool: Tool, call: ToolCall, context: ToolContext, decision: Any
    ) -> str | None:
        to_ask = list(getattr(decision, "to_ask", None) or [])
        record = self._record(
            context, call.id, tool.name, call.arguments, decision.reason, parts=to_ask
        )
        event = ApprovalRequested(
            approval_id=record.id,
            call_id=call.id,
            tool=tool.name,
            arguments=call.arguments,
            reason=decision.reason,
            parts=to_ask,
            expires_at=record.expires_at,
        )
        state, message, _ = await self._put_to_user(record, context, event, park=True)
        if state == "always":
            self._grants.pop(record.session_id or "", None)  # reloaded with the new grant
        return _verdict(state, message, self.timeout_s)

    def _record(
        self,
        context: ToolContext,
        call_id: str,
        tool: str,
        arguments: str,
        reason: str,
        *,
        parts: list[str] | None = None,
        kind: str = "tool_call",
    ) -> ApprovalRecord:
        now = time.time()
        return ApprovalRecord(
            id=f"ap_{uuid.uuid4().hex[:20]}",
            task_id=context.task_id or "",
            session_id=context.session_id or context.extra.get("parent_session_id"),
            user_id=context.user_id or "default",
            call_id=call_id,
            tool=tool,
            arguments=arguments,
            reason=reason,
            parts=json.dumps(parts or []),
            state="pending",
            message=None,
            created_at=now,
            expires_at=now + self.timeout_s,
            kind=kind,
        )

    async def _put_to_user(
        self,
        record: ApprovalRecord,
        context: ToolContext,
        event: ApprovalRequested,
        *,
        park: bool,
    ) -> _Answer:
        """Store the request, put it in the run's stream and wait for the answer; then say
        what it was. With ``park`` the run waits as ``waiting``, its slot free meanwhile,
        and a run stopped while it waits leaves the request pending for a resume."""
        assert context.emit is not None and context.task_id is not None
        await self.store.insert_approval(record)
        waiter = _Waiter(record, asyncio.get_running_loop().create_future())
        self._waiting[record.id] = waiter
        scheduler = self.scheduler if park else None
        if scheduler is not None:  # waiting (and its slot free) before anyone hears of it
            await scheduler.park(context.task_id, record.expires_at)
        context.emit(event)
        try:
            answer = await self._await_answer(waiter)
        except asyncio.CancelledError:
            if scheduler is not None and scheduler.suspending(context.task_id):
                self._suspended.add(record.call_id)  # stays pending, for a resume
            else:  # the run was cancelled: the request is moot, not pending for ever
                await self._withdraw(record)
            raise
        finally:
            self._waiting.pop(record.id, None)
            if scheduler is not None:
                await scheduler.unpark(context.task_id)
        state, message, _ = answer
        context.emit(
            ApprovalResolved(
                approval_id=record.id,
                call_id=record.call_id,
                decision=state,  # type: ignore[arg-type]
                message=message or "",
            )
        )
        return answer

    async def _withdraw(self, record: ApprovalRecord) -> None:
        """A request whose call was cancelled: recorded as denied, so no list shows it."""
        try:
            await asyncio.shield(
                self.store.answer_approval(record.id, "deny", "The run was cancelled.", time.time())
            )
        except Exception:  # it times out by itself, later
            log.warning("could not withdraw approval request %s", record.id, exc_info=True)

    async def _await_answer(self, waiter: _Waiter) -> _Answer:
        """The answer given here, or found in the store (given to another process), or
        ``timeout`` once the request expires."""
        record = waiter.record
        while True:
            left = record.expires_at - time.time()
            if left <= 0:
                if await self.store.answer_approval(record.id, "timeout", None, time.time()):
                    return "timeout", None, None
                stored = await self.store.load_approval(record.id)  # answered just before
                if stored is not None and stored.state != "pending":
                    return stored.state, stored.message, stored.content
                return "timeout", None, None
            try:
                return await asyncio.wait_for(asyncio.shield(waiter.answered), min(left, POLL_S))
            except TimeoutError:
                stored = await self.store.load_approval(record.id)
                if stored is not None and stored.state != "pending":
                    return stored.state, stored.message, stored.content

    async def _answer_given(self, task_id: str, call_id: str) -> ApprovalRecord | None:
        for record in await self.store.find_approvals(task_id=task_id):
            if (
                record.call_id == call_id
                and record.state != "pending"
                and record.kind != "question"
            ):
                return record
        return None

    async def _session_grants(self, session_id: str) -> Any:
        grants = self._grants.get(session_id)
        if grants is None:
            from agent_template.services.permissions import SessionGrants

            grants = SessionGrants()
            if len(self._grants) >= _RULES_KEPT:
                self._grants.clear()
            for record in await self.store.find_approvals(
                session_id=session_id, states=("always",)
            ):
                grants.grant(record.tool, json.loads(record.parts))
            self._grants[session_id] = grants
        return grants

    async def elicit(self, request: ElicitationRequest) -> ElicitationAnswer:
        """Put an MCP server's question (elicitation) to the user of the run whose call it
        belongs to, like an approval: the answer's ``content`` is the reply. Declined when
        no run can ask anyone; cancelled when nobody answers in time."""
        from agent_template.services.mcp.models import ElicitationAnswer

        context = request.context
        if context is None or context.emit is None or context.task_id is None:
            log.info(
                "MCP server %r asked %r with nobody to answer; declined",
                request.server,
                request.message,
            )
            return ElicitationAnswer("decline")
        asked = json.dumps({"schema": request.requested_schema, "url": request.url})
        record = self._record(
            context, context.call_id, request.server, asked, request.message, kind="question"
        )
        event = ApprovalRequested(
            approval_id=record.id,
            call_id=context.call_id,
            tool=request.server,
            arguments=asked,
            reason=request.message,
            expires_at=record.expires_at,
            kind="question",
            requested_schema=request.requested_schema,
            url=request.url,
        )
        state, _, content = await self._put_to_user(record, context, event, park=False)
        if state in ("approve", "always"):
            return ElicitationAnswer("accept", json.loads(content) if content else {})
        return ElicitationAnswer("cancel" if state == "timeout" else "decline")

    def use_session_settings(self, session_id: str, settings: dict[str, Any] | None) -> None:
        """Apply a session's tool settings (its ``permissions`` rules) from now on, here.

        Raises:
            PermissionConfigError: the rules are not valid (nothing changes then).
        """
        rules = (settings or {}).get("permissions")
        policy = (
            self.policy.merged(rules, origin=f"the rules of session '{session_id}'")
            if rules
            else self.policy
        )
        if len(self._policies) >= _RULES_KEPT:
            self._policies.clear()
        self._policies[session_id] = (time.monotonic() + RULES_TTL_S, policy)

    async def _policy_for(self, session_id: str) -> PermissionPolicy:
        kept = self._policies.get(session_id)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        settings = await self.store.load_tool_settings(session_id)
        try:
            self.use_session_settings(session_id, settings)
        except AgentTemplateError:  # stored before a rule became invalid: the strictest way
            log.warning("session %s has invalid permission rules; asking instead", session_id)
            return self.policy.merged({"default": "ask"})
        return self._policies[session_id][1]

    # ------------------------------------------------------------------ answers

    async def answer(
        self,
        approval_id: str,
        decision: str,
        *,
        user_id: str | None = None,
        message: str | None = None,
        content: dict[str, Any] | None = None,
    ) -> ApprovalRecord:
        """Answer a pending request (``approve``, ``deny`` or ``always``) for its user;
        ``content`` answers a question (``kind`` ``question``) that is approved.

        The run waiting for it goes on at once; a run that stopped while waiting (the server
        restarted) is resumed.

        Raises:
            ApprovalNotFoundError: no such request, or another user's.
            ApprovalAlreadyAnsweredError: answered already, or expired (it then counts as a
                denial, and the run was told so).
            ValueError: ``decision`` is not one of the three answers.
        """
        if decision not in ANSWERS:
            raise ValueError(f"an answer is one of {', '.join(ANSWERS)}, not {decision!r}")
        record = await self.store.load_approval(approval_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            raise ApprovalNotFoundError(approval_id)
        if record.state == "pending" and record.expires_at < time.time():
            await self.store.answer_approval(record.id, "timeout", None, time.time())
            record = await self.store.load_approval(approval_id) or record
            await self._resume_if_stopped(record)
        if record.state != "pending":
            raise ApprovalAlreadyAnsweredError(record)
        question = record.kind == "question"
        if question and record.id not in self._waiting:
            # The server's question died with the process that was asked it.
            await self.store.answer_approval(record.id, "timeout", None, time.time())
            record.state = "timeout"
            raise ApprovalAlreadyAnsweredError(record)
        encoded = json.dumps(content) if question and content is not None else None
        if not await self.store.answer_approval(record.id, decision, message, time.time(), encoded):
            raise ApprovalAlreadyAnsweredError(
                await self.store.load_approval(approval_id) or record
            )
        record.state, record.message, record.answered_at = decision, message, time.time()
        record.content = encoded
        if decision == "always" and not question:
            self._grants.pop(record.session_id or "", None)
        waiter = self._waiting.get(record.id)
        if waiter is not None and not waiter.answered.done():
            waiter.answered.set_result((decision, message, encoded))
        else:
            await self._resume_if_stopped(record)
        return record

    async def _resume_if_stopped(self, record: ApprovalRecord) -> None:
        """Resume the run of an answered request once none of its requests is pending,
        unless a process (this one or another) is still waiting in it."""
        if record.id in self._waiting or self.resume is None or record.kind == "question":
            return
        others = await self.store.find_approvals(task_id=record.task_id, states=("pending",))
        if others:
            return
        outcome = self.resume(record)
        if asyncio.iscoroutine(outcome):
            await outcome

    async def pending(
        self, *, user_id: str | None = None, session_id: str | None = None
    ) -> list[ApprovalRecord]:
        """The requests waiting for an answer, oldest first."""
        return await self.store.find_approvals(
            user_id=user_id, session_id=session_id, states=("pending",)
        )

    async def get(self, approval_id: str, *, user_id: str | None = None) -> ApprovalRecord:
        record = await self.store.load_approval(approval_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            raise ApprovalNotFoundError(approval_id)
        return record

    async def sweep(self) -> list[str]:
        """Time out expired requests that no process waits for, and resume their runs
        (the model is told nobody answered). Returns the ids timed out."""
        now = time.time()
        expired = await self.store.find_approvals(states=("pending",), expired_before=now)
        done: list[str] = []
        for record in expired:
            if record.id in self._waiting:
                continue  # its run times it out itself
            if await self.store.answer_approval(record.id, "timeout", None, now):
                record.state = "timeout"
                done.append(record.id)
                await self._resume_if_stopped(record)
        return done


def _arguments(raw: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _verdict(state: str, message: str | None, timeout_s: float) -> str | None:
    """What an answer means for the call: None runs it, a string refuses it."""
    if state in ("approve", "always"):
        return None
    note = f" They said: {message}" if message else ""
    if state == "timeout":
        return (
            f"it needed a person's approval and nobody answered within {timeout_s:g} s, so "
            "it was not run. Ask the user before trying again."
        )
    return f"the user denied it.{note} Do not retry it; ask what they want instead."
