"""Two users on one server with AUTH_REQUIRED: neither can see, change or follow the other's
sessions, messages, tasks, streams or session tools, and ids reveal nothing (404, never 403)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from agent_template.api.app import create_app
from tests.server_helpers import serve, server_settings


@dataclass
class Users:
    app: ClassVar[Any] = None  # the app of the latest two_users

    alice: httpx.AsyncClient
    bob: httpx.AsyncClient
    anonymous: httpx.AsyncClient


@contextlib.asynccontextmanager
async def two_users(tmp_path: Path) -> AsyncIterator[Users]:
    app = create_app(server_settings(tmp_path, auth_required=True))
    Users.app = app
    async with serve(app) as base_url, contextlib.AsyncExitStack() as stack:
        tokens = app.state.server.tokens
        clients = []
        for user in ("alice", "bob", None):
            headers = {}
            if user is not None:
                _, token = await tokens.create(user)
                headers["Authorization"] = f"Bearer {token}"
            client = httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers, timeout=30)
            clients.append(await stack.enter_async_context(client))
        yield Users(*clients)


async def alices_objects(alice: httpx.AsyncClient) -> dict[str, str]:
    """A session of Alice's with messages, a todo list and a finished task."""
    reply = await alice.post("/messages", json={"content": "secret plans", "session_id": "a1"})
    assert reply.status_code == 200, reply.text
    plan = {"todos": [{"content": "Keep it secret"}]}
    wrote = await alice.post(
        "/tools/call", json={"name": "todo_write", "arguments": plan, "session_id": "a1"}
    )
    assert wrote.status_code == 200 and not wrote.json()["is_error"]
    return {"session": "a1", "task": reply.json()["task_id"]}


async def alices_approval(app: Any, task: str) -> str:
    """A pending approval request of Alice's (as a run of hers would store it)."""
    from agent_template.services.storage.records import ApprovalRecord

    await app.state.server.loop.approvals.store.insert_approval(
        ApprovalRecord(
            id="ap_alice",
            task_id=task,
            session_id="a1",
            user_id="alice",
            call_id="c1",
            tool="shell",
            arguments='{"command": "cat secrets"}',
            reason="asks",
            parts="[]",
            state="pending",
            message=None,
            created_at=time.time(),
            expires_at=time.time() + 600,
        )
    )
    return "ap_alice"


