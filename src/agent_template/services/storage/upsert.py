"""``INSERT ... ON CONFLICT`` for SQLite and PostgreSQL: race-free create-or-update of a row."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import Table
from sqlalchemy.sql.dml import Insert

__all__ = ["upsert"]


def upsert(
    dialect: str,
    table: Table,
    *,
    update_columns: Iterable[str] | None,
) -> Insert:
    """``INSERT`` into ``table``; on a primary-key conflict update ``update_columns``.

    Execute it with the row's values as parameters (``conn.execute(statement, values)``).
    With ``update_columns=None`` a conflicting insert does nothing (the row that is there
    stays as it is). Unlike "UPDATE, then INSERT if nothing matched", two concurrent callers
    cannot both reach the INSERT and have one fail with a duplicate key.

    Statements are built once per table and column list: building one costs more than
    running it on SQLite, and they are on every task's path.
    """
    columns = None if update_columns is None else tuple(update_columns)
    return _upsert(dialect, table, columns)


@lru_cache(maxsize=64)
def _upsert(dialect: str, table: Table, update_columns: tuple[str, ...] | None) -> Insert:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        keys = [c.name for c in table.primary_key.columns]
        if update_columns is None:
            return pg.on_conflict_do_nothing(index_elements=keys)
        excluded = pg.excluded
        return pg.on_conflict_do_update(
            index_elements=keys, set_={c: excluded[c] for c in update_columns}
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(table)
    keys = [c.name for c in table.primary_key.columns]
    if update_columns is None:
        return lite.on_conflict_do_nothing(index_elements=keys)
    excluded = lite.excluded
    return lite.on_conflict_do_update(
        index_elements=keys, set_={c: excluded[c] for c in update_columns}
    )
