"""Approval rows in SQL (a part of :class:`SQLStore`).

Only the SQL lives here; asking, waiting and resuming are
:class:`agent_template.services.approvals.ApprovalManager`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, select, update

from agent_template.services.storage import schema as s
from agent_template.services.storage.records import ApprovalRecord

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Approvals"]

_COLUMNS = tuple(s.approvals.c)


def _record(row: Any) -> ApprovalRecord:
    return ApprovalRecord(**row._mapping)


class Approvals:
    """Approval rows; mixed into :class:`SQLStore`, which provides ``_tx``."""

    if TYPE_CHECKING:

        def _tx(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def insert_approval(self, record: ApprovalRecord) -> None:
        """Store a new request (its id must be new)."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.approvals).values(**record.as_row()))

    async def load_approval(self, approval_id: str) -> ApprovalRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(*_COLUMNS).where(s.approvals.c.id == approval_id))
            ).first()
        return None if row is None else _record(row)

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
        """Requests matching every given filter, oldest first."""
        a = s.approvals
        conditions = []
        if user_id is not None:
            conditions.append(a.c.user_id == user_id)
        if task_id is not None:
            conditions.append(a.c.task_id == task_id)
        if session_id is not None:
            conditions.append(a.c.session_id == session_id)
        if states:
            conditions.append(a.c.state.in_(list(states)))
        if expired_before is not None:
            conditions.append(a.c.expires_at < expired_before)
        query = select(*_COLUMNS).order_by(a.c.created_at, a.c.id).limit(limit)
        if conditions:
            query = query.where(and_(*conditions))
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    async def answer_approval(
        self,
        approval_id: str,
        state: str,
        message: str | None,
        at: float,
        content: str | None = None,
    ) -> bool:
        """Record the answer if the request is still pending.

        Returns:
            True when this call answered it; False when it was answered (or timed out) first.
        """
        a = s.approvals
        async with self._tx(write=True) as conn:
            done = await conn.execute(
                update(a)
                .where(and_(a.c.id == approval_id, a.c.state == "pending"))
                .values(state=state, message=message, answered_at=at, content=content)
            )
        return bool(done.rowcount == 1)
