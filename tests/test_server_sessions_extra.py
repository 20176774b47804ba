"""The REST additions the terminal client uses: history read backwards (``before``), the
session list filtered by ``q``, and compacting a session's context on demand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from agent_template.api.app import create_app
from agent_template.services.providers.offline import TestProvider
from tests.server_helpers import serve, server_settings


@contextlib.asynccontextmanager
async def client(tmp_path: Path, model: Any = None, **settings: Any) -> AsyncIterator[Any]:
    app = create_app(server_settings(tmp_path, **settings), model=model)
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=30) as http,
    ):
        yield http


async def chat(http: httpx.AsyncClient, session_id: str, content: str) -> None:
    reply = await http.post("/messages", json={"content": content, "session_id": session_id})
    assert reply.status_code == 200, reply.text


async def test_before_pages_back_from_the_newest_and_cursor_paging_is_unchanged(
    tmp_path: Path,
) -> None:
    async with client(tmp_path) as http:
        for n in range(5):
            await chat(http, "s1", f"message {n}")  # 10 messages: user, assistant, ...
        url = "/sessions/s1/messages"
        newest = (await http.get(url, params={"before": 0, "limit": 4})).json()
        assert [m["seq"] for m in newest["items"]] == [7, 8, 9, 10]
        assert newest["older"] == 7 and newest["next_cursor"] is None
        middle = (await http.get(url, params={"before": 7, "limit": 4})).json()
        assert [m["seq"] for m in middle["items"]] == [3, 4, 5, 6]
        first = (await http.get(url, params={"before": middle["older"], "limit": 4})).json()
        assert [m["seq"] for m in first["items"]] == [1, 2]
        assert first["older"] is None
        assert first["items"][0]["content"] == "message 0"
        exact = (await http.get(url, params={"before": 0, "limit": 10})).json()
        assert len(exact["items"]) == 10 and exact["older"] is None
        # Without before: oldest first, by cursor, as always; older stays null.
        forward = (await http.get(url, params={"limit": 4})).json()
        assert [m["seq"] for m in forward["items"]] == [1, 2, 3, 4]
        assert forward["next_cursor"] and forward["older"] is None
        both = await http.get(url, params={"before": 3, "cursor": forward["next_cursor"]})
        assert both.status_code == 400
        assert "not both" in both.json()["error"]["message"]
        negative = await http.get(url, params={"before": -1})
        assert negative.status_code == 422
        ghost = await http.get("/sessions/ghost/messages", params={"before": 0})
        assert ghost.status_code == 404


async def test_q_filters_sessions_by_title_or_id(tmp_path: Path) -> None:
    async with client(tmp_path) as http:
        for sid, title in (("trip-1", "Paris in May"), ("work-2", "Quarterly PLANS")):
            await chat(http, sid, "hi")
            assert (await http.patch(f"/sessions/{sid}", json={"title": title})).is_success
        untitled = (await http.post("/sessions", json={})).json()["session_id"]
        plans = (await http.get("/sessions", params={"q": "plans"})).json()
        assert [s["title"] for s in plans["items"]] == ["Quarterly PLANS"]
        by_id = (await http.get("/sessions", params={"q": "TRIP-"})).json()
        assert [s["session_id"] for s in by_id["items"]] == ["trip-1"]
        by_generated_id = (await http.get("/sessions", params={"q": untitled})).json()
        assert [s["session_id"] for s in by_generated_id["items"]] == [untitled]
        none = (await http.get("/sessions", params={"q": "nothing like it"})).json()
        assert none == {"items": [], "next_cursor": None}
        every = (await http.get("/sessions")).json()
        assert len(every["items"]) == 3
        paged = (await http.get("/sessions", params={"q": "-", "limit": 1})).json()
        assert len(paged["items"]) == 1 and paged["next_cursor"]
        rest = await http.get("/sessions", params={"q": "-", "cursor": paged["next_cursor"]})
        assert len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None
        assert (await http.get("/sessions", params={"q": ""})).status_code == 422


async def test_compact_summarises_a_long_session_and_refuses_a_busy_one(tmp_path: Path) -> None:
    long = "lorem ipsum dolor sit amet " * 60
    async with client(tmp_path, max_context_length=1200) as http:
        for n in range(6):
            await chat(http, "long", f"turn {n}: {long}")
        compacted = await http.post("/sessions/long/compact")
        assert compacted.status_code == 200, compacted.text
        body = compacted.json()
        assert body["session_id"] == "long" and body["compacted"] is True
        assert body["tokens_after"] < body["tokens_before"] and body["limit"] > 0
        assert body["strategy"] != "none"
        history = (await http.get("/sessions/long/messages", params={"limit": 200})).json()
        assert len(history["items"]) == 12  # the stored history is whole

        await chat(http, "short", "hello")
        small = (await http.post("/sessions/short/compact")).json()
        assert small["compacted"] is False and small["strategy"] == "none"
        assert small["tokens_after"] == small["tokens_before"]

        ghost = await http.post("/sessions/ghost/compact")
        assert ghost.status_code == 404
        assert ghost.json()["error"]["code"] == "session_not_found"


async def test_compact_while_a_turn_runs_is_409(tmp_path: Path) -> None:
    slow = TestProvider(["word " * 400], delay=0.02)
    async with client(tmp_path, model=slow) as http:
        started = await http.post(
            "/messages", json={"content": "go", "session_id": "busy", "wait": False}
        )
        assert started.status_code == 202, started.text
        busy = await http.post("/sessions/busy/compact")
        assert busy.status_code == 409
        error = busy.json()["error"]
        assert error["code"] == "session_busy" and "busy" in error["message"]
        task = started.json()["task_id"]
        await http.delete(f"/tasks/{task}")
        for _ in range(200):
            if (await http.get(f"/tasks/{task}")).json()["state"] != "running":
                break
            await asyncio.sleep(0.05)
