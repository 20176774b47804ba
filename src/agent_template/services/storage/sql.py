"""The SQL repository: sessions, messages, tasks, todos on SQLite or PostgreSQL.

The only module that writes SQL. Every write is one transaction committed before the call
returns, so whatever a caller acknowledges afterwards survives a crash of the process.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, insert, select, update

from agent_template.errors import StorageUnavailableError
from agent_template.models import AssistantMessage, Message, Session, Task
from agent_template.services.storage import schema as s
from agent_template.services.storage.codec import COMPRESS_ABOVE_BYTES, decode, encode
from agent_template.services.storage.engine import (
    CONNECT_FAILURES,
    UNAVAILABLE,
    async_url,
    create_engine,
    describe,
    owner_is_dead,
    process_owner,
    safe_url,
)
from agent_template.services.storage.records import MessageRecord, TaskRecord, TodoRecord

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["MessageRecord", "SQLStore", "TaskRecord", "TodoRecord", "async_url"]


class SQLStore:
    """Sessions, messages, tasks and todos in a SQL database.

    Args:
        url: ``DATABASE_URL``: ``sqlite:///path`` (the folder is created) or
            ``postgresql+asyncpg://...``.
        compress_above: message bodies larger than this many bytes are stored LZ4-compressed.
        connect_args: passed to the driver (for example a PostgreSQL ``search_path``).

    Nothing happens until :meth:`open` (called by the first operation), which applies the
    migrations.
    """

    def __init__(
        self,
        url: str,
        *,
        compress_above: int = COMPRESS_ABOVE_BYTES,
        connect_args: dict[str, Any] | None = None,
        migrate: bool = True,
    ) -> None:
        self.url = async_url(url)
        self.compress_above = compress_above
        self._connect_args = connect_args or {}
        self._migrate = migrate
        self._engine: AsyncEngine | None = None
        self.owner = process_owner()

    @property
    def dialect(self) -> str:
        return self.url.split("+")[0]

    async def open(self) -> AsyncEngine:
        """Connect lazily and apply the migrations.

        Raises:
            StorageUnavailableError: when the database cannot be reached.
        """
        if self._engine is not None:
            return self._engine
        engine = await create_engine(self.url, self._connect_args)
        if self._migrate:
            from agent_template.services.storage.migrate import upgrade

            try:
                await upgrade(engine)
            except CONNECT_FAILURES as exc:
                await engine.dispose()
                raise StorageUnavailableError(safe_url(self.url), describe(exc)) from exc
        self._engine = engine
        return engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (in a transaction committed on exit when ``write``).

        Raises:
            StorageUnavailableError: when the database cannot be reached, refuses the
                connection, or goes away during the call.
        """
        engine = self._engine or await self.open()
        conn = engine.connect()
        try:
            await conn.start()
        except CONNECT_FAILURES as exc:
            raise StorageUnavailableError(safe_url(self.url), describe(exc)) from exc
        try:
            if write:
                async with conn.begin():
                    yield conn
            else:
                yield conn
        except UNAVAILABLE as exc:
            raise StorageUnavailableError(safe_url(self.url), describe(exc)) from exc
        finally:
            await conn.close()

    # ------------------------------------------------------------------ sessions

    async def save_session(self, session: Session) -> None:
        values = {
            "user_id": session.user_id,
            "title": session.title,
            "metadata": json.dumps(session.metadata),
            "model_settings": json.dumps(session.model_settings),
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "last_active_at": session.last_active_at,
        }
        async with self._tx(write=True) as conn:
            done = await conn.execute(
                update(s.sessions).where(s.sessions.c.id == session.session_id).values(**values)
            )
            if not done.rowcount:
                await conn.execute(
                    insert(s.sessions).values(id=session.session_id, message_count=0, **values)
                )

    async def load_session(self, session_id: str) -> Session | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(s.sessions).where(s.sessions.c.id == session_id))
            ).first()
        return _session(row) if row else None

    async def delete_session(self, session_id: str) -> bool:
        async with self._tx(write=True) as conn:
            # Children first: correct even where the database does not cascade.
            for table in (s.messages, s.todos, s.tasks):
                await conn.execute(delete(table).where(table.c.session_id == session_id))
            done = await conn.execute(delete(s.sessions).where(s.sessions.c.id == session_id))
        return bool(done.rowcount)

    async def list_sessions(self, user_id: str | None, limit: int, offset: int) -> list[Session]:
        query = select(s.sessions).order_by(s.sessions.c.last_active_at.desc(), s.sessions.c.id)
        if user_id is not None:
            query = query.where(s.sessions.c.user_id == user_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [_session(r) for r in rows]

    async def session_ids_idle_since(self, cutoff: float) -> list[str]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(s.sessions.c.id).where(s.sessions.c.last_active_at < cutoff)
            )
            return [r[0] for r in rows]

    # ------------------------------------------------------------------ messages

    async def _reserve(self, conn: AsyncConnection, session_id: str, n: int, now: float) -> int:
        """Take ``n`` sequence numbers; the row lock serialises writers of one session."""
        done = await conn.execute(
            update(s.sessions)
            .where(s.sessions.c.id == session_id)
            .values(
                message_count=s.sessions.c.message_count + n,
                updated_at=now,
                last_active_at=now,
            )
            .returning(s.sessions.c.message_count)
        )
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
                await conn.execute(insert(s.messages), rows)
        return seqs

    async def _streaming_row(self, conn: AsyncConnection, task_id: str) -> tuple[int, int] | None:
        row = (
            await conn.execute(
                select(s.messages.c.id, s.messages.c.seq)
                .where(and_(s.messages.c.task_id == task_id, s.messages.c.status == "streaming"))
                .order_by(s.messages.c.seq.desc())
                .limit(1)
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    async def _rewrite(
        self, conn: AsyncConnection, row: tuple[int, int], message: Message, now: float
    ) -> int:
        encoding, body = encode(message, self.compress_above)
        await conn.execute(
            update(s.messages)
            .where(s.messages.c.id == row[0])
            .values(
                status=getattr(message, "status", "complete"),
                encoding=encoding,
                body=body,
                updated_at=now,
            )
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
        self, session_id: str, *, limit: int | None = None, after_seq: int = 0
    ) -> list[MessageRecord]:
        """Messages in order; with ``limit``, the most recent ones (read from the end)."""
        m = s.messages
        query = select(
            m.c.seq, m.c.status, m.c.encoding, m.c.body, m.c.task_id, m.c.created_at
        ).where(and_(m.c.session_id == session_id, m.c.seq > after_seq))
        if limit is not None:
            query = query.order_by(m.c.seq.desc()).limit(limit)
        else:
            query = query.order_by(m.c.seq)
        async with self._tx() as conn:
            rows = list((await conn.execute(query)).all())
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

    # ------------------------------------------------------------------ tasks and leases

    async def record_task(self, task: Task, lease_until: float | None) -> None:
        """Insert or update a task; a running task holds a lease owned by this process."""
        values = {
            "session_id": task.session_id,
            "type": task.type,
            "state": task.state.value,
            "priority": int(task.priority),
            "payload": json.dumps(task.payload, default=str),
            "result": None if task.result is None else json.dumps(task.result, default=str),
            "error": task.error,
            "created_at": task.created_at,
            "started_at": task.started_at,
            "finished_at": task.finished_at,
            "lease_owner": self.owner if lease_until is not None else None,
            "lease_expires_at": lease_until,
        }
        async with self._tx(write=True) as conn:
            done = await conn.execute(
                update(s.tasks).where(s.tasks.c.id == task.task_id).values(**values)
            )
            if not done.rowcount:
                await conn.execute(insert(s.tasks).values(id=task.task_id, **values))

    async def renew_leases(self, task_ids: Iterable[str], until: float) -> None:
        ids = list(task_ids)
        if not ids:
            return
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(s.tasks)
                .where(and_(s.tasks.c.id.in_(ids), s.tasks.c.lease_owner == self.owner))
                .values(lease_expires_at=until)
            )

    async def load_tasks(self, session_id: str) -> list[TaskRecord]:
        t = s.tasks
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    select(
                        t.c.id,
                        t.c.session_id,
                        t.c.type,
                        t.c.state,
                        t.c.created_at,
                        t.c.started_at,
                        t.c.finished_at,
                        t.c.error,
                        t.c.lease_owner,
                        t.c.lease_expires_at,
                    )
                    .where(t.c.session_id == session_id)
                    .order_by(t.c.created_at)
                )
            ).all()
        return [TaskRecord(*tuple(row)) for row in rows]

    async def recover(self, now: float | None = None) -> list[str]:
        """Mark tasks whose lease expired (or whose local process is gone) ``interrupted``.

        Their checkpointed partial answers become ``interrupted`` messages. Returns the ids.
        """
        now = time.time() if now is None else now
        t = s.tasks
        async with self._tx(write=True) as conn:
            rows = (
                await conn.execute(
                    select(t.c.id, t.c.lease_owner, t.c.lease_expires_at).where(
                        t.c.state.in_(("running", "pending"))
                    )
                )
            ).all()
            stale = [
                task_id
                for task_id, owner, expires in rows
                if owner != self.owner
                and ((expires is not None and expires < now) or owner_is_dead(owner))
            ]
            if not stale:
                return []
            await conn.execute(
                update(t)
                .where(t.c.id.in_(stale))
                .values(
                    state="interrupted",
                    finished_at=now,
                    error="The process running this task stopped before it finished.",
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            await conn.execute(
                update(s.messages)
                .where(and_(s.messages.c.task_id.in_(stale), s.messages.c.status == "streaming"))
                .values(status="interrupted", updated_at=now)
            )
        return stale

    # ------------------------------------------------------------------ todos and state

    async def save_todos(self, session_id: str, items: Sequence[TodoRecord]) -> None:
        now = time.time()
        async with self._tx(write=True) as conn:
            await conn.execute(delete(s.todos).where(s.todos.c.session_id == session_id))
            if items:
                await conn.execute(
                    insert(s.todos),
                    [
                        {
                            "session_id": session_id,
                            "position": i,
                            "content": item.content,
                            "status": item.status,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i, item in enumerate(items)
                    ],
                )

    async def load_todos(self, session_id: str) -> list[TodoRecord]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(s.todos.c.content, s.todos.c.status, s.todos.c.position)
                .where(s.todos.c.session_id == session_id)
                .order_by(s.todos.c.position)
            )
            return [TodoRecord(*row) for row in rows]

    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None:
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(s.sessions)
                .where(s.sessions.c.id == session_id)
                .values(compaction=None if state is None else json.dumps(state))
            )

    async def integrity_check(self) -> list[str]:
        """Problems found in the stored data (empty when consistent)."""
        from agent_template.services.storage.checks import find_problems

        return await find_problems(await self.open(), self.dialect)

    async def load_compaction(self, session_id: str) -> dict[str, Any] | None:
        async with self._tx() as conn:
            value = await conn.scalar(
                select(s.sessions.c.compaction).where(s.sessions.c.id == session_id)
            )
        return json.loads(value) if value else None


def _session(row: Any) -> Session:
    return Session(
        session_id=row.id,
        user_id=row.user_id,
        title=row.title,
        metadata=json.loads(row.metadata or "{}"),
        model_settings=json.loads(row.model_settings or "{}"),
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_active_at=row.last_active_at,
        message_count=row.message_count,
    )
