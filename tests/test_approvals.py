"""Approvals over a real WebSocket client and the REST API, against the real app.

A tool that an ``ask`` rule covers makes the run wait: its stream carries an
``approval_request`` frame, the task is ``waiting`` (its slot free), and an answer (approve,
deny, always), or none within ``APPROVAL_TIMEOUT_S``, decides whether the call runs. A
request pending when the server stops is still pending after a restart on the same database,
and answering it then completes the run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from agent_template.api.app import create_app
from agent_template.models import ToolCall
from agent_template.services.tool_manager import tool
from tests.server_helpers import serve
from tests.test_server_ws import (
    chat,
    of_type,
    read_until,
    state_of,
    wire_settings,
    ws_url,
)
from tests.wire_server import Reply, WireServer

TIMEOUT_S = 20.0

deployed: list[str] = []


@tool
def deploy(target: str) -> str:
    """Deploy the application.

    Args:
        target: where to deploy: staging or prod.
    """
    deployed.append(target)
    return f"deployed to {target}"


@pytest.fixture(autouse=True)
def _clear_deployed() -> None:
    deployed.clear()


def settings_for(tmp_path: Path, wire: WireServer, **overrides: Any) -> Any:
    policy = tmp_path / "permissions.json"
    policy.write_text(json.dumps({"ask": ["deploy"]}))
    return wire_settings(tmp_path, wire, permissions_config=policy, **overrides)


def script_deploy(wire: WireServer, *, calls: int = 1) -> None:
    """The model calls deploy (``calls`` turns in a row), then answers from the result."""
    for i in range(calls):
        target = "prod" if i == 0 else "staging"
        wire.script(Reply(tool_calls=[("deploy", {"target": target})]))
    wire.script(Reply(text="All done."))


async def answer(ws: Any, request: dict[str, Any], decision: str) -> None:
    await ws.send(
        json.dumps({"type": "approve", "approval_id": request["approval_id"], "decision": decision})
    )


async def approval_request(ws: Any) -> dict[str, Any]:
    frames = await read_until(ws, of_type("approval_request"))
    return frames[-1]


async def completed(ws: Any, task_id: str) -> list[dict[str, Any]]:
    return await read_until(ws, of_type("stream_complete", task_id))


def tool_result(frames: list[dict[str, Any]]) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == "tool_result")["data"]


async def test_approve_runs_the_call_and_the_run_completes(
    tmp_path: Path, wire_server: WireServer
) -> None:
    script_deploy(wire_server)
    app = create_app(settings_for(tmp_path, wire_server), tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Ship it.", session_id="s1")
        request = await approval_request(ws)
        data = request["data"]
        assert data["tool"] == "deploy"
        assert json.loads(data["arguments"]) == {"target": "prod"}
        assert data["expires_at"] > 0
        loop = state_of(app).loop
        assert loop.get_task(task["task_id"]).state == "waiting"
        assert deployed == []  # nothing ran before the answer
        await ws.send(
            json.dumps(
                {"type": "approve", "approval_id": data["approval_id"], "decision": "approve"}
            )
        )
        frames = await completed(ws, task["task_id"])
        kinds = [f["type"] for f in frames]
        assert "approval_answered" in kinds and "approval_resolved" in kinds
        assert tool_result(frames)["content"] == "deployed to prod"
        assert frames[-1]["data"]["status"] == "completed"
        assert deployed == ["prod"]


async def test_deny_tells_the_model_and_the_call_never_runs(
    tmp_path: Path, wire_server: WireServer
) -> None:
    script_deploy(wire_server)
    app = create_app(settings_for(tmp_path, wire_server), tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Ship it.", session_id="s1")
        data = (await approval_request(ws))["data"]
        await ws.send(
            json.dumps(
                {
                    "type": "approve",
                    "approval_id": data["approval_id"],
                    "decision": "deny",
                    "message": "not on a Friday",
                }
            )
        )
        frames = await completed(ws, task["task_id"])
        result = tool_result(frames)
        assert result["is_error"] is True
        assert "denied" in result["content"] and "not on a Friday" in result["content"]
        assert deployed == []
        # The model saw the refusal as the call's result.
        sent = wire_server.requests[-1].body["messages"]
        assert any("denied" in str(m.get("content")) for m in sent if m["role"] == "tool")


async def test_always_approves_the_same_call_for_the_rest_of_the_session(
    tmp_path: Path, wire_server: WireServer
) -> None:
    script_deploy(wire_server, calls=2)
    app = create_app(settings_for(tmp_path, wire_server), tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Ship it twice.", session_id="s1")
        data = (await approval_request(ws))["data"]
        await ws.send(
            json.dumps(
                {"type": "approve", "approval_id": data["approval_id"], "decision": "always"}
            )
        )
        frames = await completed(ws, task["task_id"])
        requests = [f for f in frames if f["type"] == "approval_request"]
        assert requests == []  # the second call was not asked about
        assert deployed == ["prod", "staging"]


async def test_no_answer_in_time_is_a_denial(tmp_path: Path, wire_server: WireServer) -> None:
    script_deploy(wire_server)
    settings = settings_for(tmp_path, wire_server, approval_timeout_s=0.5)
    app = create_app(settings, tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Ship it.", session_id="s1")
        data = (await approval_request(ws))["data"]
        frames = await completed(ws, task["task_id"])
        resolved = next(f for f in frames if f["type"] == "approval_resolved")
        assert resolved["data"]["decision"] == "timeout"
        assert "nobody answered" in tool_result(frames)["content"]
        assert deployed == []
        async with httpx.AsyncClient(base_url=base) as client:
            late = await client.post(
                f"/api/v1/approvals/{data['approval_id']}", json={"decision": "approve"}
            )
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "approval_answered"


async def test_a_waiting_run_frees_its_slot(tmp_path: Path, wire_server: WireServer) -> None:
    script_deploy(wire_server)
    wire_server.script(Reply(text="Other session answered."))
    settings = settings_for(tmp_path, wire_server, max_concurrent_tasks=1)
    app = create_app(settings, tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        first = await chat(ws, "Ship it.", session_id="s1")
        data = (await approval_request(ws))["data"]
        second = await chat(ws, "Something else.", session_id="s2")
        await completed(ws, second["task_id"])  # ran while the first one waited
        await ws.send(
            json.dumps(
                {"type": "approve", "approval_id": data["approval_id"], "decision": "approve"}
            )
        )
        frames = await completed(ws, first["task_id"])
        assert frames[-1]["data"]["status"] == "completed"


async def test_rest_lists_and_answers_only_your_own(
    tmp_path: Path, wire_server: WireServer
) -> None:
    script_deploy(wire_server)
    app = create_app(settings_for(tmp_path, wire_server), tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Ship it.", session_id="s1")
        data = (await approval_request(ws))["data"]
        async with httpx.AsyncClient(base_url=base) as client:
            listed = (await client.get("/api/v1/approvals")).json()["items"]
            assert [a["approval_id"] for a in listed] == [data["approval_id"]]
            assert listed[0]["arguments"] == {"target": "prod"}
            assert listed[0]["state"] == "pending"
            missing = await client.post("/api/v1/approvals/ap_nope", json={"decision": "approve"})
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "approval_not_found"
            bad = await client.post(
                f"/api/v1/approvals/{data['approval_id']}", json={"decision": "maybe"}
            )
            assert bad.status_code == 422
            ok = await client.post(
                f"/api/v1/approvals/{data['approval_id']}", json={"decision": "approve"}
            )
            assert ok.status_code == 200 and ok.json()["state"] == "approve"
        frames = await completed(ws, task["task_id"])
        assert frames[-1]["data"]["status"] == "completed"
        # Answering twice is refused over the WebSocket too, with the error frame.
        await answer(ws, data, "deny")
        error = await read_until(ws, of_type("error"))
        assert error[-1]["data"]["code"] == "approval_answered"


async def test_an_approval_pending_across_a_restart_completes_the_run(
    tmp_path: Path, wire_server: WireServer
) -> None:
    script_deploy(wire_server)
    settings = settings_for(tmp_path, wire_server)
    app = create_app(settings, tools=[deploy])
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Ship it.", session_id="s1")
        data = (await approval_request(ws))["data"]
        task_id = task["task_id"]
    # The server stopped with the request unanswered: it is still pending, the task waiting.
    assert deployed == []
    again = create_app(settings, tools=[deploy])
    async with serve(again) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            listed = (await client.get("/api/v1/approvals")).json()["items"]
            assert [a["approval_id"] for a in listed] == [data["approval_id"]]
            answered = await client.post(
                f"/api/v1/approvals/{data['approval_id']}", json={"decision": "approve"}
            )
            assert answered.status_code == 200
            loop = state_of(again).loop
            async with asyncio.timeout(TIMEOUT_S):
                resumed = loop.get_task(task_id)  # resumed before the answer returned
                await loop.wait(task_id)
            assert resumed.state == "completed", resumed.error
        messages = await state_of(again).sessions.get_messages("s1")
        roles = [m.role for m in messages]
        assert roles == ["user", "assistant", "tool", "assistant"]
        assert messages[2].text == "deployed to prod"
        assert messages[-1].text == "All done."
    assert deployed == ["prod"]


async def test_a_run_with_nobody_to_ask_is_refused_plainly(tmp_path: Path) -> None:
    """The library's Agent has no stream to put a request in: an ask call is refused."""
    from agent_template.agent import Agent
    from agent_template.services.approvals import ApprovalManager
    from agent_template.services.permissions import PermissionPolicy
    from agent_template.services.storage.memory import MemorySessionStore

    agent = Agent("Be brief.", tools=[deploy], model="test")
    policy_file = tmp_path / "p.json"
    policy_file.write_text(json.dumps({"ask": ["deploy"]}))
    agent.tools.authorizer = ApprovalManager(
        MemorySessionStore(), PermissionPolicy.load(policy_file)
    )
    call = ToolCall(id="c1", name="deploy", arguments='{"target": "prod"}')
    result = await agent.tools.execute(call)
    assert result.is_error and "nobody to ask" in result.text
    assert deployed == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_store_keeps_requests_and_answers_each_once(kind: str, tmp_path: Path) -> None:
    import time

    from agent_template.services.storage import SQLStore
    from agent_template.services.storage.records import ApprovalRecord
    from tests.test_auth import database

    async with database(kind, tmp_path) as (url, args):
        store = SQLStore(url, connect_args=args)
        now = time.time()
        for i, session in enumerate(("s1", "s1", "s2")):
            await store.insert_approval(
                ApprovalRecord(
                    id=f"ap_{i}",
                    task_id=f"t{i}",
                    session_id=session,
                    user_id="ada",
                    call_id=f"c{i}",
                    tool="shell",
                    arguments='{"command": "git push"}',
                    reason="asks",
                    parts='["git push"]',
                    state="pending",
                    message=None,
                    created_at=now + i,
                    expires_at=now + (-1 if i == 2 else 60),
                )
            )
        assert [a.id for a in await store.find_approvals(session_id="s1")] == ["ap_0", "ap_1"]
        assert [a.id for a in await store.find_approvals(expired_before=now)] == ["ap_2"]
        assert await store.answer_approval("ap_0", "always", "ok", now)
        assert not await store.answer_approval("ap_0", "deny", None, now)  # answered once
        loaded = await store.load_approval("ap_0")
        assert loaded is not None and (loaded.state, loaded.message) == ("always", "ok")
        pending = await store.find_approvals(user_id="ada", states=("pending",))
        assert [a.id for a in pending] == ["ap_1", "ap_2"]
        assert await store.load_approval("nope") is None
        await store.close()


