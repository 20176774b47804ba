"""Tasks know their user and parent; sessions carry the run lease.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: supported by SQLite too, and it never copies a table.
    op.add_column("tasks", sa.Column("user_id", sa.String(128)))
    op.add_column("tasks", sa.Column("parent_id", sa.String(64)))
    op.create_index("ix_tasks_user_id", "tasks", ["user_id"])
    op.add_column("sessions", sa.Column("run_holder", sa.String(64)))
    op.add_column("sessions", sa.Column("run_owner", sa.String(128)))
    op.add_column("sessions", sa.Column("run_lease_expires_at", sa.Float))
    op.create_index("ix_sessions_run_holder", "sessions", ["run_holder"])


def downgrade() -> None:
    op.drop_index("ix_sessions_run_holder", table_name="sessions")
    op.drop_index("ix_tasks_user_id", table_name="tasks")
    # Not batch mode: on SQLite a batch copies the table, and dropping the old ``sessions``
    # while foreign keys are on would cascade-delete every message. ALTER TABLE ... DROP
    # COLUMN (SQLite 3.35 and later) changes the table in place.
    for column in ("run_lease_expires_at", "run_owner", "run_holder"):
        op.drop_column("sessions", column)
    for column in ("parent_id", "user_id"):
        op.drop_column("tasks", column)
