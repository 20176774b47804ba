"""Migrations: from an empty database, and from the previous revision with data in it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent_template.models import Session, UserMessage
from agent_template.services.storage import SQLStore, TodoRecord
from agent_template.services.storage.migrate import current_revision, upgrade
from tests.conftest import pg_schema


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}", {}
    else:
        async with pg_schema() as (url, connect_args):
            yield url, connect_args


def engine_for(store: SQLStore, connect_args: dict[str, Any]) -> AsyncEngine:
    return create_async_engine(store.url, connect_args=connect_args)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_upgrade_from_empty(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as (url, args):
        store = SQLStore(url, connect_args=args)
        engine = await store.open()
        assert await current_revision(engine) == "0002"
        await store.open()  # idempotent
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_upgrade_from_the_previous_revision_keeps_data(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as (url, args):
        probe = SQLStore(url, connect_args=args, migrate=False)
        engine = engine_for(probe, args)
        await upgrade(engine, "0001")
        assert await current_revision(engine) == "0001"
        now = time.time()
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sessions (id, user_id, title, metadata, model_settings,"
                    " created_at, updated_at, last_active_at, message_count)"
                    " VALUES ('old', 'ada', 'kept', '{}', '{}', :t, :t, :t, 0)"
                ),
                {"t": now},
            )
        await engine.dispose()

        store = SQLStore(url, connect_args=args)  # opening applies 0002
        await store.open()
        session = await store.load_session("old")
        assert session is not None
        assert session.title == "kept"
        await store.append_messages("old", [UserMessage(content="after the upgrade")])
        await store.save_todos("old", [TodoRecord("new table works", "pending")])
        assert [r.message.content for r in await store.load_records("old")] == ["after the upgrade"]
        assert await store.integrity_check() == []
        await store.save_session(Session(session_id="new", user_id="bob"))
        await store.close()
