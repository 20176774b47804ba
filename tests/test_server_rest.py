"""The REST API and its Server-Sent Events, through a real uvicorn and httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent_template import tool
from agent_template.api.app import create_app
from tests.server_helpers import serve, server_settings
from tests.wire_server import Fault, Reply, Stall, WireServer

STORY = " ".join(f"word{i}" for i in range(50))  # about 55 deltas of 6 characters


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


@dataclass
class Server:
    client: httpx.AsyncClient
    app: Any

    @property
    def state(self) -> Any:
        return self.app.state.server


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, tools: tuple[Any, ...] = (), **settings: Any) -> Any:
    app = create_app(server_settings(tmp_path, **settings), tools=tools)
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=30) as client,
    ):
        yield Server(client, app)


def wired(wire: WireServer) -> dict[str, Any]:
    return {
        "default_model_provider": "openai",
        "openai_base_url": wire.openai_base_url,
        "model_max_retries": 0,
    }


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: int | None = None


@dataclass
class SSE:
    """What a client read from an event stream: its events and the keepalive comments."""

    events: list[Event] = field(default_factory=list)
    comments: int = 0

    @property
    def text(self) -> str:
        return "".join(e.data["data"]["content"] for e in self.events if e.event == "stream_data")

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.events if e.id is not None]


async def read_events(
    response: httpx.Response, sse: SSE, *, stop_after: int | None = None
) -> AsyncIterator[Event]:
    """Parse ``text/event-stream`` lines into ``sse`` and yield each event as it completes."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            sse.comments += 1
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            raw_id = fields.get("id")
            item = Event(
                fields["event"], json.loads(fields["data"]), int(raw_id) if raw_id else None
            )
            fields = {}
            sse.events.append(item)
            yield item


async def consume(response: httpx.Response) -> SSE:
    sse = SSE()
    async for _ in read_events(response, sse):
        pass
    return sse


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- sessions


