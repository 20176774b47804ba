"""Tasks, their leases, and the session run lease, in SQL (a part of :class:`SQLStore`).

A lease names the process that holds it (``process_owner()``: host, pid, nonce) and an epoch
time it expires at. A lease is free once it expired, or at once when its owner is a process on
this host that no longer exists. Everything here decides in one conditional ``UPDATE``, so
two processes sharing the database never both win.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import and_, or_, select, update

from agent_template.errors import SessionNotFoundError
from agent_template.models import Task
from agent_template.services.storage import schema as s
from agent_template.services.storage import statements as q
from agent_template.services.storage.engine import owner_is_dead
from agent_template.services.storage.records import TaskRecord
from agent_template.services.storage.upsert import upsert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["INTERRUPTED_ERROR", "LEGACY_TASK_GRACE_S", "TaskLeases"]

# A pending or running row without a lease owner was written by a version that leased only
# running tasks (or by none at all); once this old, no live process is about to claim it.
LEGACY_TASK_GRACE_S = 60.0
INTERRUPTED_ERROR = "The process running this task stopped before it finished."
_IN_CHUNK = 500  # ids per IN (...) list: far below every driver's parameter limit

_T = TypeVar("_T")


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class _OlderWaiter(Exception):
    """Rolls back a lease just taken: an older task of the session waits for it."""


class TaskLeases:
    """Task rows and leases; mixed into :class:`SQLStore`, which provides ``_tx``."""

    owner: str
    url: str

    if TYPE_CHECKING:

        def _tx(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncConnection]: ...

    # ------------------------------------------------------------------ tasks

    async def record_task(
        self, task: Task, lease_until: float | None, *, release_run: bool = False
    ) -> None:
        """Insert or update a task.

        With ``lease_until`` (any state, pending included) the task holds a lease owned by
        this process until then, so :meth:`recover` in another process can tell a crash from
        a task that is still queued or running; ``None`` (a finished task) clears it. With
        ``release_run``, the same transaction frees the session's run lease if the task holds
        it (as :meth:`release_run`): a finished run's last write.
        """
        values = {
            "id": task.task_id,
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
            # getattr: older Task models have neither field.
            "user_id": getattr(task, "user_id", None),
            "parent_id": getattr(task, "parent_id", None),
        }
        statement = upsert(
            self.url.split("+")[0], s.tasks, update_columns=[k for k in values if k != "id"]
        )
        async with self._tx(write=True) as conn:
            await conn.execute(statement, values)
            if release_run and task.session_id is not None:
                await conn.execute(
                    q.release_run(), {"p_sid": task.session_id, "p_task": task.task_id}
                )

    async def renew_leases(
        self, task_ids: Iterable[str], until: float, *, holding: Iterable[str] = ()
    ) -> set[str]:
        """Extend this process's leases on ``task_ids``, and the run leases of the sessions
        that the tasks in ``holding`` hold.

        Returns:
            The ids whose lease could not be extended: it is no longer this process's (another
            process recovered the task, or took the session over after the lease expired).
            Those runs must stop: someone else now acts for them.
        """
        ids, holders = list(task_ids), list(holding)
        if not ids and not holders:
            return set()
        t, ss = s.tasks, s.sessions
        renewed: set[str] = set()
        lost: set[str] = set()
        kept: set[str] = set()
        async with self._tx(write=True) as conn:
            for chunk in _chunks(ids):
                done = await conn.execute(
                    update(t)
                    .where(and_(t.c.id.in_(chunk), t.c.lease_owner == self.owner))
                    .values(lease_expires_at=until)
                    .returning(t.c.id)
                )
                renewed.update(row[0] for row in done)
            missed = [task_id for task_id in ids if task_id not in renewed]
            for chunk in _chunks(missed):
                # Lost means recorded as someone else's (or recovered: no owner). A row not
                # there yet is a task whose creation is being recorded right now: not lost.
                theirs = await conn.execute(
                    select(t.c.id).where(
                        and_(
                            t.c.id.in_(chunk),
                            or_(t.c.lease_owner.is_(None), t.c.lease_owner != self.owner),
                        )
                    )
                )
                lost.update(row[0] for row in theirs)
            for chunk in _chunks(holders):
                done = await conn.execute(
                    update(ss)
                    .where(and_(ss.c.run_holder.in_(chunk), ss.c.run_owner == self.owner))
                    .values(run_lease_expires_at=until)
                    .returning(ss.c.run_holder)
                )
                kept.update(row[0] for row in done)
        return lost | (set(holders) - kept)

    async def load_tasks(self, session_id: str) -> list[TaskRecord]:
        """The session's tasks, oldest first."""
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
                        t.c.user_id,
                        t.c.parent_id,
                    )
                    .where(t.c.session_id == session_id)
                    .order_by(t.c.created_at)
                )
            ).all()
        return [TaskRecord(*tuple(row)) for row in rows]

    async def recover(self, now: float | None = None) -> list[str]:
        """Mark tasks that no live process holds any more ``interrupted``; returns their ids.

        That is every pending or running task of another owner whose lease expired or whose
        process (on this host) is gone, and every such row without a lease owner created more
        than :data:`LEGACY_TASK_GRACE_S` before ``now``. Their checkpointed partial answers
        become ``interrupted`` messages, and the session run leases they held are released,
        all in one transaction.
        """
        now = time.time() if now is None else now
        t, ss = s.tasks, s.sessions
        async with self._tx(write=True) as conn:
            rows = (
                await conn.execute(
                    select(t.c.id, t.c.lease_owner, t.c.lease_expires_at, t.c.created_at).where(
                        t.c.state.in_(("running", "pending"))
                    )
                )
            ).all()
            stale = [
                task_id
                for task_id, owner, expires, created in rows
                if owner != self.owner and _abandoned(owner, expires, created, now)
            ]
            for chunk in _chunks(stale):
                await conn.execute(
                    update(t)
                    .where(t.c.id.in_(chunk))
                    .values(
                        state="interrupted",
                        finished_at=now,
                        error=INTERRUPTED_ERROR,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
                m = s.messages
                await conn.execute(
                    update(m)
                    .where(and_(m.c.task_id.in_(chunk), m.c.status == "streaming"))
                    .values(status="interrupted", updated_at=now)
                )
                await conn.execute(
                    update(ss)
                    .where(ss.c.run_holder.in_(chunk))
                    .values(run_holder=None, run_owner=None, run_lease_expires_at=None)
                )
        return stale

    # ------------------------------------------------------------------ the session run lease

    async def acquire_run(
        self,
        session_id: str,
        task_id: str,
        until: float,
        *,
        kinds: Iterable[str] = ("chat",),
    ) -> bool:
        """Take the session's run lease for ``task_id`` until the epoch time ``until``.

        Only one run at a time works on a session, across every process sharing the
        database. The lease is free when nobody holds it, when it expired, or when its owner
        is a process on this host that no longer exists; holding it already extends it.
        First come, first served across processes: it is not granted while an older task of
        the session, of a type in ``kinds``, still waits (pending, with a live lease). The
        check for that older task applies only when ``task_id`` has a task row.

        Returns:
            True when ``task_id`` holds the lease now; False when another task holds it or
            an older one is waiting for it.

        Raises:
            SessionNotFoundError: the session does not exist (it may have been deleted).
        """
        now = time.time()
        wanted = list(kinds)
        try:
            return await self._acquire_run(session_id, task_id, until, wanted, now)
        except _OlderWaiter:
            return False  # the transaction was rolled back: nothing changed

    async def _acquire_run(
        self, session_id: str, task_id: str, until: float, kinds: list[str], now: float
    ) -> bool:
        ss = s.sessions
        async with self._tx(write=True) as conn:
            # The write comes first, so on SQLite the transaction holds the write lock from its
            # first statement (SQLite refuses to upgrade a read transaction that a writer in
            # another process overtook). Refusing for an older waiter then rolls it back.
            taken = await conn.execute(
                q.acquire_run(),
                {
                    "p_sid": session_id,
                    "p_task": task_id,
                    "p_now": now,
                    "p_owner": self.owner,
                    "p_until": until,
                },
            )
            if taken.rowcount == 1:
                if await self._older_waiter(conn, session_id, task_id, kinds, now):
                    raise _OlderWaiter
                return True
            row = (
                await conn.execute(
                    select(ss.c.run_holder, ss.c.run_owner).where(ss.c.id == session_id)
                )
            ).first()
            if row is None:
                raise SessionNotFoundError(session_id)
            if not owner_is_dead(row.run_owner):
                return False
            if await self._older_waiter(conn, session_id, task_id, kinds, now):
                return False
            # The holder's process is gone. Name it in the WHERE: if another process took
            # the lease over from it meanwhile, this matches nothing.
            taken = await conn.execute(
                update(ss)
                .where(
                    and_(
                        ss.c.id == session_id,
                        ss.c.run_holder == row.run_holder,
                        ss.c.run_owner == row.run_owner,
                    )
                )
                .values(run_holder=task_id, run_owner=self.owner, run_lease_expires_at=until)
            )
            return bool(taken.rowcount == 1)

    async def _older_waiter(
        self, conn: AsyncConnection, session_id: str, task_id: str, kinds: list[str], now: float
    ) -> bool:
        """Whether an older task of the session waits for its run lease with a live lease.

        One statement: the task's own creation time is a subquery (no row: nothing is older).
        """
        if not kinds:
            return False
        rows = await conn.execute(
            q.older_waiters(),
            {"p_sid": session_id, "p_task": task_id, "p_kinds": kinds, "p_now": now},
        )
        return any(not owner_is_dead(owner) for (owner,) in rows)

    async def park_run(self, session_id: str, task_id: str, until: float) -> bool:
        """Keep the session's run lease for ``task_id`` until ``until`` without a process.

        A run that waits for a person (an approval) holds its session so that no other run
        breaks its history, also across a restart of the process: the lease then has no
        owner to outlive, only its expiry. :meth:`acquire_run` by the same task takes it
        back. Returns False when ``task_id`` does not hold the lease.
        """
        ss = s.sessions
        async with self._tx(write=True) as conn:
            done = await conn.execute(
                update(ss)
                .where(and_(ss.c.id == session_id, ss.c.run_holder == task_id))
                .values(run_owner=None, run_lease_expires_at=until)
            )
        return bool(done.rowcount == 1)

    async def release_run(self, session_id: str, task_id: str) -> None:
        """Free the session's run lease if ``task_id`` holds it (otherwise do nothing)."""
        async with self._tx(write=True) as conn:
            await conn.execute(q.release_run(), {"p_sid": session_id, "p_task": task_id})

    async def run_holder(self, session_id: str) -> str | None:
        """The task holding a live run lease on the session, or None (free, or no session)."""
        async with self._tx() as conn:
            row = (await conn.execute(q.run_holder(), {"p_sid": session_id})).first()
        if row is None or row.run_holder is None:
            return None
        expires = row.run_lease_expires_at
        if (expires is not None and expires < time.time()) or owner_is_dead(row.run_owner):
            return None
        return str(row.run_holder)


def _abandoned(owner: str | None, expires: float | None, created: float, now: float) -> bool:
    if owner is None:
        return created < now - LEGACY_TASK_GRACE_S
    return (expires is not None and expires < now) or owner_is_dead(owner)
