"""The terminal client's REST calls (``frontend/rest.py``) against a real server, errors
included: every failure is a ClientError with the server's code and a way forward."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_template.api.app import create_app
from agent_template.frontend.connection import ClientError
from agent_template.frontend.rest import Api, HistoryPage, SessionInfo
from agent_template.models import AssistantMessage, UserMessage
from agent_template.services.providers.offline import TestProvider, TestTurn
from tests.server_helpers import serve, server_settings
from tests.test_server_cli import free_port


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, model: Any = None, **settings: Any
) -> AsyncIterator[tuple[Api, Any, str]]:
    app = create_app(server_settings(tmp_path, **settings), model=model)
    async with serve(app) as base_url:
        api = Api(base_url)
        try:
            yield api, app, base_url
        finally:
            await api.aclose()


async def say(base_url: str, session_id: str, content: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        reply = await http.post(
            "/api/v1/messages", json={"content": content, "session_id": session_id}
        )
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]


async def test_sessions_are_created_listed_filtered_renamed_and_deleted(tmp_path: Path) -> None:
    async with running(tmp_path) as (api, _, _base):
        made = await api.create_session("Trip planning")
        assert isinstance(made, SessionInfo) and made.title == "Trip planning"
        other = await api.create_session()
        assert other.title is None and other.message_count == 0
        listed = await api.sessions()
        assert [s.session_id for s in listed] == [other.session_id, made.session_id]
        assert [s.session_id for s in await api.sessions("TRIP")] == [made.session_id]
        renamed = await api.rename_session(other.session_id, "Work")
        assert renamed.title == "Work" and renamed.updated_at is not None
        await api.delete_session(made.session_id)
        assert [s.session_id for s in await api.sessions()] == [other.session_id]
        for call in (
            api.rename_session("ghost", "x"),
            api.delete_session("ghost"),
            api.history("ghost"),
            api.todos("ghost"),
            api.compact("ghost"),
        ):
            with pytest.raises(ClientError) as caught:
                await call
            assert caught.value.code == "not_found"
            assert "ghost" in caught.value.message and caught.value.hint


async def test_history_pages_back_from_the_newest(tmp_path: Path) -> None:
    script = [f"answer {n}" for n in range(3)]
    async with running(tmp_path, model=TestProvider(script)) as (api, _, base_url):
        for n in range(3):
            await say(base_url, "s1", f"question {n}")
        newest = await api.history("s1", limit=4)
        assert isinstance(newest, HistoryPage)
        assert [seq for seq, _ in newest.items] == [3, 4, 5, 6]
        assert newest.older == 3
        roles = [type(m) for _, m in newest.items]
        assert roles == [UserMessage, AssistantMessage, UserMessage, AssistantMessage]
        assert newest.items[-1][1].text == "answer 2"
        first = await api.history("s1", before=newest.older, limit=4)
        assert [(seq, m.text) for seq, m in first.items] == [(1, "question 0"), (2, "answer 0")]
        assert first.older is None


async def test_tasks_todos_cancel_compact_and_models(tmp_path: Path) -> None:
    todos = {"todos": [{"content": "Plan it", "status": "in_progress"}]}
    script = [TestTurn(tool_calls=[("todo_write", todos)]), "Planned.", "x " * 500]
    async with running(tmp_path, model=TestProvider(script, delay=0.01)) as (
        api,
        _,
        base_url,
    ):
        done = await say(base_url, "s1", "plan")
        assert await api.todos("s1") == [{"content": "Plan it", "status": "in_progress"}]
        tasks = await api.tasks(session_id="s1")
        assert [t["task_id"] for t in tasks] == [done["task_id"]]
        assert tasks[0]["state"] == "completed"
        assert await api.tasks(session_id="s1", live_only=True) == []
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            started = await http.post(
                "/api/v1/messages", json={"content": "long", "session_id": "s1", "wait": False}
            )
        live = await api.tasks(live_only=True)
        assert [t["task_id"] for t in live] == [started.json()["task_id"]]
        with pytest.raises(ClientError) as caught:
            await api.compact("s1")  # the session runs a turn
        assert caught.value.code == "session_busy"
        await api.cancel_task(started.json()["task_id"])
        with pytest.raises(ClientError) as caught:
            await api.cancel_task("ghost")
        assert caught.value.code == "not_found"
        assert await api.approvals() == []
        models = await api.models()
        assert models["provider"] == "test" and models["model"] == "offline"
        assert [p["provider"] for p in models["chain"]] == ["test"]
        assert (await api.ready())["status"] == "ready"
        assert (await api.stats())["user"]["user_id"] == "default"


async def test_compact_answers_what_it_did(tmp_path: Path) -> None:
    async with running(tmp_path, max_context_length=1000) as (api, _, base_url):
        for n in range(5):
            await say(base_url, "s1", f"turn {n}: " + "many words here " * 60)
        result = await api.compact("s1")
        assert result["compacted"] is True
        assert result["tokens_after"] < result["tokens_before"]


async def test_the_offline_model_is_labelled(tmp_path: Path) -> None:
    async with running(tmp_path) as (api, _, _base):  # no provider configured
        models = await api.models()
    assert models["offline"] is True
    assert "offline" in models["label"]


async def test_a_token_is_sent_and_a_bad_one_is_unauthorized(tmp_path: Path) -> None:
    async with running(tmp_path, auth_required=True) as (api, app, base_url):
        with pytest.raises(ClientError) as caught:
            await api.sessions()
        assert caught.value.code == "unauthorized"
        assert "agent-template token create" in caught.value.hint
        _, token = await app.state.server.tokens.create("alice")
        alice = Api(base_url.replace("http://", "ws://") + "/ws", token=token)
        try:
            made = await alice.create_session("mine")
            assert [s.session_id for s in await alice.sessions()] == [made.session_id]
        finally:
            await alice.aclose()


async def test_no_server_is_unreachable() -> None:
    api = Api(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ClientError) as caught:
            await api.sessions()
    finally:
        await api.aclose()
    assert caught.value.code == "server_unreachable"
    assert "agent-server" in caught.value.hint