def requests_on(session: str, task: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every endpoint that names a session or a task, aimed at these."""
    return [
        ("GET", f"/sessions/{session}", None),
        ("PATCH", f"/sessions/{session}", {"title": "mine now"}),
        ("DELETE", f"/sessions/{session}", None),
        ("GET", f"/sessions/{session}/messages", None),
        ("GET", f"/sessions/{session}/messages?before=0", None),
        ("POST", f"/sessions/{session}/compact", None),
        ("GET", f"/sessions/{session}/todos", None),
        ("POST", "/messages", {"content": "hi", "session_id": session}),
        ("POST", "/messages", {"content": "hi", "session_id": session, "wait": False}),
        ("POST", "/messages/stream", {"content": "hi", "session_id": session}),
        ("POST", "/tasks", {"message": "hi", "session_id": session}),
        ("GET", f"/tasks?session_id={session}", None),
        ("GET", f"/tasks/{task}", None),
        ("DELETE", f"/tasks/{task}", None),
        ("GET", f"/tasks/{task}/stream", None),
        ("GET", f"/tasks/{task}/stream?after_seq=0", None),
        ("GET", f"/sessions/{session}/tools", None),
        ("PUT", f"/sessions/{session}/tools", {"disabled": []}),
        ("POST", "/tools/call", {"name": "todo_read", "session_id": session}),
        (
            "POST",
            "/tools/call",
            {"name": "todo_write", "arguments": {"todos": []}, "session_id": session},
        ),
    ]


def _without_ids(message: str, *ids: str) -> str:
    for value in ids:
        message = message.replace(value, "<id>")
    return re.sub(r"\s+", " ", message)


async def test_another_users_objects_are_not_found(tmp_path: Path) -> None:
    async with two_users(tmp_path) as users:
        alice, bob = users.alice, users.bob
        mine = await alices_objects(alice)
        before = (await alice.get("/sessions/a1")).json()
        compared = 0
        for n, (method, path, body) in enumerate(requests_on(mine["session"], mine["task"])):
            response = await bob.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            error = response.json()["error"]
            # The same answer as for an id that does not exist: nothing to learn from it.
            # (Where a missing session is created for the caller instead, there is no 404.)
            ghost = f"ghost{n}"
            ghost_path = path.replace(mine["session"], ghost).replace(mine["task"], ghost)
            ghost_body = json.loads(json.dumps(body).replace(mine["session"], ghost))
            answer = await bob.request(method, ghost_path, json=ghost_body)
            if answer.status_code == 404:
                other = answer.json()["error"]
                assert other["code"] == error["code"], (method, path)
                assert _without_ids(other["message"], ghost) == _without_ids(
                    error["message"], mine["session"], mine["task"]
                )
                compared += 1
        assert compared >= 10

        # Her approval requests: not Bob's to see or to answer, alike for a missing one.
        approval = await alices_approval(Users.app, mine["task"])
        assert (await bob.get("/approvals")).json()["items"] == []
        for method, path, body in (
            ("GET", f"/approvals/{approval}", None),
            ("POST", f"/approvals/{approval}", {"decision": "approve"}),
        ):
            response = await bob.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            ghost = await bob.request(method, path.replace(approval, "ap_ghost"), json=body)
            assert ghost.json()["error"]["code"] == response.json()["error"]["code"]
        assert [a["approval_id"] for a in (await alice.get("/approvals")).json()["items"]] == [
            approval
        ]

        # Alice's things are untouched by all of that.
        assert (await alice.get("/sessions/a1")).json() == before
        messages = (await alice.get("/sessions/a1/messages")).json()["items"]
        assert [m["content"] for m in messages][:1] == ["secret plans"]
        assert len(messages) == before["message_count"]
        assert (await alice.get(f"/tasks/{mine['task']}")).json()["state"] == "completed"
        todos = (await alice.get("/sessions/a1/todos")).json()["items"]
        assert todos == [{"content": "Keep it secret", "status": "pending"}]


async def test_lists_hold_only_the_callers_objects(tmp_path: Path) -> None:
    async with two_users(tmp_path) as users:
        alice, bob = users.alice, users.bob
        mine = await alices_objects(alice)
        bobs = (await bob.post("/messages", json={"content": "hello", "session_id": "b1"})).json()
        bob_sessions = [s["session_id"] for s in (await bob.get("/sessions")).json()["items"]]
        assert bob_sessions == ["b1"]
        bob_tasks = [t["task_id"] for t in (await bob.get("/tasks")).json()["items"]]
        assert bob_tasks == [bobs["task_id"]]
        alice_sessions = [s["session_id"] for s in (await alice.get("/sessions")).json()["items"]]
        assert alice_sessions == [mine["session"]]
        alice_tasks = [t["task_id"] for t in (await alice.get("/tasks")).json()["items"]]
        assert alice_tasks == [mine["task"]]
        # The same session id names a different session per user only if free: "a1" is taken.
        taken = await bob.post("/messages", json={"content": "hi", "session_id": "a1"})
        assert taken.status_code == 404


async def test_no_token_or_a_bad_one_answers_401(tmp_path: Path) -> None:
    async with two_users(tmp_path) as users:
        mine = await alices_objects(users.alice)
        endpoints = [
            ("GET", "/sessions", None),
            ("POST", "/sessions", {}),
            ("GET", "/tasks", None),
            ("POST", "/tasks", {"message": "hi"}),
            ("GET", "/tools", None),
            ("POST", "/tools/call", {"name": "todo_read"}),
            *requests_on(mine["session"], mine["task"]),
        ]
        for method, path, body in endpoints:
            response = await users.anonymous.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "auth_required"
            assert response.headers["www-authenticate"] == "Bearer"
        forged = await users.anonymous.get(
            "/sessions", headers={"Authorization": "Bearer at_0123456789abcdef_" + "x" * 43}
        )
        assert forged.status_code == 401
        assert forged.json()["error"]["code"] == "invalid_token"
        # Nothing was created by the refused requests.
        assert [s["session_id"] for s in (await users.alice.get("/sessions")).json()["items"]] == [
            "a1"
        ]
