"""Bearer tokens: made, listed, verified and revoked on real SQLite and PostgreSQL databases,
through ``TokenStore``, the ``agent-template token`` commands and a running server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agent_template.api.auth import TokenStore, token_id_of
from agent_template.models import Session, UserMessage
from agent_template.services.storage import SQLStore
from agent_template.services.storage.migrate import HEAD_REVISION, current_revision, upgrade
from tests.conftest import DEFAULT_TEST_DATABASE_URL, pg_schema, service_missing


class FakeClock:
    """A monotonic clock the test moves by hand (the token cache's TTL and touch interval)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def token_rows(store: SQLStore) -> list[dict[str, Any]]:
    """Every stored token row, every column, as the database has it."""
    async with (await store.open()).connect() as conn:
        rows = await conn.execute(text("SELECT * FROM api_tokens"))
        return [dict(row._mapping) for row in rows]


async def run_sql(store: SQLStore, sql: str, **params: Any) -> None:
    async with (await store.open()).begin() as conn:
        await conn.execute(text(sql), params)


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def other_secret(token: str) -> str:
    """The same token id with a different secret of the same shape."""
    secret = secret_of(token)
    return token.removesuffix(secret) + ("B" if secret[0] == "A" else "A") + secret[1:]


# --------------------------------------------------------------------------- TokenStore


async def test_create_list_verify_revoke(store: SQLStore) -> None:
    tokens = TokenStore(store)
    info, token = await tokens.create("ada", "laptop")
    assert token.startswith(f"at_{info.token_id}_")
    assert token_id_of(token) == info.token_id
    assert (info.user_id, info.name, info.revoked) == ("ada", "laptop", False)
    await tokens.create("bob")

    assert await tokens.verify(token) == "ada"
    assert [(t.token_id, t.user_id, t.name) for t in await tokens.list("ada")] == [
        (info.token_id, "ada", "laptop")
    ]
    assert sorted(t.user_id for t in await tokens.list()) == ["ada", "bob"]

    assert await tokens.revoke(info.token_id) is True
    assert await tokens.verify(token) is None  # at once, though it was cached
    (listed,) = await tokens.list("ada")
    assert listed.revoked and listed.revoked_at is not None
    assert await tokens.revoke(info.token_id) is True  # already revoked: still found
    assert await tokens.revoke("0123456789abcdef") is False
    assert await TokenStore(store).verify(token) is None  # and for a fresh process


async def test_the_stored_row_has_no_secret(store: SQLStore) -> None:
    _, token = await TokenStore(store).create("ada", "ci")
    secret = secret_of(token)
    (row,) = await token_rows(store)
    assert row["user_id"] == "ada"
    assert row["kdf"].startswith("scrypt:")
    for value in row.values():
        assert secret not in str(value)
    assert len(bytes.fromhex(row["secret_hash"])) == 32
    assert len(bytes.fromhex(row["salt"])) == 16


async def test_every_token_gets_its_own_salt(store: SQLStore) -> None:
    tokens = TokenStore(store)
    await tokens.create("ada")
    await tokens.create("ada")
    first, second = await token_rows(store)
    assert first["salt"] != second["salt"]
    assert first["secret_hash"] != second["secret_hash"]


async def test_wrong_unknown_and_malformed_tokens_are_refused(store: SQLStore) -> None:
    tokens = TokenStore(store)
    _, token = await tokens.create("ada")
    assert await tokens.verify(token) == "ada"  # cached now: the wrong one must not ride on it
    assert await tokens.verify(other_secret(token)) is None
    unknown = "at_0123456789abcdef_" + secret_of(token)
    assert await tokens.verify(unknown) is None
    for bad in ("", "at_", token + "x", token[:-1], token.upper(), " " + token, "Bearer " + token):
        assert await tokens.verify(bad) is None, bad
    assert await tokens.verify(token) == "ada"


async def test_a_token_revoked_by_another_process_stops_within_the_ttl(store: SQLStore) -> None:
    clock = FakeClock()
    replica = TokenStore(store, clock=clock, cache_ttl=30)
    cli = TokenStore(store)
    info, token = await cli.create("ada")
    assert await replica.verify(token) == "ada"

    assert await cli.revoke(info.token_id)
    clock.now += 10
    assert await replica.verify(token) == "ada"  # documented: trusted from the cache meanwhile
    clock.now += 21
    assert await replica.verify(token) is None


async def test_the_cache_asks_the_database_again_after_the_ttl(store: SQLStore) -> None:
    clock = FakeClock()
    tokens = TokenStore(store, clock=clock, cache_ttl=30)
    info, token = await tokens.create("ada")
    assert await tokens.verify(token) == "ada"
    # A changed hash (a reissued row) is noticed: the secret is checked against it again.
    await run_sql(
        store,
        "UPDATE api_tokens SET secret_hash = :h WHERE id = :id",
        h="00" * 32,
        id=info.token_id,
    )
    clock.now += 31
    assert await tokens.verify(token) is None


async def test_the_cache_is_bounded(store: SQLStore) -> None:
    tokens = TokenStore(store, cache_size=1)
    _, first = await tokens.create("ada")
    _, second = await tokens.create("bob")
    assert await tokens.verify(first) == "ada"
    assert await tokens.verify(second) == "bob"  # pushes the first out
    await run_sql(store, "DELETE FROM api_tokens")
    assert await tokens.verify(second) == "bob"  # still within its TTL, from the cache
    assert await tokens.verify(first) is None  # forgotten, so asked for, and gone


async def test_last_used_is_written_at_most_once_a_minute(store: SQLStore) -> None:
    clock = FakeClock()
    tokens = TokenStore(store, clock=clock, cache_ttl=30)
    info, token = await tokens.create("ada")
    (before,) = await tokens.list()
    assert before.last_used_at is None

    assert await tokens.verify(token) == "ada"
    (used,) = await tokens.list()
    assert used.last_used_at is not None and used.last_used_at >= info.created_at

    await run_sql(store, "UPDATE api_tokens SET last_used_at = 1")
    for step in (10, 20, 25):  # 55 s of busy use, past one cache TTL too
        clock.now += step
        assert await tokens.verify(token) == "ada"
    (quiet,) = await tokens.list()
    assert quiet.last_used_at == 1
    clock.now += 6
    assert await tokens.verify(token) == "ada"
    (again,) = await tokens.list()
    assert again.last_used_at is not None and again.last_used_at > 1


async def test_create_refuses_an_empty_user(store: SQLStore) -> None:
    with pytest.raises(ValueError, match="user"):
        await TokenStore(store).create("  ")
    assert await token_rows(store) == []


async def test_a_store_without_token_tables_verifies_nothing() -> None:
    from agent_template.errors import ConfigurationError
    from agent_template.services.storage import MemorySessionStore

    tokens = TokenStore(MemorySessionStore())
    assert await tokens.verify("at_0123456789abcdef_" + "a" * 43) is None
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        await tokens.create("ada")


# --------------------------------------------------------------------------- migration


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}", {}
    else:
        async with pg_schema() as (url, connect_args):
            yield url, connect_args


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_0004_adds_tokens_to_a_0003_database_and_keeps_its_data(
    kind: str, tmp_path: Path
) -> None:
    async with database(kind, tmp_path) as (url, args):
        old = SQLStore(url, connect_args=args, migrate=False)
        engine = create_async_engine(old.url, connect_args=args)
        await upgrade(engine, "0003")
        await engine.dispose()
        # Data written by a 0003 version of the code.
        await old.save_session(Session(session_id="old", user_id="ada", title="kept"))
        await old.append_messages("old", [UserMessage(content="before the upgrade")])
        await old.close()

        store = SQLStore(url, connect_args=args)  # opening applies 0004
        assert await current_revision(await store.open()) == HEAD_REVISION
        session = await store.load_session("old")
        assert session is not None and session.title == "kept"
        records = await store.load_records("old")
        assert [r.message.content for r in records] == ["before the upgrade"]
        tokens = TokenStore(store)
        _, token = await tokens.create("ada")
        assert await tokens.verify(token) == "ada"
        assert await store.integrity_check() == []
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_downgrading_0004_drops_only_the_tokens(kind: str, tmp_path: Path) -> None:
    from alembic import command

    from agent_template.services.storage.migrate import _config

    async with database(kind, tmp_path) as (url, args):
        store = SQLStore(url, connect_args=args)
        await store.save_session(Session(session_id="s", user_id="ada"))
        await TokenStore(store).create("ada")
        await store.close()

        engine = create_async_engine(store.url, connect_args=args)
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_config(sync, None), "0003"))  # type: ignore[arg-type]
        assert await current_revision(engine) == "0003"
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM sessions")) == 1
        await engine.dispose()

        again = SQLStore(url, connect_args=args)  # and up again, with no tokens
        assert await TokenStore(again).list() == []
        await again.close()


