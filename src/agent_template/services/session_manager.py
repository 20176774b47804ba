"""SessionManager: sessions owned by users, their message history and the model's context.

Storage is behind the :class:`SessionStore` protocol: :class:`~agent_template.services.storage.
SQLStore` (SQLite or PostgreSQL from ``DATABASE_URL``, the default) or
:class:`MemorySessionStore` (this process only). Sessions load lazily, one query at a time;
opening the manager recovers tasks that a dead process left running.

Every session belongs to one user. Methods that take ``user_id`` treat another user's session
as one that does not exist (:class:`SessionNotFoundError`), so ids do not reveal other users'
sessions; ``user_id=None`` is for trusted in-process callers (the single-user CLI, a task that
already runs in the session).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agent_template.errors import SessionNotFoundError
from agent_template.models import (
    AssistantMessage,
    Message,
    Session,
    SessionChanged,
    Task,
    ToolResultMessage,
)
from agent_template.services.storage.memory import MemorySessionStore
from agent_template.services.storage.records import MessageRecord, TaskRecord, TodoRecord

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.services.state_cache import StateCache

__all__ = ["DEFAULT_CONTEXT_WINDOW", "MemorySessionStore", "SessionManager", "SessionStore"]

DEFAULT_CONTEXT_WINDOW = 200  # recent messages loaded for the model; older ones stay stored
SESSION_CACHE_TTL_S = 300.0  # a cached session is re-read from the database after this


class SessionStore(Protocol):
    """What the manager needs from storage. Every write is durable when it returns."""

    async def open(self) -> Any: ...
    async def close(self) -> None: ...
    async def save_session(self, session: Session) -> None: ...
    async def load_session(self, session_id: str) -> Session | None: ...
    async def delete_session(self, session_id: str) -> bool: ...
    async def list_sessions(
        self, user_id: str | None, limit: int, offset: int
    ) -> list[Session]: ...
    async def session_ids_idle_since(self, cutoff: float) -> list[str]: ...
    async def append_messages(
        self, session_id: str, messages: Sequence[Message], *, task_id: str | None = None
    ) -> list[int]: ...
    async def checkpoint(self, session_id: str, task_id: str, text: str) -> None: ...
    async def load_records(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
    ) -> list[MessageRecord]: ...
    async def create_session_if_absent(self, session: Session) -> Session: ...
    async def record_task(
        self, task: Task, lease_until: float | None, *, release_run: bool = False
    ) -> None: ...
    async def renew_leases(
        self, task_ids: Iterable[str], until: float, *, holding: Iterable[str] = ...
    ) -> Collection[str]: ...
    async def load_tasks(self, session_id: str) -> list[TaskRecord]: ...
    async def recover(self, now: float | None = None) -> list[str]: ...
    async def save_todos(self, session_id: str, items: Sequence[TodoRecord]) -> None: ...
    async def load_todos(self, session_id: str) -> list[TodoRecord]: ...
    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None: ...
    async def load_compaction(self, session_id: str) -> dict[str, Any] | None: ...
    async def save_tool_settings(
        self, session_id: str, settings: dict[str, Any] | None
    ) -> None: ...
    async def load_tool_settings(self, session_id: str) -> dict[str, Any] | None: ...
    async def acquire_run(
        self, session_id: str, task_id: str, until: float, *, kinds: Sequence[str] = ...
    ) -> bool: ...
    async def release_run(self, session_id: str, task_id: str) -> None: ...
    async def run_holder(self, session_id: str) -> str | None: ...


class SessionManager:
    """Creates, finds and deletes sessions, and keeps their message history.

    Args:
        settings: where ``DATABASE_URL`` and the session settings come from.
        store: storage to use instead of the database named by the settings.
        bus: where session events go (anything with ``publish``).
        context_window: recent messages handed to the model (tool pairs are never split).
        idle_ttl: seconds of inactivity after which :meth:`cleanup_idle` deletes a session;
            None keeps sessions forever.
        cache: hot session state (Redis or memory, from the settings by default when the
            store comes from them). A cache outage or miss falls back to the database.
        on_cache_fallback: called each time the cache serves from its fallback (a metric).

    Constructing it does no I/O; the first call opens the store and applies migrations.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: SessionStore | None = None,
        bus: Any = None,
        context_window: int | None = None,
        idle_ttl: float | None = None,
        cache: StateCache | None = None,
        on_cache_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if store is None:
            if settings is None:
                from agent_template.config import load_settings

                settings = load_settings()
            from agent_template.services.storage import SQLStore

            store = SQLStore(settings.database_url)
            if cache is None:
                cache = _session_cache(settings, on_cache_fallback)
        self.cache = cache.namespaced("sessions") if cache is not None else None
        self._cache_root = cache
        self.store: SessionStore = store
        self.bus = bus
        self.context_window = context_window or (
            settings.context_window_messages if settings else DEFAULT_CONTEXT_WINDOW
        )
        self.idle_ttl = (
            idle_ttl if idle_ttl is not None else (settings.session_ttl if settings else None)
        )
        self._opened = False

    async def open(self) -> None:
        """Open the store (applying migrations) and recover interrupted tasks."""
        if not self._opened:
            await self.store.open()
            self._opened = True
            await self.store.recover()

    async def _ready(self) -> SessionStore:
        if not self._opened:
            await self.open()
        return self.store

    async def close(self) -> None:
        await self.store.close()
        if self._cache_root is not None:
            await self._cache_root.aclose()
        self._opened = False

    async def _forget(self, session_id: str, *, deleted: bool = False) -> None:
        if self.cache is not None:
            await self.cache.delete(session_id)
            if deleted:  # a new session of the same id starts with no tool settings
                await self.cache.delete(f"{session_id}:tools")

    def _publish(self, session: Session, action: str) -> None:
        if self.bus is not None:
            self.bus.publish(
                SessionChanged(
                    session_id=session.session_id,
                    user_id=session.user_id,
                    action=action,  # type: ignore[arg-type]
                )
            )

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        model_settings: dict[str, Any] | None = None,
    ) -> Session:
        """A new session of ``user_id``.

        With ``session_id`` of a session that exists, that session is returned if it is the
        user's own.

        Raises:
            SessionNotFoundError: ``session_id`` is another user's session.
        """
        store = await self._ready()
        session = Session(
            user_id=user_id,
            title=title,
            metadata=metadata or {},
            model_settings=model_settings or {},
        )
        if session_id:
            session.session_id = session_id
        stored = await store.create_session_if_absent(session)
        if stored.user_id != user_id:
            raise SessionNotFoundError(session.session_id)
        if stored.created_at == session.created_at:  # this call made it
            self._publish(stored, "created")
        return stored

    async def get_session(self, session_id: str, *, user_id: str | None = None) -> Session:
        """Raises SessionNotFoundError (also for another user's session)."""
        cache = self.cache
        session: Session | None = None
        if cache is not None:
            hit = await cache.get(session_id)
            if hit is not None:
                session = Session.model_validate(hit)
        if session is None:
            session = await (await self._ready()).load_session(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            if cache is not None:
                await cache.set(
                    session_id, session.model_dump(mode="json"), ttl=SESSION_CACHE_TTL_S
                )
        if user_id is not None and session.user_id != user_id:
            raise SessionNotFoundError(session_id)
        return session

    async def get_or_create(self, session_id: str, user_id: str) -> Session:
        """The user's session with this id, created if it does not exist yet.

        Safe when several callers (processes) create the same id at once.

        Raises:
            SessionNotFoundError: the id is another user's session.
        """
        return await self.create_session(user_id, session_id=session_id)

    async def list_sessions(
        self, user_id: str | None, *, limit: int = 50, offset: int = 0
    ) -> list[Session]:
        """The user's sessions (every user's for ``None``), most recently active first."""
        return await (await self._ready()).list_sessions(user_id, limit, offset)

    async def rename_session(
        self, session_id: str, title: str, *, user_id: str | None = None
    ) -> Session:
        session = await self.get_session(session_id, user_id=user_id)
        session.title = title
        session.updated_at = time.time()
        await self.store.save_session(session)
        await self._forget(session_id)
        self._publish(session, "updated")
        return session

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> None:
        """Delete a session with its messages, tasks and todos. Raises SessionNotFoundError."""
        session = await self.get_session(session_id, user_id=user_id)
        deleted = await self.store.delete_session(session_id)
        await self._forget(session_id, deleted=True)
        if not deleted:
            raise SessionNotFoundError(session_id)
        self._publish(session, "deleted")

    async def cleanup_idle(self, ttl: float | None = None) -> int:
        """Delete sessions idle for longer than ``ttl`` (default ``idle_ttl``); returns count."""
        ttl = ttl if ttl is not None else self.idle_ttl
        if ttl is None:
            return 0
        store = await self._ready()
        stale = await store.session_ids_idle_since(time.time() - ttl)
        for session_id in stale:
            session = await store.load_session(session_id)
            await store.delete_session(session_id)
            await self._forget(session_id, deleted=True)
            if session is not None:
                self._publish(session, "deleted")
        return len(stale)

    # ------------------------------------------------------------------ messages

    async def add_messages(
        self, session_id: str, messages: Sequence[Message], *, task_id: str | None = None
    ) -> list[int]:
        """Append to the history; committed before this returns. Returns sequence numbers."""
        if not messages:
            return []
        seqs = await (await self._ready()).append_messages(session_id, messages, task_id=task_id)
        await self._forget(session_id)  # its message count and activity time changed
        return seqs

    async def checkpoint(self, session_id: str, task_id: str, text: str) -> None:
        """Save the text of an answer that is still streaming."""
        await (await self._ready()).checkpoint(session_id, task_id, text)

    async def get_history(
        self, session_id: str, *, limit: int | None = None, user_id: str | None = None
    ) -> list[MessageRecord]:
        """Stored messages with their numbers and statuses (every one, or the last ``limit``).

        Raises:
            SessionNotFoundError: no such session, or another user's.
        """
        await self.get_session(session_id, user_id=user_id)
        return await self.store.load_records(session_id, limit=limit)

    async def get_messages(
        self, session_id: str, *, limit: int | None = None, user_id: str | None = None
    ) -> list[Message]:
        records = await self.get_history(session_id, limit=limit, user_id=user_id)
        return [r.message for r in records]

    async def get_context(self, session_id: str, *, open_calls: bool = False) -> list[Message]:
        """The recent messages handed to the model for the next turn.

        Reads only the recent rows, never the whole history: between ``context_window`` and
        1.5 x ``context_window`` of them. The window's start moves in steps of half a window,
        not with every message, so a summary of its older part stays valid for many turns.
        Answers still streaming elsewhere, and tool results whose call fell outside the window,
        are left out so the history stays valid. With ``open_calls`` the last assistant
        message keeps its tool calls even where results are missing (a run resumes from them).
        """
        store = await self._ready()
        window = self.context_window
        total = (await self.get_session(session_id)).message_count
        step = max(1, window // 2)
        start = ((total - window) // step) * step if total > window else 0
        records = await store.load_records(session_id, after_seq=start)
        messages = [r.message for r in records if r.status != "streaming"]
        if open_calls:
            last = _last_assistant(messages)
            if last is not None:
                return [*_valid_history(messages[:last]), *messages[last:]]
        return _valid_history(messages)

    # ------------------------------------------------------------------ tasks and todos

    async def get_tasks(self, session_id: str, *, user_id: str | None = None) -> list[TaskRecord]:
        """The session's recorded tasks, oldest first. Raises SessionNotFoundError."""
        await self.get_session(session_id, user_id=user_id)
        return await self.store.load_tasks(session_id)

    async def recover(self) -> list[str]:
        """Mark tasks left running by a dead process ``interrupted``; returns their ids."""
        return await (await self._ready()).recover()

    async def load_tool_settings(
        self, session_id: str, *, user_id: str | None = None
    ) -> dict[str, Any]:
        """The session's own tool settings: ``disabled`` (tool names the model does not get
        in this session) and ``permissions`` (rules layered over the global policy).

        Read on every chat turn, so kept in the state cache (Redis, where several processes
        share it) and dropped from it when saved. Raises SessionNotFoundError (also for
        another user's).
        """
        if user_id is not None:
            await self.get_session(session_id, user_id=user_id)
        cache, key = self.cache, f"{session_id}:tools"
        if cache is not None:
            hit = await cache.get(key)
            if hit is not None:
                return dict(hit)
        settings = await (await self._ready()).load_tool_settings(session_id) or {}
        if cache is not None:
            await cache.set(key, settings, ttl=SESSION_CACHE_TTL_S)
        return settings

    async def save_tool_settings(
        self, session_id: str, settings: dict[str, Any], *, user_id: str | None = None
    ) -> None:
        """Replace the session's tool settings. Raises SessionNotFoundError."""
        await self.get_session(session_id, user_id=user_id)
        await (await self._ready()).save_tool_settings(session_id, settings)
        if self.cache is not None:
            await self.cache.delete(f"{session_id}:tools")

    async def load_compaction(self, session_id: str) -> dict[str, Any] | None:
        """The context compressor's saved state for the session (its standing summary)."""
        return await (await self._ready()).load_compaction(session_id)

    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None:
        await (await self._ready()).save_compaction(session_id, state)

    async def load_todos(self, session_id: str, *, user_id: str | None = None) -> list[TodoRecord]:
        """The session's todo list. Raises SessionNotFoundError (also for another user's)."""
        await self.get_session(session_id, user_id=user_id)
        return await self.store.load_todos(session_id)


def _session_cache(
    settings: Settings, on_fallback: Callable[[str], None] | None
) -> StateCache | None:
    """The configured state cache, when it is shared."""
    if not settings.redis_url and settings.cache_backend in (None, "memory"):
        return None  # the database is local and fast; an in-process copy would go stale
    from agent_template.services.state_cache import create_state_cache

    return create_state_cache(settings, on_fallback=on_fallback)


def _last_assistant(messages: list[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], AssistantMessage):
            return i
    return None


def _valid_history(messages: list[Message]) -> list[Message]:
    """Drop tool results without their call, and calls without all their results."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolResultMessage)}
    called: set[str] = set()
    out: list[Message] = []
    for m in messages:
        if isinstance(m, AssistantMessage) and m.tool_calls:
            if not all(c.id in answered for c in m.tool_calls):
                if m.content:
                    out.append(m.model_copy(update={"tool_calls": []}))
                continue
            called.update(c.id for c in m.tool_calls)
        elif isinstance(m, ToolResultMessage) and m.tool_call_id not in called:
            continue
        out.append(m)
    return out
