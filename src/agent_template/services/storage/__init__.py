"""Storage: the SQL repository (SQLite or PostgreSQL) and its migrations.

``SQLStore`` is imported on first use, so code that only needs the record types does not load
SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent_template.services.storage.memory import MemorySessionStore
from agent_template.services.storage.records import MessageRecord, TaskRecord, TodoRecord

if TYPE_CHECKING:
    from agent_template.services.storage.sql import SQLStore, async_url

__all__ = [
    "MemorySessionStore",
    "MessageRecord",
    "SQLStore",
    "TaskRecord",
    "TodoRecord",
    "async_url",
]


def __getattr__(name: str) -> Any:
    if name in ("SQLStore", "async_url"):
        from agent_template.services.storage import sql

        return getattr(sql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
