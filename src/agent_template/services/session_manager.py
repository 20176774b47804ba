"""SessionManager: sessions owned by users, their message history and the model's context.

Storage is behind the :class:`SessionStore` protocol: :class:`~agent_template.services.storage.
SQLStore` (SQLite or PostgreSQL from ``DATABASE_URL``, the default) or
:class:`MemorySessionStore` (this process only). Sessions load lazily, one query at a time;
opening the manager recovers tasks that a dead process left running.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
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
        self, session_id: str, *, limit: int | None = None, after_seq: int = 0
    ) -> list[MessageRecord]: ...
    async def record_task(self, task: Task, lease_until: float | None) -> None: ...
    async def renew_leases(self, task_ids: Iterable[str], until: float) -> None: ...
    async def load_tasks(self, session_id: str) -> list[TaskRecord]: ...
    async def recover(self, now: float | None = None) -> list[str]: ...
    async def save_todos(self, session_id: str, items: Sequence[TodoRecord]) -> None: ...
    async def load_todos(self, session_id: str) -> list[TodoRecord]: ...
    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None: ...
    async def load_compaction(self, session_id: str) -> dict[str, Any] | None: ...


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
    ) -> None:
        if store is None:
            if settings is None:
                from agent_template.config import load_settings

                settings = load_settings()
            from agent_template.services.storage import SQLStore

            store = SQLStore(settings.database_url)
            if cache is None:
                cache = _session_cache(settings)
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

    async def _forget(self, session_id: str) -> None:
        if self.cache is not None:
            await self.cache.delete(session_id)

    def _publish(self, session_id: str, action: str) -> None:
        if self.bus is not None:
            self.bus.publish(SessionChanged(session_id=session_id, action=action))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self,
        user_id: str = "default",
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        model_settings: dict[str, Any] | None = None,
    ) -> Session:
        store = await self._ready()
        session = Session(
            user_id=user_id,
            title=title,
            metadata=metadata or {},
            model_settings=model_settings or {},
        )
        if session_id:
            session.session_id = session_id
        await store.save_session(session)
        self._publish(session.session_id, "created")
        return session

    async def get_session(self, session_id: str) -> Session:
        """Raises SessionNotFoundError."""
        cache = self.cache
        if cache is not None:
            hit = await cache.get(session_id)
            if hit is not None:
                return Session.model_validate(hit)
        session = await (await self._ready()).load_session(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        if cache is not None:
            await cache.set(session_id, session.model_dump(mode="json"), ttl=SESSION_CACHE_TTL_S)
        return session

    async def get_or_create(self, session_id: str, user_id: str = "default") -> Session:
        session = await (await self._ready()).load_session(session_id)
        return session or await self.create_session(user_id, session_id=session_id)

    async def list_sessions(
        self, user_id: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[Session]:
        """Most recently active first."""
        return await (await self._ready()).list_sessions(user_id, limit, offset)

    async def rename_session(self, session_id: str, title: str) -> Session:
        session = await self.get_session(session_id)
        session.title = title
        session.updated_at = time.time()
        await self.store.save_session(session)
        await self._forget(session_id)
        self._publish(session_id, "updated")
        return session

    async def delete_session(self, session_id: str) -> None:
        """Delete a session with its messages, tasks and todos. Raises SessionNotFoundError."""
        deleted = await (await self._ready()).delete_session(session_id)
        await self._forget(session_id)
        if not deleted:
            raise SessionNotFoundError(session_id)
        self._publish(session_id, "deleted")

    async def cleanup_idle(self, ttl: float | None = None) -> int:
        """Delete sessions idle for longer than ``ttl`` (default ``idle_ttl``); returns count."""
        ttl = ttl if ttl is not None else self.idle_ttl
        if ttl is None:
            return 0
        store = await self._ready()
        stale = await store.session_ids_idle_since(time.time() - ttl)
        for session_id in stale:
            await store.delete_session(session_id)
            await self._forget(session_id)
            self._publish(session_id, "deleted")
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
        self, session_id: str, *, limit: int | None = None
    ) -> list[MessageRecord]:
        """Stored messages with their numbers and statuses (every one, or the last ``limit``)."""
        await self.get_session(session_id)
        return await self.store.load_records(session_id, limit=limit)

    async def get_messages(self, session_id: str, *, limit: int | None = None) -> list[Message]:
        return [r.message for r in await self.get_history(session_id, limit=limit)]

    async def get_context(self, session_id: str) -> list[Message]:
        """The recent messages handed to the model for the next turn.

        Reads only the recent rows, never the whole history: between ``context_window`` and
        1.5 x ``context_window`` of them. The window's start moves in steps of half a window,
        not with every message, so a summary of its older part stays valid for many turns.
        Answers still streaming elsewhere, and tool results whose call fell outside the window,
        are left out so the history stays valid.
        """
        store = await self._ready()
        window = self.context_window
        total = (await self.get_session(session_id)).message_count
        step = max(1, window // 2)
        start = ((total - window) // step) * step if total > window else 0
        records = await store.load_records(session_id, after_seq=start)
        messages = [r.message for r in records if r.status != "streaming"]
        return _valid_history(messages)

    # ------------------------------------------------------------------ tasks and todos

    async def get_tasks(self, session_id: str) -> list[TaskRecord]:
        return await (await self._ready()).load_tasks(session_id)

    async def recover(self) -> list[str]:
        """Mark tasks left running by a dead process ``interrupted``; returns their ids."""
        return await (await self._ready()).recover()

    async def load_compaction(self, session_id: str) -> dict[str, Any] | None:
        """The context compressor's saved state for the session (its standing summary)."""
        return await (await self._ready()).load_compaction(session_id)

    async def save_compaction(self, session_id: str, state: dict[str, Any] | None) -> None:
        await (await self._ready()).save_compaction(session_id, state)


def _session_cache(settings: Settings) -> StateCache | None:
    """The configured state cache, when it is shared; a fallback counts in the metrics."""
    if not settings.redis_url and settings.cache_backend in (None, "memory"):
        return None  # the database is local and fast; an in-process copy would go stale
    from agent_template.core.metrics import default_metrics
    from agent_template.services.state_cache import create_state_cache

    metrics = default_metrics()

    def count(reason: str) -> None:
        metrics.inc("cache_fallbacks_total")

    return create_state_cache(settings, on_fallback=count)


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
