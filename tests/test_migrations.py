"""Migrations: from an empty database, and from the previous revision with data in it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent_template.models import Session, UserMessage
from agent_template.services.storage import SQLStore, TodoRecord
from agent_template.services.storage.migrate import HEAD_REVISION, current_revision, upgrade
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
        assert await current_revision(engine) == HEAD_REVISION
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


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_0003_keeps_tasks_and_adds_owners_and_the_run_lease(
    kind: str, tmp_path: Path
) -> None:
    async with database(kind, tmp_path) as (url, args):
        probe = SQLStore(url, connect_args=args, migrate=False)
        engine = engine_for(probe, args)
        await upgrade(engine, "0002")
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
            await conn.execute(
                text(
                    "INSERT INTO tasks (id, session_id, type, state, priority, payload,"
                    " created_at) VALUES ('t-old', 'old', 'chat', 'completed', 1, '{}', :t)"
                ),
                {"t": now},
            )
        await engine.dispose()

        store = SQLStore(url, connect_args=args)  # opening applies 0003 (and what follows)
        engine = await store.open()
        assert await current_revision(engine) == HEAD_REVISION
        (task,) = await store.load_tasks("old")
        assert (task.task_id, task.state, task.user_id, task.parent_id) == (
            "t-old",
            "completed",
            None,
            None,
        )
        assert await store.run_holder("old") is None
        assert await store.acquire_run("old", "t-new", time.time() + 60)
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_downgrading_0003_keeps_sessions_and_messages(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as (url, args):
        store = SQLStore(url, connect_args=args)
        await store.save_session(Session(session_id="s", user_id="ada"))
        await store.append_messages("s", [UserMessage(content="still here")])
        assert await store.acquire_run("s", "t1", time.time() + 60)
        await store.close()

        probe = SQLStore(url, connect_args=args, migrate=False)
        engine = engine_for(probe, args)
        await downgrade(engine, "0002")
        assert await current_revision(engine) == "0002"
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM messages"))
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("sessions")}
            )
        await engine.dispose()
        assert count == 1
        assert "run_holder" not in columns

        again = SQLStore(url, connect_args=args)  # and up again
        assert [r.message.content for r in await again.load_records("s")] == ["still here"]
        await again.close()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

    from agent_template.services.storage.migrate import _config

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_config(sync, None), revision))  # type: ignore[arg-type]


def test_head_revision_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from agent_template.services.storage.migrate import HEAD_REVISION, MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_database_at_head_opens_without_loading_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'agent.db'}"
    code = (
        "import asyncio, sys\n"
        "from agent_template.services.storage import SQLStore\n"
        "async def main():\n"
        f"    store = SQLStore({url!r})\n"
        "    await store.open()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert first.stdout.strip() == "True", first.stderr  # a new database: migrated
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.stdout.strip() == "False", again.stderr  # at head: nothing to import
