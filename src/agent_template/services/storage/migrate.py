"""Schema migrations with Alembic, applied programmatically at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["MIGRATIONS_DIR", "current_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _config(connection: Connection, schema: str | None) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head", schema: str | None = None) -> None:
    """Bring the database to ``revision`` (the newest by default); safe to run every start."""
    from alembic import command

    def run(connection: Connection) -> None:
        command.upgrade(_config(connection, schema), revision)  # type: ignore[arg-type]

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
