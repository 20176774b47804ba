"""SessionManager over the real stores and caches: context windows, cleanup, cache outages."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from agent_template import AgentLoop, SessionManager
from agent_template.config import Settings
from agent_template.core.bus import InProcessEventBus
from agent_template.errors import SessionNotFoundError
from agent_template.models import (
    AssistantMessage,
    ContextCompacted,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.providers.offline import TestProvider
from agent_template.services.state_cache import FallbackStateCache, MemoryStateCache
from agent_template.services.state_cache.redis import RedisStateCache
from agent_template.services.storage import SQLStore


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=f"sqlite:///{tmp_path / 'a.db'}", redis_url=None, **overrides
    )


async def test_context_window_never_splits_a_tool_pair(store: SQLStore) -> None:
    manager = SessionManager(store=store, context_window=3)
    session = await manager.create_session("ada")
    call = ToolCall(id="c1", name="t")
    await manager.add_messages(
        session.session_id,
        [
            UserMessage(content="q"),
            AssistantMessage(tool_calls=[call]),
            ToolResultMessage(tool_call_id="c1", name="t", content="r"),
            AssistantMessage(content="a"),
            UserMessage(content="next"),
        ],
    )
    context = await manager.get_context(session.session_id)
    # the window starts at the tool result, whose call fell outside: it is dropped
    assert [m.role for m in context] == ["assistant", "user"]
    assert len(await manager.get_messages(session.session_id)) == 5  # storage keeps all


async def test_rename_list_delete_and_idle_cleanup(store: SQLStore) -> None:
    manager = SessionManager(store=store, idle_ttl=3600)
    old = await manager.create_session("ada", title="old")
    fresh = await manager.create_session("ada")
    renamed = await manager.rename_session(fresh.session_id, "fresh")
    assert renamed.title == "fresh"
    stale = old.model_copy(update={"last_active_at": old.last_active_at - 7200})
    await store.save_session(stale)
    assert await manager.cleanup_idle() == 1
    assert [s.session_id for s in await manager.list_sessions("ada")] == [fresh.session_id]
    await manager.delete_session(fresh.session_id)
    with pytest.raises(SessionNotFoundError):
        await manager.get_session(fresh.session_id)
    with pytest.raises(SessionNotFoundError):
        await manager.delete_session(fresh.session_id)


async def test_cleanup_is_off_by_default(store: SQLStore) -> None:
    manager = SessionManager(store=store)
    await manager.create_session("ada")
    assert await manager.cleanup_idle() == 0


async def test_redis_outage_falls_back_without_an_error(
    store: SQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    down = RedisStateCache("redis://127.0.0.1:1/0", socket_timeout=0.2)
    cache = FallbackStateCache(down, MemoryStateCache())
    manager = SessionManager(store=store, cache=cache)
    session = await manager.create_session("ada", title="t")
    with caplog.at_level(logging.WARNING, logger="agent_template.cache"):
        for _ in range(3):
            assert (await manager.get_session(session.session_id)).title == "t"
    assert cache.stats()["fallbacks"] >= 1
    assert sum("REDIS" in r.getMessage().upper() for r in caplog.records) == 1
    await cache.aclose()


async def test_sessions_are_cached_in_redis_and_invalidated(store: SQLStore) -> None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    cache = RedisStateCache(url, namespace=f"test-{os.getpid()}-{id(store)}")
    try:
        await cache.set("probe", 1)
    except Exception as exc:
        from tests.conftest import service_missing

        service_missing(f"Redis at {url}", exc)
    manager = SessionManager(store=store, cache=cache)
    session = await manager.create_session("ada", title="cached")
    await manager.get_session(session.session_id)  # miss: read from the database
    hits = cache.stats()["hits"]
    await manager.get_session(session.session_id)
    assert cache.stats()["hits"] == hits + 1
    await manager.add_messages(session.session_id, [UserMessage(content="x")])
    assert (await manager.get_session(session.session_id)).message_count == 1  # not stale
    await cache.clear_namespace()
    await cache.aclose()


async def test_long_offline_conversation_compacts_and_keeps_the_full_history(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, max_context_length=600)
    bus = InProcessEventBus()
    compactions: list[ContextCompacted] = []
    bus.add_listener(compactions.append, types=["context_compacted"])  # type: ignore[arg-type]
    model = TestProvider()
    # No tools: their definitions alone would not fit a 600-token context.
    loop = AgentLoop(
        settings, model=model, bus=bus, todo_tools=False, builtin_tools=False, subagents=False
    )
    for turn in range(25):
        task = await loop.create_task(
            {
                "message": f"Turn {turn}: " + "tell me more about rivers " * 4,
                "session_id": "long",
                "user_id": "ada",
            }
        )
        await loop.run()
        assert task.state.value == "completed", task.error
    assert compactions, "no compaction past the limit"
    for event in compactions:
        assert event.tokens_before > event.tokens_after
        assert event.limit == 480
        assert event.session_id == "long"
    last_request = model.requests[-1]
    assert loop.compressor.estimate(list(last_request.messages)) <= 600
    assert "[Context:" in str(last_request.messages[0])
    stored = await loop.sessions.get_messages("long")
    assert len(stored) == 50  # every user message and answer, uncompressed
    assert await loop.sessions.load_compaction("long")  # the summary survives restarts
    await loop.sessions.close()


async def test_disabled_compression_never_compacts(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_context_length=300, context_compression=False)
    bus = InProcessEventBus()
    compactions: list[Any] = []
    bus.add_listener(compactions.append, types=["context_compacted"])
    model = TestProvider()
    loop = AgentLoop(settings, model=model, bus=bus, todo_tools=False)
    for _turn in range(8):
        await loop.create_task({"message": "words " * 40, "session_id": "s", "user_id": "ada"})
        await loop.run()
    assert compactions == []
    assert len(model.requests[-1].messages) == 16  # the whole history, system + 15
    await loop.sessions.close()


async def test_manual_compaction_of_a_session(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_context_length=4000)
    bus = InProcessEventBus()
    compactions: list[Any] = []
    bus.add_listener(compactions.append, types=["context_compacted"])
    loop = AgentLoop(settings, model=TestProvider(), bus=bus, todo_tools=False)
    for turn in range(6):
        await loop.create_task(
            {"message": f"message {turn} " * 20, "session_id": "m", "user_id": "ada"}
        )
        await loop.run()
    result = await loop.compact_session("m")
    assert result.manual
    assert result.tokens_after < result.tokens_before
    assert compactions[-1].manual
    assert len(await loop.sessions.get_messages("m")) == 12
    await loop.sessions.close()


async def test_a_running_service_deletes_idle_sessions(tmp_path: Path) -> None:
    import asyncio

    settings = settings_for(tmp_path, session_ttl=0.4)
    loop = AgentLoop(settings, model=TestProvider(), bus=InProcessEventBus(), todo_tools=False)
    old = await loop.sessions.create_session("ada")
    await loop.start()
    try:
        async with asyncio.timeout(5):
            while True:
                try:
                    await loop.sessions.get_session(old.session_id)
                except SessionNotFoundError:
                    break
                await asyncio.sleep(0.05)
    finally:
        await loop.stop()
        await loop.sessions.close()


async def test_a_session_longer_than_the_window_reuses_its_summary(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_context_length=2400, context_window_messages=60)
    model = TestProvider()
    loop = AgentLoop(settings, model=model, bus=InProcessEventBus(), todo_tools=False)
    turns = 70
    for turn in range(turns):
        await loop.create_task(
            {
                "message": f"Turn {turn}: " + "more about deltas " * 6,
                "session_id": "w",
                "user_id": "ada",
            }
        )
        await loop.run()
    summaries = [
        r
        for r in model.requests
        if str(getattr(r.messages[-1], "content", "")).startswith("Transcript of the earlier")
    ]
    answers = len(model.requests) - len(summaries)
    assert answers == turns
    assert 0 < len(summaries) <= turns // 4, "the summary is rebuilt far too often"
    assert len(await loop.sessions.get_messages("w")) == 2 * turns
    context = await loop.sessions.get_context("w")
    assert 60 <= len(context) <= 90  # the recent rows only, however long the session
    await loop.sessions.close()
