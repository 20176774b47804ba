"""The tools of a real agent run, end to end: ``agent-template`` as a subprocess, the model
a wire-format test server, MCP servers from ``.mcp.json``, the sandboxed shell, and the
permission policy with its questions at the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.wire_server import Reply, WireServer

TIME_SERVER = {
    "command": sys.executable,
    "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
}


def cli(
    *args: str, env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "agent_template.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**clean, **env},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def model_env(wire: WireServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DEFAULT_MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": wire.openai_base_url,
        "OPENAI_API_KEY": "k",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "LOG_FILE": str(tmp_path / "agent.log"),
        **extra,
    }


def tool_messages(request_body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request_body["messages"] if m["role"] == "tool"]


def write_config(folder: Path, *, allow: list[str]) -> None:
    (folder / ".mcp.json").write_text(json.dumps({"mcpServers": {"time": TIME_SERVER}}))
    (folder / "permissions.json").write_text(json.dumps({"allow": allow}))


def test_an_agent_run_calls_the_mcp_time_server_and_the_result_reaches_the_model(
    wire_server: WireServer, tmp_path: Path
) -> None:
    write_config(tmp_path, allow=["time__*"])
    wire_server.script(
        Reply(tool_calls=[("time__get_current_time", {"timezone": "Europe/Paris"})]),
        Reply(text="It is time."),
    )
    env = model_env(wire_server, tmp_path, PERMISSIONS_CONFIG="permissions.json")
    proc = cli("run", "What time is it in Paris?", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "It is time."
    first, second = (r.body for r in wire_server.requests)
    offered = {(t.get("function") or t)["name"] for t in first["tools"]}
    assert {"time__get_current_time", "time__convert_time"} <= offered
    [result] = tool_messages(second)
    reply = json.loads(result["content"])
    assert reply["timezone"] == "Europe/Paris" and "datetime" in reply


def test_mcp_list_shows_the_servers_tools(tmp_path: Path) -> None:
    write_config(tmp_path, allow=[])
    proc = cli("mcp", "list", env={"LOG_FILE": str(tmp_path / "a.log")}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "time__get_current_time" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_mcp_tool_the_policy_asks_about_is_denied_without_a_terminal(
    wire_server: WireServer, tmp_path: Path
) -> None:
    """The default policy asks before an MCP tool runs; with no terminal, that is a no."""
    write_config(tmp_path, allow=[])
    wire_server.script(
        Reply(tool_calls=[("time__get_current_time", {"timezone": "UTC"})]),
        Reply(text="I could not check the time."),
    )
    proc = cli("run", "What time is it?", env=model_env(wire_server, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "needs your approval" in proc.stderr and "no terminal to ask" in proc.stderr
    [result] = tool_messages(wire_server.requests[1].body)
    assert "denied" in result["content"]


def test_the_shell_tool_cannot_read_outside_the_workspace_or_see_api_keys(
    wire_server: WireServer, tmp_path: Path
) -> None:
    workspace = tmp_path / "work"
    workspace.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret outside")
    (tmp_path / "permissions.json").write_text(json.dumps({"allow": ["shell"]}))
    commands = [
        f"cat {secret}",
        "cat ../secret.txt",
        "env; cat /proc/self/environ /proc/$PPID/environ",
        "python3 -c 'while True: pass'",
    ]
    wire_server.script(
        *(Reply(tool_calls=[("shell", {"command": c})]) for c in commands),
        Reply(text="Done."),
    )
    env = model_env(
        wire_server,
        tmp_path,
        PERMISSIONS_CONFIG=str(tmp_path / "permissions.json"),
        WORKSPACE_DIR=str(workspace),
        SANDBOX_CPU_S="2",
        SANDBOX_WALL_S="20",
        OPENAI_API_KEY="sk-very-secret-key",
        ANTHROPIC_API_KEY="sk-ant-secret",
    )
    proc = cli("run", "Look around.", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = tool_messages(wire_server.requests[-1].body)
    assert len(results) == len(commands)
    seen = "\n".join(str(r["content"]) for r in results)
    assert "the secret outside" not in seen
    assert "sk-very-secret-key" not in seen and "sk-ant-secret" not in seen
    runaway = str(results[-1]["content"])
    assert "limit" in runaway, runaway  # killed at its CPU (or wall) limit, and said so


async def test_the_server_lists_mcp_servers_and_their_tools(tmp_path: Path) -> None:
    import httpx

    from agent_template.api.app import create_app
    from tests.server_helpers import serve, server_settings

    write_config(tmp_path, allow=[])
    broken = {"command": "no-such-mcp-server-binary"}
    config = {"mcpServers": {"time": TIME_SERVER, "broken": broken}}
    (tmp_path / ".mcp.json").write_text(json.dumps(config))
    settings = server_settings(tmp_path, mcp_config=tmp_path / ".mcp.json", mcp_startup_timeout=20)
    app = create_app(settings)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        servers = {s["name"]: s for s in (await client.get("/api/v1/mcp/servers")).json()["items"]}
        assert servers["time"]["state"] == "ready" and servers["time"]["tools"] >= 2
        assert servers["broken"]["state"] == "failed"
        assert "not found" in servers["broken"]["error"]
        tools = (await client.get("/api/v1/tools", params={"limit": 100})).json()["items"]
        sources = {t["name"]: t["source"] for t in tools}
        assert sources["time__get_current_time"] == "mcp"
        assert sources["shell"] == "builtin" and sources["subagent"] == "subagent"
        assert (await client.get("/api/v1/mcp/prompts")).status_code == 200
        assert (await client.get("/api/v1/mcp/resources")).status_code == 200


async def test_an_mcp_servers_question_reaches_the_user_and_the_answer_goes_back(
    wire_server: WireServer, tmp_path: Path
) -> None:
    import websockets

    from agent_template.api.app import create_app
    from tests.server_helpers import serve
    from tests.test_server_ws import chat, of_type, read_until, wire_settings, ws_url

    demo = Path(__file__).parent / "mcp_servers" / "demo.py"
    (tmp_path / ".mcp.json").write_text(
        json.dumps({"mcpServers": {"demo": {"command": sys.executable, "args": [str(demo)]}}})
    )
    (tmp_path / "permissions.json").write_text(json.dumps({"allow": ["demo__*"]}))
    wire_server.script(Reply(tool_calls=[("demo__ask", {})]), Reply(text="Greeted."))
    settings = wire_settings(
        tmp_path,
        wire_server,
        mcp_config=tmp_path / ".mcp.json",
        permissions_config=tmp_path / "permissions.json",
    )
    app = create_app(settings)
    async with serve(app) as base, websockets.connect(ws_url(base)) as ws:
        task = await chat(ws, "Greet me.", session_id="s1")
        request = (await read_until(ws, of_type("approval_request")))[-1]["data"]
        assert request["kind"] == "question" and request["tool"] == "demo"
        assert request["reason"] == "What is your name?"
        assert "name" in request["requested_schema"]["properties"]
        await ws.send(
            json.dumps(
                {
                    "type": "approve",
                    "approval_id": request["approval_id"],
                    "decision": "approve",
                    "content": {"name": "Ada"},
                }
            )
        )
        frames = await read_until(ws, of_type("stream_complete", task["task_id"]))
        result = next(f for f in frames if f["type"] == "tool_result")["data"]
        assert result["content"] == "hello Ada"
        assert frames[-1]["data"]["status"] == "completed"


def test_at_a_terminal_the_user_approves_and_the_call_runs(
    wire_server: WireServer, tmp_path: Path
) -> None:
    import pty

    write_config(tmp_path, allow=[])  # the default policy asks before an MCP tool
    wire_server.script(
        Reply(tool_calls=[("time__get_current_time", {"timezone": "UTC"})]),
        Reply(text="Checked."),
    )
    master, slave = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    child = subprocess.Popen(
        [sys.executable, "-m", "agent_template.cli", "run", "What time is it?"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, **model_env(wire_server, tmp_path)},
        cwd=tmp_path,
    )
    os.close(slave)
    try:
        os.write(master, b"y\n")  # typed ahead: read when the question comes
        out, err = child.communicate(timeout=120)
    finally:
        os.close(master)
    assert child.returncode == 0, err
    assert "needs your approval" in err and "[approve]" in err
    [result] = tool_messages(wire_server.requests[1].body)
    assert json.loads(result["content"])["timezone"] == "UTC"
    assert out.strip().endswith("Checked.")
