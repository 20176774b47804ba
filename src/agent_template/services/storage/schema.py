"""The database schema (SQLAlchemy Core). Changes go through a migration in ``migrations/``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["api_tokens", "approvals", "messages", "metadata", "sessions", "tasks", "todos"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Times are seconds since the epoch (float): the same on SQLite and PostgreSQL.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False, index=True),
    Column("title", Text),
    Column("metadata", Text, nullable=False, default="{}"),
    Column("model_settings", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_active_at", Float, nullable=False),
    Column("message_count", Integer, nullable=False, default=0),
    Column("compaction", Text),  # the context compressor's state, JSON
    # The session's own tool settings, JSON: tools turned off, permission rules.
    Column("tool_settings", Text),
    # The run lease: the task whose run (chat turn) works on the session now, the process
    # that holds it for that task, and until when; all NULL while the session is free.
    Column("run_holder", String(64)),
    Column("run_owner", String(128)),
    Column("run_lease_expires_at", Float),
)
Index("ix_sessions_run_holder", sessions.c.run_holder)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "session_id",
        String(64),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    # complete | cancelled | failed | interrupted | streaming (a checkpointed partial answer)
    Column("status", String(16), nullable=False),
    Column("encoding", SmallInteger, nullable=False, default=0),  # 0 JSON, 1 LZ4-framed JSON
    Column("body", LargeBinary, nullable=False),
    Column("task_id", String(64)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("session_id", "seq"),
)
Index("ix_messages_task_id", messages.c.task_id)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE")),
    Column("type", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("payload", Text, nullable=False, default="{}"),
    Column("result", Text),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", Float),
    Column("user_id", String(128)),
    Column("parent_id", String(64)),
)
Index("ix_tasks_session_id", tasks.c.session_id)
Index("ix_tasks_state", tasks.c.state)
Index("ix_tasks_user_id", tasks.c.user_id)

todos = Table(
    "todos",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "session_id",
        String(64),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_todos_session_id", todos.c.session_id)

# Bearer tokens of the server (``agent-template token create``). A token is
# ``at_<id>_<secret>``: the row is found by its id, and the secret is checked against
# ``secret_hash``, its key-derivation hash; the secret itself is never stored.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("name", Text),  # a label for people: "laptop", "ci"
    Column("kdf", String(64), nullable=False),  # the function and its parameters
    Column("salt", String(64), nullable=False),  # hex
    Column("secret_hash", String(128), nullable=False),  # hex
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
Index("ix_api_tokens_user_id", api_tokens.c.user_id)

# Approval requests of tool calls that wait for a person (``ask`` rules). A row outlives the
# process that asked: after a restart the request is still pending, and answering it resumes
# the run. ``state`` is ``pending``, then ``approve``, ``deny``, ``always`` or ``timeout``;
# the ``always`` rows of a session are its standing grants.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("task_id", String(64), nullable=False),
    Column("session_id", String(64)),
    Column("user_id", String(128), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("tool", String(128), nullable=False),
    Column("arguments", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("parts", Text, nullable=False),  # JSON list: the shell commands asked about
    Column("state", String(16), nullable=False),
    Column("message", Text),  # the answer's note for the model
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("answered_at", Float),
    # "tool_call", or "question": an MCP server's question to the user (elicitation), whose
    # answer is ``content`` (JSON); ``arguments`` then holds what it asks for.
    Column("kind", String(16), nullable=False, default="tool_call"),
    Column("content", Text),
)
Index("ix_approvals_task_id", approvals.c.task_id)
Index("ix_approvals_user_id_state", approvals.c.user_id, approvals.c.state)
Index("ix_approvals_session_id_state", approvals.c.session_id, approvals.c.state)
