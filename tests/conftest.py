"""Shared fixtures. No test may reach a real model provider or any host but this machine."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.wire_server import WireServer, wire_server  # noqa: F401 - fixture re-export

_LOOPBACK = ("127.", "::1", "localhost")
_PROVIDER_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "DEEPSEEK_API_KEY",
    "QWEN_API_KEY",
    "LOCAL_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "DEEPSEEK_BASE_URL",
    "QWEN_BASE_URL",
    "OLLAMA_HOST",
    "LOCAL_BASE_URL",
    "DEFAULT_MODEL_PROVIDER",
    "DEFAULT_MODEL",
    "FALLBACK_PROVIDERS",
)


def _is_local(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        return str(address[0]).startswith(_LOOPBACK)
    return True  # unix sockets and the like stay on this machine


@pytest.fixture(autouse=True)
def _no_real_providers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Fail any test that would reach a real provider: no keys, no .env, no outside hosts."""
    for var in _PROVIDER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env; data folders land in the test's own directory

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guarded(address: Any) -> None:
        if not _is_local(address):
            raise AssertionError(f"test tried to reach {address!r}; only loopback is allowed")

    def connect(self: socket.socket, address: Any) -> None:
        guarded(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guarded(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not str(host).startswith(_LOOPBACK):
            raise AssertionError(f"test tried to resolve {host!r}; only loopback is allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield


@pytest.fixture
def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------- databases

DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, error: BaseException) -> None:
    """Skip when a service is absent, except under CI, where that is a failure."""
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if _ci():
        pytest.fail(f"{message}; CI must test against it", pytrace=False)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A fresh PostgreSQL schema for one test, dropped afterwards: (url, connect_args)."""
    import uuid

    import asyncpg

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(plain, timeout=5)
    except Exception as exc:
        service_missing(f"PostgreSQL at {url}", exc)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield url, {"server_settings": {"search_path": schema}}
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An opened SQLStore on a real SQLite file, then on a real PostgreSQL schema."""
    from agent_template.services.storage import SQLStore

    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            sql_store = SQLStore(f"sqlite:///{tmp_path / 'db' / 'agent.db'}")
        else:
            url, connect_args = await stack.enter_async_context(pg_schema())
            sql_store = SQLStore(url, connect_args=connect_args)
        await sql_store.open()
        stack.push_async_callback(sql_store.close)
        yield sql_store


@pytest.fixture(autouse=True)
def _fresh_default_stream_store() -> Iterator[None]:
    """Each test starts with an empty process-default stream store (``AgentLoop()``'s)."""
    from agent_template.core.stream_store import set_default_stream_store

    set_default_stream_store(None)
    yield
    set_default_stream_store(None)
