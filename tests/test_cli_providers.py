"""The agent-template CLI against real SDKs over HTTP, with tools and failover."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wire_server import Fault, Reply, WireServer

TOOLS = '''
from agent_template import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_template.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_run_streams_and_executes_a_tool_of_the_module(
    provider: str, wire_server: WireServer, tmp_path: Path
) -> None:
    (tmp_path / "mytools.py").write_text(TOOLS)
    wire_server.script(
        Reply(tool_calls=[("add", {"a": 2, "b": 3})]),
        Reply(text="The sum is 5."),
    )
    base = wire_server.openai_base_url if provider == "openai" else wire_server.anthropic_base_url
    env = {"DEFAULT_MODEL_PROVIDER": provider, f"{provider.upper()}_BASE_URL": base}
    proc = cli("run", "--tools", "mytools", "What is 2 + 3?", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "The sum is 5."
    assert '-> add({"a": 2, "b": 3})' in proc.stderr
    assert "<- add result: 5" in proc.stderr
    assert "offline" not in proc.stderr
    # the second request carried the tool's result back to the model
    second = wire_server.requests[1].body
    assert "5" in json.dumps(second["messages"][-1])
    tools = second["tools"]
    assert (tools[0].get("function") or tools[0])["name"] == "add"


def test_primary_answering_500_completes_on_the_fallback(
    wire_server: WireServer, tmp_path: Path
) -> None:
    wire_server.script(Fault(500), Reply(text="Answer from the fallback."))
    env = {
        "DEFAULT_MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": wire_server.openai_base_url,
        "FALLBACK_PROVIDERS": "anthropic",
        "ANTHROPIC_BASE_URL": wire_server.anthropic_base_url,
        "MODEL_MAX_RETRIES": "0",
    }
    proc = cli("run", "hello", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Answer from the fallback."
    assert wire_server.paths() == ["/v1/chat/completions", "/v1/messages"]


def test_test_model_reports_model_latency_and_usage(
    wire_server: WireServer, tmp_path: Path
) -> None:
    wire_server.script(Reply(text="pong", usage=(12, 1), model="gpt-test"))
    env = {"OPENAI_BASE_URL": wire_server.openai_base_url}
    proc = cli("test-model", "--provider", "openai", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "model:    gpt-test" in proc.stdout
    assert "12 input + 1 output tokens" in proc.stdout
    assert "latency:" in proc.stdout


def test_test_model_reports_a_rejected_key(wire_server: WireServer, tmp_path: Path) -> None:
    wire_server.script(Fault(401, message="invalid x-api-key"))
    env = {"ANTHROPIC_BASE_URL": wire_server.anthropic_base_url, "ANTHROPIC_API_KEY": "bad"}
    proc = cli("test-model", "--provider", "anthropic", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "ANTHROPIC_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr
