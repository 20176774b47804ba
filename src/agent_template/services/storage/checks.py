"""Consistency checks of the stored data, for tests and operators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select, text

from agent_template.services.storage import schema as s

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["find_problems"]


async def find_problems(engine: AsyncEngine, dialect: str) -> list[str]:
    """Problems found in the stored data: corruption, orphans, counts that disagree."""
    problems: list[str] = []
    async with engine.connect() as conn:
        if dialect == "sqlite":
            result = (await conn.execute(text("PRAGMA integrity_check"))).scalar()
            if result != "ok":
                problems.append(f"sqlite integrity_check: {result}")
        m, ss = s.messages, s.sessions
        orphans = await conn.scalar(
            select(func.count())
            .select_from(m.outerjoin(ss, m.c.session_id == ss.c.id))
            .where(ss.c.id.is_(None))
        )
        if orphans:
            problems.append(f"{orphans} messages without a session")
        counts = await conn.execute(
            select(ss.c.id, ss.c.message_count, func.count(m.c.id), func.max(m.c.seq))
            .select_from(ss.outerjoin(m, m.c.session_id == ss.c.id))
            .group_by(ss.c.id, ss.c.message_count)
        )
        for sid, count, actual, top in counts:
            if count != actual or (top or 0) != actual:
                problems.append(f"session {sid}: count {count}, rows {actual}, max seq {top}")
    return problems