async def test_a_session_turns_tools_off_and_layers_its_own_rules(
    tmp_path: Path, wire_server: WireServer
) -> None:
    wire_server.script(Reply(text="Hi."))
    app = create_app(settings_for(tmp_path, wire_server), tools=[deploy])  # deploy: asked
    async with (
        serve(app) as base,
        websockets.connect(ws_url(base)) as ws,
        httpx.AsyncClient(base_url=base) as client,
    ):
        first = await chat(ws, "Hello.", session_id="s1")  # creates the session
        await read_until(ws, of_type("stream_complete", first["task_id"]))
        script_deploy(wire_server)
        wire_server.script(Reply(text="No deploy tool here."))
        wire_server.script(Reply(tool_calls=[("deploy", {"target": "prod"})]), Reply(text="."))
        # The session allows what the server asks about: it runs without a question.
        put = await client.put(
            "/api/v1/sessions/s1/tools", json={"permissions": {"allow": ["deploy"]}}
        )
        assert put.status_code == 200, put.text
        task = await chat(ws, "Ship it.", session_id="s1")
        frames = await completed(ws, task["task_id"])
        assert not [f for f in frames if f["type"] == "approval_request"]
        assert tool_result(frames)["content"] == "deployed to prod"
        # Off for the session: the model is not offered it.
        put = await client.put("/api/v1/sessions/s1/tools", json={"disabled": ["deploy"]})
        body = put.json()
        assert body["disabled"] == ["deploy"]
        assert {"name": "deploy", "source": "function", "enabled": False} in body["tools"]
        task = await chat(ws, "Ship it again.", session_id="s1")
        await completed(ws, task["task_id"])
        offered = {(t.get("function") or t)["name"] for t in wire_server.requests[-1].body["tools"]}
        assert "deploy" not in offered and "shell" in offered
        # A deny of the session refuses the call, and nobody is asked.
        await client.put("/api/v1/sessions/s1/tools", json={"permissions": {"deny": ["deploy"]}})
        task = await chat(ws, "Once more.", session_id="s1")
        frames = await completed(ws, task["task_id"])
        result = tool_result(frames)
        assert result["is_error"] and "refused" in result["content"]
        assert deployed == ["prod"]
        # Bad settings are refused with what is wrong.
        unknown = await client.put("/api/v1/sessions/s1/tools", json={"disabled": ["nope"]})
        assert unknown.status_code == 422 and "nope" in unknown.json()["error"]["message"]
        bad = await client.put("/api/v1/sessions/s1/tools", json={"permissions": {"allow": [42]}})
        assert bad.status_code == 422
        missing = await client.get("/api/v1/sessions/nope/tools")
        assert missing.status_code == 404


async def test_cancelling_a_waiting_run_withdraws_its_request(
    tmp_path: Path, wire_server: WireServer
) -> None:
    script_deploy(wire_server)
    app = create_app(settings_for(tmp_path, wire_server), tools=[deploy])
    async with (
        serve(app) as base,
        websockets.connect(ws_url(base)) as ws,
        httpx.AsyncClient(base_url=base) as client,
    ):
        task = await chat(ws, "Ship it.", session_id="s1")
        await approval_request(ws)
        await ws.send(json.dumps({"type": "cancel", "task_id": task["task_id"]}))
        frames = await completed(ws, task["task_id"])
        assert frames[-1]["data"]["status"] == "cancelled"
        assert (await client.get("/api/v1/approvals")).json()["items"] == []
        loop = state_of(app).loop
        assert loop.running_count == 0 and not loop.parked(task["task_id"])
        assert deployed == []
