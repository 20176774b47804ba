"""Storage: the SQL repository (SQLite or PostgreSQL) and its migrations."""

from agent_template.services.storage.records import MessageRecord, TaskRecord, TodoRecord
from agent_template.services.storage.sql import SQLStore, async_url

__all__ = ["MessageRecord", "SQLStore", "TaskRecord", "TodoRecord", "async_url"]
