"""Messages in SQL: numbered per session, checkpoints of answers still streaming.

A part of :class:`~agent_template.services.storage.sql.SQLStore`, split out by topic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select

from agent_template.models import AssistantMessage, Message
from agent_template.services.storage import schema as s
from agent_template.services.storage import statements as q
from agent_template.services.storage.codec import decode, encode
from agent_template.services.storage.records import MessageRecord

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["MessageLog"]


class MessageLog:
    """Message rows; mixed into :class:`SQLStore`, which provides ``_tx``."""

    compress_above: int

    if TYPE_CHECKING:

        def _tx(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def _reserve(self, conn: AsyncConnection, session_id: str, n: int, now: float) -> int:
        """Take ``n`` sequence numbers; the row lock serialises writers of one session."""
        done = await conn.execute(q.reserve_seqs(), {"p_sid": session_id, "p_n": n, "p_now": now})
        row = done.first()
        if row is None:
            from agent_template.errors import SessionNotFoundError

            raise SessionNotFoundError(session_id)
        return int(row[0]) - n + 1

    async def append_messages(
        self, session_id: str, messages: Sequence[Message], *, task_id: str | None = None
    ) -> list[int]:
        """Store messages in order; an assistant message replaces the task's checkpoint."""
        if not messages:
            return []
        now = time.time()
        seqs: list[int] = []
        async with self._tx(write=True) as conn:
            rest = list(messages)
            if task_id is not None and isinstance(rest[0], AssistantMessage):
                streaming = await self._streaming_row(conn, task_id)
                if streaming is not None:
                    seq = await self._rewrite(conn, streaming, rest.pop(0), now)
                    seqs.append(seq)
            if rest:
                first = await self._reserve(conn, session_id, len(rest), now)
                rows = []
                for i, message in enumerate(rest):
                    encoding, body = encode(message, self.compress_above)
                    rows.append(
                        {
                            "session_id": session_id,
                            "seq": first + i,
                            "role": message.role,
                            "status": getattr(message, "status", "complete"),
                            "encoding": encoding,
                            "body": body,
                            "task_id": task_id,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    seqs.append(first + i)
                await conn.execute(q.insert_messages(), rows)
        return seqs

    async def _streaming_row(self, conn: AsyncConnection, task_id: str) -> tuple[int, int] | None:
        row = (await conn.execute(q.streaming_row(), {"p_task": task_id})).first()
        return (int(row[0]), int(row[1])) if row else None

    async def _rewrite(
        self, conn: AsyncConnection, row: tuple[int, int], message: Message, now: float
    ) -> int:
        encoding, body = encode(message, self.compress_above)
        await conn.execute(
            q.rewrite_message(),
            {
                "p_id": row[0],
                "p_status": getattr(message, "status", "complete"),
                "p_encoding": encoding,
                "p_body": body,
                "p_now": now,
            },
        )
        return row[1]

    async def checkpoint(self, session_id: str, task_id: str, text: str) -> None:
        """Save the text of an answer still streaming (one row per task, rewritten in place)."""
        now = time.time()
        message = AssistantMessage(content=text, status="streaming")
        async with self._tx(write=True) as conn:
            streaming = await self._streaming_row(conn, task_id)
            if streaming is not None:
                await self._rewrite(conn, streaming, message, now)
                return
            seq = await self._reserve(conn, session_id, 1, now)
            encoding, body = encode(message, self.compress_above)
            await conn.execute(
                insert(s.messages).values(
                    session_id=session_id,
                    seq=seq,
                    role="assistant",
                    status="streaming",
                    encoding=encoding,
                    body=body,
                    task_id=task_id,
                    created_at=now,
                    updated_at=now,
                )
            )

    async def load_records(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
    ) -> list[MessageRecord]:
        """Messages in order, those after ``after_seq`` (and before ``before_seq``); with
        ``limit``, the most recent of them (read from the end)."""
        query = q.load_records(limited=limit is not None, before=before_seq is not None)
        params = {"p_sid": session_id, "p_after": after_seq, "p_before": before_seq}
        if limit is not None:
            params["p_limit"] = limit
        async with self._tx() as conn:
            rows = list((await conn.execute(query, params)).all())
        if limit is not None:
            rows.reverse()
        records = []
        for seq, status, encoding, body, task_id, created in rows:
            message = decode(encoding, body)
            if isinstance(message, AssistantMessage) and message.status != status:
                message.status = status
            records.append(MessageRecord(seq, message, status, task_id, created, encoding == 1))
        return records

    async def load_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        return [r.message for r in await self.load_records(session_id, limit=limit)]

    async def count_messages(self, session_id: str) -> int:
        async with self._tx() as conn:
            value = await conn.scalar(
                select(func.count())
                .select_from(s.messages)
                .where(s.messages.c.session_id == session_id)
            )
        return int(value or 0)