# --------------------------------------------------------------------------- the server


async def test_a_token_made_after_start_up_authenticates_on_the_server(tmp_path: Path) -> None:
    from agent_template.api.app import create_app
    from agent_template.api.deps import authenticate
    from agent_template.api.errors import ApiError
    from tests.server_helpers import serve, server_settings

    app = create_app(server_settings(tmp_path, auth_required=True))
    async with serve(app):
        state = app.state.server
        info, token = await state.tokens.create("ada")
        remote = "203.0.113.9"
        header = {"authorization": f"Bearer {token}"}
        assert await authenticate(state, header, {}, remote) == "ada"
        assert await authenticate(state, {}, {"token": token}, remote) == "ada"
        await state.tokens.revoke(info.token_id)
        with pytest.raises(ApiError) as refused:
            await authenticate(state, header, {}, remote)
        assert (refused.value.status, refused.value.code) == (401, "invalid_token")


# --------------------------------------------------------------------------- the CLI


def cli(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_template.cli", "token", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def check_the_commands(database_url: str, cwd: Path) -> str:
    """Create, list and revoke through the CLI; returns the token it printed."""
    made = cli("create", "--user", "ada", "--name", "laptop", database_url=database_url, cwd=cwd)
    assert made.returncode == 0, made.stderr
    (token,) = made.stdout.split()  # the token, alone on stdout
    token_id = token_id_of(token)
    assert token_id is not None
    assert token not in made.stderr
    assert "Authorization: Bearer" in made.stderr and "?token=" in made.stderr

    listing = cli("list", database_url=database_url, cwd=cwd)
    assert listing.returncode == 0, listing.stderr
    assert token_id in listing.stdout and "laptop" in listing.stdout
    assert secret_of(token) not in listing.stdout + listing.stderr
    other = cli("list", "--user", "bob", database_url=database_url, cwd=cwd)
    assert token_id not in other.stdout and "No tokens for user 'bob'." in other.stdout

    unknown = cli("revoke", "0123456789abcdef", database_url=database_url, cwd=cwd)
    assert unknown.returncode == 1
    assert "No token with id '0123456789abcdef'" in unknown.stderr
    revoked = cli("revoke", token_id, database_url=database_url, cwd=cwd)
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked token {token_id}" in revoked.stdout
    _, line = cli("list", database_url=database_url, cwd=cwd).stdout.splitlines()
    assert not line.endswith("-")  # the REVOKED column has a time now
    return token


async def test_the_cli_prints_the_token_once_and_never_lists_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    store = SQLStore(url)
    tokens = TokenStore(store)
    token = check_the_commands(url, tmp_path)
    assert await tokens.verify(token) is None  # revoked by the CLI
    assert (await tokens.list())[0].revoked
    await store.close()


async def test_the_cli_printed_token_verifies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    made = cli("create", "--user", "ada", database_url=url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    store = SQLStore(url)
    assert await TokenStore(store).verify(made.stdout.strip()) == "ada"
    await store.close()


def test_the_cli_refuses_an_empty_user(tmp_path: Path) -> None:
    made = cli("create", "--user", "", database_url=f"sqlite:///{tmp_path / 'a.db'}", cwd=tmp_path)
    assert made.returncode == 1
    assert "user must be" in made.stderr and made.stdout == ""


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (the CLI takes only a URL, so a schema will not do)."""
    import asyncpg

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(plain, timeout=5)
    except Exception as exc:
        service_missing(f"PostgreSQL at {url}", exc)
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError as exc:
        await conn.close()
        pytest.skip(f"the PostgreSQL user may not create databases: {exc}")
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


async def test_the_cli_works_on_postgresql(tmp_path: Path) -> None:
    async with pg_database() as url:
        token = check_the_commands(url, tmp_path)
        store = SQLStore(url)
        assert await TokenStore(store).verify(token) is None
        await store.close()


def test_the_token_commands_start_without_the_web_stack(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from agent_template.cli import main\n"
        "sys.argv = ['agent-template', 'token', 'list']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "web = {'fastapi', 'starlette', 'uvicorn'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & web))\n"
    )
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
