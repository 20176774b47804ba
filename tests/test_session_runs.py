"""One run per session: turns never interleave, within a process or across processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_template import AgentLoop, SessionManager, tool
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.core.stream_store import MemoryStreamStore
from agent_template.models import AssistantMessage, Message, TaskState, ToolResultMessage
from agent_template.services.providers.offline import TestProvider, TestTurn
from agent_template.services.storage import SQLStore
from tests.conftest import DEFAULT_TEST_DATABASE_URL, service_missing

SLOW_TOOLS = '''
import time
from agent_template import tool

@tool
def slow(x: int) -> int:
    """Wait a moment, then give x back."""
    time.sleep(0.3)
    return x
'''


def turns_of(history: list[Message]) -> list[list[Message]]:
    """The history cut at each user message."""
    turns: list[list[Message]] = []
    for message in history:
        if message.role == "user":
            turns.append([])
        turns[-1].append(message)
    return turns


def assert_contiguous_turns(history: list[Message], expected: int) -> None:
    turns = turns_of(history)
    assert len(turns) == expected, [m.role for m in history]
    for turn in turns:
        assert [m.role for m in turn] == ["user", "assistant", "tool", "assistant"]
        asked = turn[0].content
        result = turn[2]
        assert isinstance(result, ToolResultMessage)
        assert f'"x": {result.content}' in str(asked)  # this turn's tool answered this turn


@tool
async def slow(x: int) -> int:
    """Wait a moment, then give x back."""
    await asyncio.sleep(0.05)
    return x


def _script(request: Any) -> TestTurn:
    last = request.messages[-1]
    if last.role == "user":
        return TestTurn(tool_calls=[("slow", {"x": int(str(last.content).split()[-1])})])
    return TestTurn(text="done")


async def test_two_chat_tasks_on_one_session_take_turns(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, context_compression=False)  # type: ignore[call-arg]
    store = SQLStore(f"sqlite:///{tmp_path / 'agent.db'}")
    sessions = SessionManager(store=store)
    loop = AgentLoop(
        settings,
        model=TestProvider(_script, delay=0.005),
        tools=[slow],
        session_manager=sessions,
        todo_tools=False,
        bus=InProcessEventBus(),
        streams=MemoryStreamStore(),
    )
    session = await sessions.create_session("alice")
    tasks = [
        await loop.create_task(
            {"message": f"x: {i}", "session_id": session.session_id, "user_id": "alice"}
        )
        for i in range(3)
    ]
    await loop.run()
    assert all(t.state is TaskState.COMPLETED for t in tasks)
    history = await sessions.get_messages(session.session_id)
    turns = turns_of(history)
    assert [t[0].content for t in turns] == ["x: 0", "x: 1", "x: 2"]  # in the order asked
    for i, turn in enumerate(turns):
        assert [m.role for m in turn] == ["user", "assistant", "tool", "assistant"]
        assert turn[2].content == str(i)
        # each run saw the whole history the previous ones left
        assert isinstance(turn[1], AssistantMessage)
    await sessions.close()


@contextlib.asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    import asyncpg

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(plain, timeout=5)
    except Exception as exc:
        service_missing(f"PostgreSQL at {url}", exc)
    name = f"runs_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'agent.db'}"
    else:
        async with fresh_pg_database() as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_cli_runs_started_together_on_one_session_never_interleave(
    kind: str, tmp_path: Path
) -> None:
    (tmp_path / "slowtools.py").write_text(SLOW_TOOLS)
    async with database(kind, tmp_path) as url:
        env = {**os.environ, "DATABASE_URL": url, "DEFAULT_MODEL_PROVIDER": "test"}
        env.pop("REDIS_URL", None)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent_template.cli",
                    "run",
                    "--tools",
                    "slowtools",
                    "--session",
                    "S",
                    f'call slow {{"x": {i}}}',
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        store = SQLStore(url)
        try:
            history = [r.message for r in await store.load_records("S")]
        finally:
            await store.close()
    assert_contiguous_turns(history, expected=3)
    queued = [err for _, err in outputs if "waiting for" in err]
    assert queued  # at least one run said it waited its turn
