"""The statements of a chat turn, built once with bound parameters.

Building a SQLAlchemy statement (columns compared, clauses coerced, an alias's columns
populated) costs more than running it through the compiled cache, and a chat turn runs the
same dozen statements every time. Each function here builds its statement on first use and
returns that same object afterwards; callers pass the values as parameters. Parameter names
start with ``p_`` so none collides with a column's name in a SET clause.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, insert, or_, select, update

from agent_template.services.storage import schema as s

if TYPE_CHECKING:
    from sqlalchemy.sql import Insert, Select, Update

__all__ = [
    "acquire_run",
    "insert_messages",
    "load_compaction",
    "load_records",
    "load_session",
    "load_tool_settings",
    "older_waiters",
    "release_run",
    "reserve_seqs",
    "rewrite_message",
    "run_holder",
    "streaming_row",
]


@cache
def load_session() -> Select[Any]:
    return select(s.sessions).where(s.sessions.c.id == bindparam("p_sid"))


@cache
def load_tool_settings() -> Select[Any]:
    return select(s.sessions.c.tool_settings).where(s.sessions.c.id == bindparam("p_sid"))


@cache
def load_compaction() -> Select[Any]:
    return select(s.sessions.c.compaction).where(s.sessions.c.id == bindparam("p_sid"))


@cache
def reserve_seqs() -> Update:
    """Take ``p_n`` message numbers of session ``p_sid`` at time ``p_now``."""
    ss = s.sessions
    return (
        update(ss)
        .where(ss.c.id == bindparam("p_sid"))
        .values(
            message_count=ss.c.message_count + bindparam("p_n"),
            updated_at=bindparam("p_now"),
            last_active_at=bindparam("p_now"),
        )
        .returning(ss.c.message_count)
    )


@cache
def insert_messages() -> Insert:
    return insert(s.messages)


@cache
def streaming_row() -> Select[Any]:
    """The checkpoint row of task ``p_task`` (an answer still streaming), if any."""
    m = s.messages
    return (
        select(m.c.id, m.c.seq)
        .where(and_(m.c.task_id == bindparam("p_task"), m.c.status == "streaming"))
        .order_by(m.c.seq.desc())
        .limit(1)
    )


@cache
def rewrite_message() -> Update:
    m = s.messages
    return (
        update(m)
        .where(m.c.id == bindparam("p_id"))
        .values(
            status=bindparam("p_status"),
            encoding=bindparam("p_encoding"),
            body=bindparam("p_body"),
            updated_at=bindparam("p_now"),
        )
    )


@cache
def load_records(*, limited: bool, before: bool) -> Select[Any]:
    """Messages of ``p_sid`` after ``p_after`` (and before ``p_before``); when ``limited``,
    the last ``p_limit`` of them, newest first."""
    m = s.messages
    where = and_(m.c.session_id == bindparam("p_sid"), m.c.seq > bindparam("p_after"))
    if before:
        where = and_(where, m.c.seq < bindparam("p_before"))
    query = select(m.c.seq, m.c.status, m.c.encoding, m.c.body, m.c.task_id, m.c.created_at)
    query = query.where(where)
    if limited:
        return query.order_by(m.c.seq.desc()).limit(bindparam("p_limit"))
    return query.order_by(m.c.seq)


@cache
def acquire_run() -> Update:
    """Session ``p_sid``'s run lease for task ``p_task`` of process ``p_owner`` until
    ``p_until``, when it is free, already this task's, or expired at ``p_now``."""
    ss = s.sessions
    return (
        update(ss)
        .where(
            and_(
                ss.c.id == bindparam("p_sid"),
                or_(
                    ss.c.run_holder.is_(None),
                    ss.c.run_holder == bindparam("p_task"),
                    ss.c.run_lease_expires_at < bindparam("p_now"),
                ),
            )
        )
        .values(
            run_holder=bindparam("p_task"),
            run_owner=bindparam("p_owner"),
            run_lease_expires_at=bindparam("p_until"),
        )
    )


@cache
def older_waiters() -> Select[Any]:
    """Owners of session ``p_sid``'s pending tasks of the kinds ``p_kinds``, created before
    task ``p_task`` and with a lease live at ``p_now``."""
    t = s.tasks
    mine = t.alias("mine")
    created = select(mine.c.created_at).where(mine.c.id == bindparam("p_task")).scalar_subquery()
    return select(t.c.lease_owner).where(
        and_(
            t.c.session_id == bindparam("p_sid"),
            t.c.state == "pending",
            t.c.type.in_(bindparam("p_kinds", expanding=True)),
            t.c.created_at < created,
            t.c.id != bindparam("p_task"),
            t.c.lease_expires_at >= bindparam("p_now"),
        )
    )


@cache
def release_run() -> Update:
    ss = s.sessions
    return (
        update(ss)
        .where(and_(ss.c.id == bindparam("p_sid"), ss.c.run_holder == bindparam("p_task")))
        .values(run_holder=None, run_owner=None, run_lease_expires_at=None)
    )


@cache
def run_holder() -> Select[Any]:
    ss = s.sessions
    return select(ss.c.run_holder, ss.c.run_owner, ss.c.run_lease_expires_at).where(
        ss.c.id == bindparam("p_sid")
    )
