"""Opening the database: many first starts at once, failed migrations, unwritable folders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agent_template.errors import (
    StorageError,
    StorageMigrationError,
    StoragePermissionError,
    StorageUnavailableError,
)
from agent_template.models import Session
from agent_template.services.storage import SQLStore
from agent_template.services.storage.migrate import upgrade
from tests.conftest import pg_schema

PROCESSES = 8

# Each child opens the store (migrating a new database), creates the shared session if no
# one has yet, and appends one message. It waits for "go" on stdin so that all of them start
# migrating at the same moment, after their slow imports.
CHILD = """
import asyncio, json, sys
import alembic.command, sqlalchemy.ext.asyncio  # imported now, so all start migrating together
import agent_template.services.storage.migrate
from agent_template.models import Session, UserMessage
from agent_template.services.storage import SQLStore

async def main() -> None:
    url, connect_args = sys.argv[1], json.loads(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()
    store = SQLStore(url, connect_args=connect_args)
    try:
        await store.create_session_if_absent(Session(session_id="race", user_id="u"))
        await store.append_messages("race", [UserMessage(content="hi")])
    finally:
        await store.close()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def new_database(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'agent.db'}", {}
    else:
        async with pg_schema() as (url, connect_args):
            yield url, connect_args


async def start_at_once(url: str, connect_args: dict[str, Any]) -> list[tuple[int, str]]:
    import json

    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            url,
            json.dumps(connect_args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    for child in children:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    results = []
    for child in children:
        _, err = await asyncio.wait_for(child.communicate(), 120)
        results.append((child.returncode or 0, err.decode()))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_eight_first_starts_at_once_all_succeed(kind: str, tmp_path: Path) -> None:
    async with new_database(kind, tmp_path) as (url, connect_args):
        results = await start_at_once(url, connect_args)
        failures = [err.strip().splitlines()[-1] for code, err in results if code != 0]
        assert failures == []
        store = SQLStore(url, connect_args=connect_args)
        try:
            session = await store.load_session("race")
            assert session is not None and session.message_count == PROCESSES
            assert await store.integrity_check() == []
        finally:
            await store.close()


# --------------------------------------------------------------------------- failed migrations


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_database_from_a_newer_version_is_a_migration_error(
    kind: str, tmp_path: Path
) -> None:
    async with new_database(kind, tmp_path) as (url, connect_args):
        if kind == "postgres":
            url = url.replace("postgres@", "postgres:hunter2@", 1)  # trusted: not checked
        first = SQLStore(url, connect_args=connect_args)
        engine = await first.open()
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await first.close()

        with pytest.raises(StorageMigrationError) as info:
            await SQLStore(url, connect_args=connect_args).open()
    error = info.value
    assert isinstance(error, StorageError) and not isinstance(error, StorageUnavailableError)
    assert error.code == "storage_migration_failed"
    message = str(error)
    assert "9999" in message
    assert "The full error is in the log" in message
    assert "agent-template" not in message  # a frontend phrases its own hint
    assert "hunter2" not in message
    if kind == "postgres":
        assert "postgres:***@127.0.0.1" in message


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_failing_migration_step_is_not_reported_as_unavailable(
    kind: str, tmp_path: Path
) -> None:
    async with new_database(kind, tmp_path) as (url, connect_args):
        (tmp_path / "fresh").mkdir()
        probe = SQLStore(url, connect_args=connect_args, migrate=False)
        engine = create_async_engine(probe.url, connect_args=connect_args)
        await upgrade(engine, "0001")
        async with engine.begin() as conn:  # in the way of 0002, which creates "todos"
            await conn.execute(text("CREATE TABLE todos (id INTEGER PRIMARY KEY)"))
        await engine.dispose()

        with pytest.raises(StorageMigrationError) as info:
            await SQLStore(url, connect_args=connect_args).open()
    assert "todos" in str(info.value)
    assert "unavailable" not in str(info.value)


def test_storage_errors_share_a_base_and_keep_their_codes() -> None:
    unavailable = StorageUnavailableError("sqlite:///x.db", "boom")
    assert isinstance(unavailable, StorageError)
    assert (unavailable.url, unavailable.detail, unavailable.code) == (
        "sqlite:///x.db",
        "boom",
        "storage_unavailable",
    )
    assert StorageError.code == "storage_error"
    assert StoragePermissionError.code == "storage_permission_denied"


# --------------------------------------------------------------------------- permissions


def _unwritable_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder this user cannot create a database in, and how it fails.

    A read-only folder when chmod means something; as root (which ignores permissions), a
    path under a regular file, which no one can turn into a folder.
    """
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return folder / "data", "PermissionError"
    folder.chmod(0o700)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "data", "NotADirectoryError"


async def test_an_unwritable_data_folder_names_the_folder(tmp_path: Path) -> None:
    folder, cause = _unwritable_folder(tmp_path)
    db = folder / "agent.db"
    try:
        with pytest.raises(StoragePermissionError) as info:
            await SQLStore(f"sqlite:///{db}").open()
    finally:
        (tmp_path / "read-only").chmod(0o700)  # so pytest can clean up
    error = info.value
    assert error.code == "storage_permission_denied"
    assert error.path == str(db)
    assert cause in error.detail
    message = str(error)
    assert message.startswith(f"Cannot write the SQLite database {db}: ")
    assert f"Check that the folder {folder} exists and that this user may write to it" in message
    assert "or point DATABASE_URL elsewhere." in message
    assert "unavailable" not in message and "reachable" not in message


async def test_a_read_only_database_file_is_a_permission_error(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    writable = SQLStore(f"sqlite:///{db}")
    await writable.save_session(Session(session_id="s", user_id="ada"))
    await writable.close()
    # Opened read-only by SQLite itself, the one kind of read-only that binds root too.
    read_only = SQLStore(f"sqlite:///file:{db}?mode=ro&uri=true")
    try:
        with pytest.raises(StoragePermissionError) as info:
            await read_only.open()
            await read_only.save_session(Session(session_id="s2", user_id="ada"))
    finally:
        await read_only.close()
    assert info.value.path == str(db)
    assert "readonly database" in info.value.detail or "unable to open" in info.value.detail
    assert f"Check that the folder {tmp_path} exists" in str(info.value)
