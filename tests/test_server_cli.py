"""``agent-server`` as users run it: options, refusals, a port in use, SIGTERM mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.wire_server import Reply, WireServer

STORY = " ".join(f"word{i}" for i in range(400))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
        "LOG_FILE": str(tmp_path / "server.log"),
        "DEFAULT_MODEL_PROVIDER": "test",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def agent_server(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from agent_template.cli import server_main; server_main()", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(port: int, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"agent-server exited: {child.communicate()[1]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("agent-server did not become ready")


def test_help_names_every_option() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from agent_template.cli import server_main; server_main()", "-h"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    for option in ("--host", "--port", "--debug", "--log-level", "--reload", "--insecure"):
        assert option in proc.stdout


def test_a_public_address_without_auth_is_refused(tmp_path: Path) -> None:
    child = agent_server("--host", "0.0.0.0", env=server_env(tmp_path), cwd=tmp_path)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 2
    assert "refusing to serve 0.0.0.0 without auth" in err
    assert "AUTH_REQUIRED=true" in err
    assert "Traceback" not in err


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = agent_server("--port", str(port), env=server_env(tmp_path), cwd=tmp_path)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        f"agent-server: port {port} on 127.0.0.1 is in use (another agent-server?); stop it "
        "or choose another port with --port or SERVER_PORT."
    ]


def test_it_serves_the_offline_model_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    child = agent_server("--port", str(port), env=server_env(tmp_path), cwd=tmp_path)
    try:
        wait_ready(port, child)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/messages", json={"content": "hi"}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        assert "offline test model" in json.dumps(reply.json())
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGTERM, err  # stopped cleanly, by the signal
    assert "offline test model answers" in err
    assert "Traceback" not in err


async def test_sigterm_mid_stream_stores_the_partial_answer_and_closes_with_1012(
    wire_server: WireServer, tmp_path: Path
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    wire_server.script(Reply(text=STORY, text_chunk=6, delay=0.02))
    port = free_port()
    env = server_env(
        tmp_path,
        DEFAULT_MODEL_PROVIDER="openai",
        OPENAI_BASE_URL=wire_server.openai_base_url,
        OPENAI_API_KEY="k",
        SHUTDOWN_GRACE_S="0.3",  # the story takes seconds more: it is interrupted
        CHECKPOINT_INTERVAL="30",
    )
    child = agent_server("--port", str(port), env=env, cwd=tmp_path)
    try:
        await asyncio.to_thread(wait_ready, port, child)
        received = ""
        session = ""
        close_code = None
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "chat", "content": "Tell a story"}))
            try:
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame["type"] == "stream_data":
                        received += frame["data"]["content"]
                        session = frame["session_id"]
                        if len(received) > 100 and child.poll() is None:
                            child.send_signal(signal.SIGTERM)
            except ConnectionClosed:
                pass
            close_code = ws.close_code
        assert close_code == 1012
        assert ws.close_reason == "service restart"
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(child.communicate, timeout=30)
    assert child.returncode == -signal.SIGTERM, err
    assert "Traceback" not in err
    assert received and not received.startswith(STORY)

    from agent_template.config import Settings
    from agent_template.services.session_manager import SessionManager

    manager = SessionManager(
        Settings(_env_file=None, database_url=env["DATABASE_URL"], redis_url=None)  # type: ignore[call-arg]
    )
    try:
        messages = await manager.get_messages(session)
        stored = "".join(m.text for m in messages if m.role == "assistant")
        assert stored.startswith(received[:100])  # what the client saw was kept
        tasks = await manager.get_tasks(session)
        assert tasks[-1].state in ("interrupted", "cancelled")
    finally:
        await manager.close()


async def test_an_approval_pending_when_the_process_stops_completes_after_a_restart(
    tmp_path: Path,
) -> None:
    """The real process: SIGTERM while a call waits for approval, a new process on the same
    database, the answer over REST, and the run completes from that call."""
    from websockets.asyncio.client import connect

    (tmp_path / "permissions.json").write_text(json.dumps({"ask": ["todo_write"]}))
    env = server_env(tmp_path, PERMISSIONS_CONFIG=str(tmp_path / "permissions.json"))
    plan = {"todos": [{"content": "Survive a restart", "status": "pending"}]}
    port = free_port()
    child = agent_server("--port", str(port), env=env, cwd=tmp_path)
    try:
        await asyncio.to_thread(wait_ready, port, child)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            chat = {"type": "chat", "content": f"call todo_write {json.dumps(plan)}"}
            await ws.send(json.dumps({**chat, "session_id": "durable"}))
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "approval_request":
                    approval, task_id = frame["data"]["approval_id"], frame["task_id"]
                    break
        child.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(child.communicate, timeout=30)
        assert "Traceback" not in err
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    port = free_port()
    again = agent_server("--port", str(port), env=env, cwd=tmp_path)
    try:
        await asyncio.to_thread(wait_ready, port, again)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1") as client:
            pending = (await client.get("/approvals")).json()["items"]
            assert [a["approval_id"] for a in pending] == [approval]
            assert (await client.get("/sessions/durable/todos")).json()["items"] == []
            answer = await client.post(f"/approvals/{approval}", json={"decision": "approve"})
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                task = (await client.get(f"/tasks/{task_id}")).json()
                if task.get("state") in ("completed", "failed", "cancelled", "interrupted"):
                    break
                await asyncio.sleep(0.05)
            assert task["state"] == "completed", task
            todos = (await client.get("/sessions/durable/todos")).json()["items"]
            assert [t["content"] for t in todos] == ["Survive a restart"]
    finally:
        again.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(again.communicate, timeout=30)
    assert "Traceback" not in err