async def test_session_create_get_rename_list_delete(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        created = await c.post("/sessions", json={"title": "Trip", "metadata": {"k": 1}})
        assert created.status_code == 201
        session = created.json()
        sid = session["session_id"]
        assert session["title"] == "Trip" and session["metadata"] == {"k": 1}
        assert session["message_count"] == 0
        assert (await c.get(f"/sessions/{sid}")).json() == session
        renamed = await c.patch(f"/sessions/{sid}", json={"title": "Lisbon"})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Lisbon"
        listed = (await c.get("/sessions")).json()
        assert [s["session_id"] for s in listed["items"]] == [sid]
        assert listed["next_cursor"] is None
        deleted = await c.delete(f"/sessions/{sid}")
        assert deleted.status_code == 204 and deleted.content == b""
        for response in (
            await c.get(f"/sessions/{sid}"),
            await c.delete(f"/sessions/{sid}"),
            await c.patch(f"/sessions/{sid}", json={"title": "x"}),
            await c.get(f"/sessions/{sid}/messages"),
            await c.get(f"/sessions/{sid}/todos"),
        ):
            assert response.status_code == 404
            assert error_of(response)["code"] == "session_not_found"
        assert (await c.get("/sessions")).json() == {"items": [], "next_cursor": None}


async def test_sessions_page_with_cursors(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        made = {(await c.post("/sessions", json={})).json()["session_id"] for _ in range(5)}
        seen: list[str] = []
        sizes = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/sessions", params=params)).json()
            sizes.append(len(page["items"]))
            seen += [s["session_id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sizes == [2, 2, 1]
        assert len(seen) == 5 and set(seen) == made
        bad = await c.get("/sessions", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_cursor"
        # A cursor of another list is refused too, not misread.
        tools_page = (await c.get("/tools", params={"limit": 1})).json()
        other = await c.get("/sessions", params={"cursor": tools_page["next_cursor"]})
        assert other.status_code == 400
        for limit in (0, 201, "many"):
            response = await c.get("/sessions", params={"limit": limit})
            assert response.status_code == 422
            assert error_of(response)["code"] == "invalid_request"


async def test_invalid_bodies_answer_422_and_large_ones_413(tmp_path: Path) -> None:
    async with running(tmp_path, max_request_bytes=4096) as server:
        c = server.client
        for body in ({}, {"content": ""}, {"content": "hi", "priority": 9}):
            response = await c.post("/messages", json=body)
            assert response.status_code == 422, body
            assert error_of(response)["code"] == "invalid_request"
        not_json = await c.post(
            "/sessions", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 422
        assert "not valid JSON" in error_of(not_json)["message"]
        large = await c.post("/messages", json={"content": "x" * 10_000})
        assert large.status_code == 413
        assert error_of(large)["code"] == "request_too_large"
        assert (await c.get("/sessions")).json()["items"] == []  # nothing was started


# ----------------------------------------------------------------------------- messages


async def test_send_message_answers_the_reply_and_history_pages_oldest_first(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server:
        c = server.client
        first = await c.post("/messages", json={"content": "hello", "session_id": "chat1"})
        assert first.status_code == 200, first.text
        reply = first.json()
        assert reply["session_id"] == "chat1" and reply["session_created"] is True
        assert reply["status"] == "completed"
        assert reply["message"]["role"] == "assistant"
        assert "You said: 'hello'" in reply["message"]["content"]
        usage = reply["usage"]
        assert usage["input_tokens"] > 0 and usage["requests"] == 1
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        second = (
            await c.post("/messages", json={"content": "again", "session_id": "chat1"})
        ).json()
        assert second["session_created"] is False
        assert second["task_id"] != reply["task_id"]

        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/sessions/chat1/messages", params=params)).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [(m["seq"], m["role"]) for m in items] == [
            (1, "user"),
            (2, "assistant"),
            (3, "user"),
            (4, "assistant"),
        ]
        assert items[0]["content"] == "hello" and items[0]["task_id"] == reply["task_id"]
        assert items[3]["content"] == second["message"]["content"]
        assert items[3]["status"] == "complete" and items[3]["provider"] == "test"
        session = (await c.get("/sessions/chat1")).json()
        assert session["message_count"] == 4


async def test_a_turn_with_tool_calls_lists_the_calls_results_and_todos(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        todos = {"todos": [{"content": "Pack", "status": "in_progress"}, {"content": "Fly"}]}
        reply = await c.post("/messages", json={"content": f"call todo_write {json.dumps(todos)}"})
        assert reply.status_code == 200, reply.text
        sid = reply.json()["session_id"]
        assert reply.json()["turns"] == 2
        messages = (await c.get(f"/sessions/{sid}/messages")).json()["items"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        call = messages[1]["tool_calls"][0]
        assert call["name"] == "todo_write" and json.loads(call["arguments"]) == todos
        result = messages[2]
        assert result["tool_call_id"] == call["id"] and result["name"] == "todo_write"
        assert result["is_error"] is False and "2 items" in result["content"]
        listed = (await c.get(f"/sessions/{sid}/todos")).json()
        assert listed == {
            "items": [
                {"content": "Pack", "status": "in_progress"},
                {"content": "Fly", "status": "pending"},
            ],
            "next_cursor": None,
        }


async def test_send_message_without_waiting_answers_202_with_the_task(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        accepted = await c.post("/messages", json={"content": "later", "wait": False})
        assert accepted.status_code == 202, accepted.text
        task = accepted.json()
        assert task["type"] == "chat" and task["session_created"] is True
        assert task["stream_url"] == f"/api/v1/tasks/{task['task_id']}/stream"
        async with c.stream("GET", f"/tasks/{task['task_id']}/stream") as response:
            sse = await consume(response)
        assert sse.events[-1].event == "stream_complete"
        done = (await c.get(f"/tasks/{task['task_id']}")).json()
        assert done["state"] == "completed"
        assert done["output"] == sse.text and "You said: 'later'" in done["output"]


async def test_busy_session_answers_409_and_a_cancelled_turn_stops(
    tmp_path: Path, wire_server: WireServer
) -> None:
    wire_server.script(Stall(30))
    async with running(tmp_path, **wired(wire_server)) as server:
        c = server.client
        first = (await c.post("/messages", json={"content": "slow", "wait": False})).json()
        sid = first["session_id"]
        busy = await c.post(
            "/messages", json={"content": "now", "session_id": sid, "wait_for_session": False}
        )
        assert busy.status_code == 409
        error = error_of(busy)
        assert error["code"] == "session_busy"
        assert error["details"]["running_task_id"] == first["task_id"]
        for _ in range(500):  # the turn is waiting on the model (not still starting)
            if wire_server.requests:
                break
            await asyncio.sleep(0.01)
        cancelled = await c.delete(f"/tasks/{first['task_id']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        again = await c.delete(f"/tasks/{first['task_id']}")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"


async def test_a_failed_run_answers_the_runs_error(tmp_path: Path, wire_server: WireServer) -> None:
    wire_server.script(Fault(400, message="context too long"))
    async with running(tmp_path, **wired(wire_server)) as server:
        response = await server.client.post("/messages", json={"content": "hi"})
        assert response.status_code == 502, response.text
        error = error_of(response)
        assert error["code"].startswith("provider_")
        assert "context too long" in error["message"]
        task_id = error["details"]["task_id"]
        task = (await server.client.get(f"/tasks/{task_id}")).json()
        assert task["state"] == "failed" and task["session_id"] == error["details"]["session_id"]


async def test_limits_answer_429_with_retry_after(tmp_path: Path, wire_server: WireServer) -> None:
    wire_server.script(Stall(30))
    async with running(tmp_path, max_tasks_per_user=1, **wired(wire_server)) as server:
        c = server.client
        first = (await c.post("/messages", json={"content": "slow", "wait": False})).json()
        for path, body in (("/messages", {"content": "more"}), ("/tasks", {"message": "more"})):
            refused = await c.post(path, json=body)
            assert refused.status_code == 429, refused.text
            assert error_of(refused)["code"] == "too_many_tasks"
            assert int(refused.headers["retry-after"]) > 0
        await c.delete(f"/tasks/{first['task_id']}")
    async with running(tmp_path / "rate", rate_limit_per_minute=3) as server:
        answers = [(await server.client.get("/tools")).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]


async def test_deleting_a_session_cancels_its_running_turn(
    tmp_path: Path, wire_server: WireServer
) -> None:
    wire_server.script(Stall(30))
    async with running(tmp_path, **wired(wire_server)) as server:
        c = server.client
        task = (await c.post("/messages", json={"content": "slow", "wait": False})).json()
        assert (await c.delete(f"/sessions/{task['session_id']}")).status_code == 204
        assert (await c.get(f"/tasks/{task['task_id']}")).json()["state"] == "cancelled"
        assert (await c.get(f"/sessions/{task['session_id']}")).status_code == 404


# ----------------------------------------------------------------------------- tasks


async def test_tasks_create_list_filter_page_get(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        accepted = await c.post("/tasks", json={"message": "one", "session_id": "s1"})
        assert accepted.status_code == 202, accepted.text
        first = accepted.json()
        assert first["session_id"] == "s1" and first["session_created"] is True
        for message, sid in (("two", "s1"), ("three", "s2")):
            reply = await c.post("/messages", json={"content": message, "session_id": sid})
            assert reply.status_code == 200
        async with c.stream("GET", f"/tasks/{first['task_id']}/stream") as response:
            await consume(response)  # the first one has ended too

        everything = (await c.get("/tasks")).json()
        assert len(everything["items"]) == 3 and everything["next_cursor"] is None
        created = [t["created_at"] for t in everything["items"]]
        assert created == sorted(created)
        in_s1 = (await c.get("/tasks", params={"session_id": "s1"})).json()["items"]
        assert [t["session_id"] for t in in_s1] == ["s1", "s1"]
        assert in_s1[0]["task_id"] == first["task_id"]
        completed = (await c.get("/tasks", params={"state": "completed"})).json()["items"]
        assert len(completed) == 3
        assert (await c.get("/tasks", params={"state": "running"})).json()["items"] == []

        paged: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/tasks", params=params)).json()
            paged += [t["task_id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == [t["task_id"] for t in everything["items"]]

        one = (await c.get(f"/tasks/{first['task_id']}")).json()
        assert one["state"] == "completed" and one["output"]
        finished = await c.delete(f"/tasks/{first['task_id']}")
        assert finished.status_code == 200 and finished.json()["state"] == "completed"


async def test_tasks_refuse_what_they_cannot_run(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        for body, code in (
            ({"type": "chat"}, "invalid_request"),
            ({"type": "dance", "payload": {"steps": 3}}, "unknown_task_type"),
            ({"message": "hi", "payload": {"user_id": "someone"}}, "invalid_request"),
            ({"type": ""}, "invalid_request"),
        ):
            response = await c.post("/tasks", json=body)
            assert response.status_code == 422, (body, response.text)
            assert error_of(response)["code"] == code
        for method, path in (
            ("GET", "/tasks/nope"),
            ("DELETE", "/tasks/nope"),
            ("GET", "/tasks/nope/stream"),
        ):
            response = await c.request(method, path)
            assert response.status_code == 404, (method, path)
        assert (await c.get("/tasks", params={"session_id": "nope"})).status_code == 404
        assert (await c.get("/tasks", params={"state": "asleep"})).status_code == 422
        assert (await c.get("/tasks")).json()["items"] == []


# ----------------------------------------------------------------------------- tools


async def test_tools_list_and_call(tmp_path: Path) -> None:
    async with running(tmp_path, tools=(add,)) as server:
        c = server.client
        listed = (await c.get("/tools")).json()
        tools = {t["name"]: t for t in listed["items"]}
        assert {"add", "todo_read", "todo_write"} <= set(tools)
        assert tools["add"]["description"] == "Add two integers."
        assert tools["add"]["parameters"]["properties"]["a"]["type"] == "integer"
        assert tools["add"]["parameters"]["required"] == ["a", "b"]

        called = await c.post("/tools/call", json={"name": "add", "arguments": {"a": 2, "b": 3}})
        assert called.status_code == 200, called.text
        result = called.json()
        assert result["content"] == "5" and result["is_error"] is False
        assert result["name"] == "add" and result["call_id"]

        unknown = await c.post("/tools/call", json={"name": "weather"})
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "tool_not_found"
        bad = await c.post("/tools/call", json={"name": "add", "arguments": {"a": "two"}})
        assert bad.status_code == 422
        assert error_of(bad)["code"] == "tool_invalid_arguments"
        assert "b" in error_of(bad)["message"]

        # The todo tools work on a session: one of the caller's.
        no_session = await c.post("/tools/call", json={"name": "todo_read"})
        assert no_session.status_code == 200 and no_session.json()["is_error"] is True
        assert "session" in no_session.json()["content"]
        missing = await c.post("/tools/call", json={"name": "todo_read", "session_id": "nope"})
        assert missing.status_code == 404
        sid = (await c.post("/sessions", json={})).json()["session_id"]
        plan = {"todos": [{"content": "Pack", "status": "completed"}]}
        wrote = await c.post(
            "/tools/call", json={"name": "todo_write", "arguments": plan, "session_id": sid}
        )
        assert wrote.status_code == 200 and wrote.json()["is_error"] is False
        todos = (await c.get(f"/sessions/{sid}/todos")).json()["items"]
        assert todos == [{"content": "Pack", "status": "completed"}]


# ----------------------------------------------------------------------------- SSE


async def test_stream_message_sends_typed_events_as_sse(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        c = server.client
        async with c.stream(
            "POST", "/messages/stream", json={"content": "stream me", "session_id": "live"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            sse = await consume(response)
        head = sse.events[0]
        assert head.event == "task_created" and head.id is None
        task_id = head.data["task_id"]
        assert head.data["session_id"] == "live" and head.data["data"]["session_created"]
        chunks = sse.events[1:]
        assert all(e.data["type"] == e.event for e in chunks)
        assert all(e.data["task_id"] == task_id and e.data["seq"] == e.id for e in chunks)
        assert [e.event for e in chunks][-3:] == ["usage", "response_finished", "stream_complete"]
        ids = sse.ids
        assert ids == sorted(set(ids)) and ids[0] == 1
        done = chunks[-1].data["data"]
        assert done["status"] == "completed"
        assert sse.text == done["output"] and "You said: 'stream me'" in sse.text
        stored = (await c.get("/sessions/live/messages")).json()["items"]
        assert stored[-1]["content"] == sse.text


async def test_sse_resumes_after_a_disconnect_with_no_gap_and_no_duplicate(
    tmp_path: Path, wire_server: WireServer
) -> None:
    wire_server.script(Reply(text=STORY, text_chunk=6, delay=0.02))
    async with running(tmp_path, **wired(wire_server)) as server:
        c = server.client
        before = SSE()
        async with c.stream("POST", "/messages/stream", json={"content": "Tell a story"}) as r:
            async for _ in read_events(r, before):
                if len(before.ids) >= 10:
                    break  # the client goes away mid-answer
        task_id = before.events[0].data["task_id"]
        sid = before.events[0].data["session_id"]
        assert STORY.startswith(before.text) and before.text != STORY

        headers = {"Last-Event-ID": str(before.ids[-1])}
        async with c.stream("GET", f"/tasks/{task_id}/stream", headers=headers) as r:
            assert r.status_code == 200
            after = await consume(r)
        assert after.events[0].event != "task_created"  # a resume sends chunks only
        ids = before.ids + after.ids
        assert ids == sorted(set(ids)), "chunk numbers must rise strictly, with no duplicate"
        assert before.text + after.text == STORY
        assert after.events[-1].event == "stream_complete"

        # ?after_seq= resumes the same way; a later Last-Event-ID wins over it.
        query = {"after_seq": before.ids[-1]}
        async with c.stream("GET", f"/tasks/{task_id}/stream", params=query) as r:
            assert (await consume(r)).text == after.text
        headers = {"Last-Event-ID": str(after.ids[-2])}
        async with c.stream(
            "GET", f"/tasks/{task_id}/stream", params={"after_seq": 0}, headers=headers
        ) as r:
            assert [e.event for e in (await consume(r)).events] == ["stream_complete"]

        stored = (await c.get(f"/sessions/{sid}/messages")).json()["items"]
        assert stored[-1]["content"] == STORY and stored[-1]["status"] == "complete"


async def test_a_client_leaving_mid_stream_keeps_the_turn_and_frees_its_reader(
    tmp_path: Path, wire_server: WireServer
) -> None:
    wire_server.script(Reply(text=STORY, text_chunk=6, delay=0.02))
    async with running(tmp_path, **wired(wire_server)) as server:
        c = server.client
        sse = SSE()
        async with c.stream("POST", "/messages/stream", json={"content": "Tell a story"}) as r:
            async for item in read_events(r, sse):
                if item.event == "stream_data":
                    break
        task_id = sse.events[0].data["task_id"]
        loop = server.state.loop
        stream = loop.streams.get(task_id)
        task = await asyncio.wait_for(loop.wait(task_id), 30)
        assert task.state == "completed"  # not cancelled by the client leaving
        deadline = time.monotonic() + 5
        while stream.readers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert stream.readers == 0, "the SSE response did not close its stream consumer"
        stored = (await c.get(f"/sessions/{task.session_id}/messages")).json()["items"]
        assert stored[-1]["role"] == "assistant" and stored[-1]["content"] == STORY


async def test_past_retention_the_stream_says_what_was_lost(tmp_path: Path) -> None:
    async with running(tmp_path, stream_retain_chunks=4) as server:
        c = server.client
        reply = (await c.post("/messages", json={"content": "a long enough answer"})).json()
        async with c.stream("GET", f"/tasks/{reply['task_id']}/stream?after_seq=0") as r:
            sse = await consume(r)
        gap = sse.events[0]
        assert gap.event == "stream_gap"
        assert gap.data["data"]["from_seq"] == 1 and gap.data["data"]["reason"] == "expired"
        assert gap.id == gap.data["data"]["to_seq"]
        rest = sse.events[1:]
        assert rest[0].data["seq"] == gap.id + 1  # what is retained follows, from its start
        assert [e.id for e in rest] == sorted({e.id for e in rest})
        assert sse.events[-1].event == "stream_complete"
        assert sse.events[-1].data["data"]["output"] == reply["message"]["content"]


async def test_a_stream_no_longer_kept_answers_404(tmp_path: Path) -> None:
    async with running(tmp_path, stream_linger=0) as server:
        c = server.client
        reply = (await c.post("/messages", json={"content": "short-lived"})).json()
        response = await c.get(f"/tasks/{reply['task_id']}/stream")
        assert response.status_code == 404
        error = error_of(response)
        assert error["code"] == "stream_not_found"
        assert f"/sessions/{reply['session_id']}/messages" in error["message"]


async def test_an_idle_stream_sends_keepalive_comments(
    tmp_path: Path, wire_server: WireServer
) -> None:
    wire_server.script(Stall(0.8, then=Reply(text="at last")))
    async with running(tmp_path, ws_heartbeat_s=0.1, **wired(wire_server)) as server:
        async with server.client.stream(
            "POST", "/messages/stream", json={"content": "take your time"}
        ) as r:
            sse = SSE()
            async for item in read_events(r, sse):
                if item.event == "stream_data":
                    break
        assert sse.comments >= 2, "no keepalive while the model was silent"
        assert sse.events[-1].data["data"]["content"]


async def test_unknown_routes_and_methods_answer_the_error_body(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        for path in ("/messages", "/messages/stream", "/tools/call"):
            wrong = await server.client.get(path)
            assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
        missing = await server.client.get("/nowhere")
        assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
