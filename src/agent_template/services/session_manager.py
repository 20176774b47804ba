"""SessionManager: sessions owned by users, their message history and the model's context.

Storage is behind the :class:`SessionStore` protocol. :class:`MemorySessionStore` keeps
everything in this process (one shared store per process by default, so independently built
components see the same sessions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from agent_template.errors import SessionNotFoundError
from agent_template.models import Message, Session, SessionChanged

__all__ = ["MemorySessionStore", "SessionManager", "SessionStore", "default_store"]


class SessionStore(Protocol):
    async def save_session(self, session: Session) -> None: ...
    async def load_session(self, session_id: str) -> Session | None: ...
    async def delete_session(self, session_id: str) -> bool: ...
    async def list_sessions(
        self, user_id: str | None, limit: int, offset: int
    ) -> list[Session]: ...
    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None: ...
    async def load_messages(self, session_id: str, limit: int | None = None) -> list[Message]: ...


class MemorySessionStore:
    """Sessions and messages in memory: fast, and gone when the process ends."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._messages: dict[str, list[Message]] = {}

    async def save_session(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        self._messages.setdefault(session.session_id, [])

    async def load_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def delete_session(self, session_id: str) -> bool:
        self._messages.pop(session_id, None)
        return self._sessions.pop(session_id, None) is not None

    async def list_sessions(self, user_id: str | None, limit: int, offset: int) -> list[Session]:
        rows = [s for s in self._sessions.values() if user_id is None or s.user_id == user_id]
        rows.sort(key=lambda s: s.last_active_at, reverse=True)
        return rows[offset : offset + limit]

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        self._messages.setdefault(session_id, []).extend(messages)

    async def load_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        rows = self._messages.get(session_id, [])
        return list(rows[-limit:] if limit else rows)


_default_store: MemorySessionStore | None = None


def default_store() -> MemorySessionStore:
    """The process's shared in-memory store."""
    global _default_store
    if _default_store is None:
        _default_store = MemorySessionStore()
    return _default_store


class SessionManager:
    """Creates, finds and deletes sessions, and keeps their message history.

    Args:
        store: where sessions live; the process's shared in-memory store by default.
        bus: where session events go (anything with ``publish``).
    """

    def __init__(self, store: SessionStore | None = None, *, bus: Any = None) -> None:
        self.store: SessionStore = store if store is not None else default_store()
        self.bus = bus

    def _publish(self, session: Session, action: str) -> None:
        if self.bus is not None:
            self.bus.publish(SessionChanged(session_id=session.session_id, action=action))  # type: ignore[arg-type]

    async def create_session(
        self,
        user_id: str = "default",
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        model_settings: dict[str, Any] | None = None,
    ) -> Session:
        session = Session(
            user_id=user_id,
            title=title,
            metadata=metadata or {},
            model_settings=model_settings or {},
        )
        if session_id:
            session.session_id = session_id
        await self.store.save_session(session)
        self._publish(session, "created")
        return session

    async def get_session(self, session_id: str) -> Session:
        """Raises SessionNotFoundError."""
        session = await self.store.load_session(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        return session

    async def get_or_create(self, session_id: str, user_id: str = "default") -> Session:
        session = await self.store.load_session(session_id)
        return session or await self.create_session(user_id, session_id=session_id)

    async def list_sessions(
        self, user_id: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[Session]:
        """Newest activity first."""
        return await self.store.list_sessions(user_id, limit, offset)

    async def rename_session(self, session_id: str, title: str) -> Session:
        session = await self.get_session(session_id)
        session.title = title
        session.updated_at = time.time()
        await self.store.save_session(session)
        self._publish(session, "updated")
        return session

    async def delete_session(self, session_id: str) -> None:
        session = await self.get_session(session_id)
        await self.store.delete_session(session_id)
        self._publish(session, "deleted")

    async def add_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        """Append to the history (committed before this returns)."""
        if not messages:
            return
        session = await self.get_session(session_id)
        await self.store.append_messages(session_id, messages)
        session.message_count += len(messages)
        session.updated_at = session.last_active_at = time.time()
        await self.store.save_session(session)

    async def get_messages(self, session_id: str, *, limit: int | None = None) -> list[Message]:
        await self.get_session(session_id)
        return await self.store.load_messages(session_id, limit)

    async def get_context(self, session_id: str) -> list[Message]:
        """The messages handed to the model for the next turn."""
        return await self.get_messages(session_id)
