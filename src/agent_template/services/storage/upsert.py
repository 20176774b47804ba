"""``INSERT ... ON CONFLICT`` for SQLite and PostgreSQL: race-free create-or-update of a row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table
from sqlalchemy.sql.dml import Insert

__all__ = ["upsert"]


def upsert(
    dialect: str,
    table: Table,
    values: Mapping[str, Any],
    *,
    update_columns: Iterable[str] | None,
) -> Insert:
    """Insert ``values`` into ``table``; on a primary-key conflict update ``update_columns``.

    With ``update_columns=None`` a conflicting insert does nothing (the row that is there
    stays as it is). Unlike "UPDATE, then INSERT if nothing matched", two concurrent callers
    cannot both reach the INSERT and have one fail with a duplicate key.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table).values(**values)
        keys = [c.name for c in table.primary_key.columns]
        if update_columns is None:
            return pg.on_conflict_do_nothing(index_elements=keys)
        return pg.on_conflict_do_update(
            index_elements=keys, set_={c: pg.excluded[c] for c in update_columns}
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(table).values(**values)
    keys = [c.name for c in table.primary_key.columns]
    if update_columns is None:
        return lite.on_conflict_do_nothing(index_elements=keys)
    return lite.on_conflict_do_update(
        index_elements=keys, set_={c: lite.excluded[c] for c in update_columns}
    )
