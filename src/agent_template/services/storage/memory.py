"""Sessions kept in this process only: for tests, demos and runs that keep nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from agent_template.errors import SessionNotFoundError
from agent_template.models import AssistantMessage, Message, Session, Task
from agent_template.services.storage.records import (
    ApprovalRecord,
    MessageRecord,
    TaskRecord,
    TodoRecord,
)

__all__ = ["MemorySessionStore"]


class MemorySessionStore:
    """Everything in this process: fast, and gone when it ends."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._records: dict[str, list[MessageRecord]] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._todos: dict[str, list[TodoRecord]] = {}
        self._compaction: dict[str, dict[str, Any] | None] = {}
        self._runs: dict[str, tuple[str, float]] = {}  # session id -> (holder task, until)
        self._approvals: dict[str, ApprovalRecord] = {}
        self._tool_settings: dict[str, dict[str, Any] | None] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save_session(self, session: Session) -> None:
        self._sessions[session.session_id] = session.model_copy()
        self._records.setdefault(session.session_id, [])

    async def create_session_if_absent(self, session: Session) -> Session:
        """Store ``session`` unless its id exists; return the stored one (see SQLStore)."""
        if session.session_id not in self._sessions:
            await self.save_session(session)
        return self._sessions[session.session_id].model_copy()

    async def load_session(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        return session.model_copy() if session else None

    async def delete_session(self, session_id: str) -> bool:
        self._records.pop(session_id, None)
        self._todos.pop(session_id, None)
        self._runs.pop(session_id, None)
        self._tasks = {k: t for k, t in self._tasks.items() if t.session_id != session_id}
        return self._sessions.pop(session_id, None) is not None

    async def list_sessions(self, user_id: str | None, limit: int, offset: int) -> list[Session]:
        rows = [s for s in self._sessions.values() if user_id is None or s.user_id == user_id]
        rows.sort(key=lambda s: s.last_active_at, reverse=True)
        return [s.model_copy() for s in rows[offset : offset + limit]]

    async def session_ids_idle_since(self, cutoff: float) -> list[str]:
        return [sid for sid, s in self._sessions.items() if s.last_active_at < cutoff]

    def _touch(self, session_id: str, added: int) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        session.message_count += added
        session.updated_at = session.last_active_at = time.time()

    async def append_messages(
        self, session_id: str, messages: Sequence[Message], *, task_id: str | None = None
    ) -> list[int]:
        records = self._records.setdefault(session_id, [])
        seqs = []
        rest = list(messages)
        if task_id and rest and isinstance(rest[0], AssistantMessage):
            for record in reversed(records):
                if record.task_id == task_id and record.status == "streaming":
                    record.message, record.status = rest[0], rest[0].status
                    seqs.append(record.seq)
                    rest.pop(0)
                    break
        if rest:
            self._touch(session_id, len(rest))
        for message in rest:
            seq = len(records) + 1
            status = getattr(message, "status", "complete")
            records.append(MessageRecord(seq, message, status, task_id, time.time(), False))
            seqs.append(seq)
        return seqs

    async def checkpoint(self, session_id: str, task_id: str, text: str) -> None:
        partial = AssistantMessage(content=text, status="streaming")
        for record in self._records.get(session_id, []):
            if record.task_id == task_id and record.status == "streaming":
                record.message = partial
                return
        await self.append_messages(session_id, [partial], task_id=task_id)

    async def load_records(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
    ) -> list[MessageRecord]:
        end = before_seq if before_seq is not None else float("inf")
        rows = [r for r in self._records.get(session_id, []) if after_seq < r.seq < end]
        return rows[-limit:] if limit else rows

    async def record_task(
        self, task: Task, lease_until: float | None, *, release_run: bool = False
    ) -> None:
        if release_run and task.session_id is not None:
            await self.release_run(task.session_id, task.task_id)
        self._tasks[task.task_id] = TaskRecord(
            task.task_id,
            task.session_id,
            task.type,
            task.state.value,
            task.created_at,
            task.started_at,
            task.finished_at,
            task.error,
            None,
            lease_until,
            getattr(task, "user_id", None),
            getattr(task, "parent_id", None),
        )

    async def renew_leases(
        self, task_ids: Iterable[str], until: float, *, holding: Iterable[str] = ()
    ) -> set[str]:
        """Extend leases (see SQLStore); returns the holders whose session run lease is gone
        (one process: nobody else can have taken a task over)."""
        ids, holders = set(task_ids), set(holding)
        for task_id in ids:
            if task_id in self._tasks:
                self._tasks[task_id].lease_expires_at = until
        kept: set[str] = set()
        for session_id, (holder, _) in list(self._runs.items()):
            if holder in holders:
                self._runs[session_id] = (holder, until)
                kept.add(holder)
        return holders - kept

    async def load_tasks(self, session_id: str) -> list[TaskRecord]:
        return [t for t in self._tasks.values() if t.session_id == session_id]

    async def recover(self, now: float | None = None) -> list[str]:
        return []  # nothing outlives the process

    async def acquire_run(
        self,
        session_id: str,
        task_id: str,
        until: float,
        *,
        kinds: Iterable[str] = ("chat",),
    ) -> bool:
        """Take the session's run lease for ``task_id`` until ``until`` (see SQLStore).

        Free when nobody holds it or it expired; not granted while an older pending task of
        the session, of a type in ``kinds``, waits with a live lease.

        Raises:
            SessionNotFoundError: the session does not exist.
        """
        if session_id not in self._sessions:
            raise SessionNotFoundError(session_id)
        now = time.time()
        mine = self._tasks.get(task_id)
        if mine is not None:
            wanted = set(kinds)
            for other in self._tasks.values():
                if (
                    other.session_id == session_id
                    and other.task_id != task_id
                    and other.state == "pending"
                    and other.type in wanted
                    and other.created_at < mine.created_at
                    and other.lease_expires_at is not None
                    and other.lease_expires_at >= now
                ):
                    return False
        held = self._runs.get(session_id)
        if held is not None and held[0] != task_id and held[1] >= now:
            return False
        self._runs[session_id] = (task_id, until)
        return True

    async def park_run(self, session_id: str, task_id: str, until: float) -> bool:
        """Keep the session's run lease for ``task_id`` until ``until`` (see SQLStore)."""
        held = self._runs.get(session_id)
        if held is None or held[0] != task_id:
            return False
        self._runs[session_id] = (task_id, until)
        return True

    async def release_run(self, session_id: str, task_id: str) -> None:
        """Free the session's run lease if ``task_id`` holds it."""
        held = self._runs.get(session_id)
        if held is not None and held[0] == task_id:
            del self._runs[session_id]

    async def run_holder(self, session_id: str) -> str | None:
        """The task holding a live run lease on the session, or None."""
        held = self._runs.get(session_id)
        if held is None or held[1] < time.time():
            return None
        return held[0]

    async def save_todos(self, session_id: str, items: Sequence[TodoRecord]) -> None:
        self._todos[session_id] = list(items)

    async def load_todos(self, session_id: str) -> list[TodoRecord]:
        return list(self._todos.get(session_id, []))

    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None:
        self._compaction[session_id] = state

    async def save_tool_settings(self, session_id: str, settings: dict[str, Any] | None) -> None:
        self._tool_settings[session_id] = settings or None

    async def load_tool_settings(self, session_id: str) -> dict[str, Any] | None:
        return self._tool_settings.get(session_id)

    async def load_compaction(self, session_id: str) -> dict[str, Any] | None:
        return self._compaction.get(session_id)

    async def insert_approval(self, record: ApprovalRecord) -> None:
        self._approvals[record.id] = record

    async def load_approval(self, approval_id: str) -> ApprovalRecord | None:
        return self._approvals.get(approval_id)

    async def find_approvals(
        self,
        *,
        user_id: str | None = None,
        task_id: str | None = None,
        session_id: str | None = None,
        states: Sequence[str] = (),
        expired_before: float | None = None,
        limit: int = 1000,
    ) -> list[ApprovalRecord]:
        found = [
            a
            for a in self._approvals.values()
            if (user_id is None or a.user_id == user_id)
            and (task_id is None or a.task_id == task_id)
            and (session_id is None or a.session_id == session_id)
            and (not states or a.state in states)
            and (expired_before is None or a.expires_at < expired_before)
        ]
        found.sort(key=lambda a: (a.created_at, a.id))
        return found[:limit]

    async def answer_approval(
        self,
        approval_id: str,
        state: str,
        message: str | None,
        at: float,
        content: str | None = None,
    ) -> bool:
        record = self._approvals.get(approval_id)
        if record is None or record.state != "pending":
            return False
        record.state, record.message, record.answered_at = state, message, at
        record.content = content
        return True
