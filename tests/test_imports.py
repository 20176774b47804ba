"""The public surface, pinned, and the promise that importing the package is cheap."""

from __future__ import annotations

import subprocess
import sys

import agent_template


def test_top_level_exports() -> None:
    assert agent_template.__all__ == [
        "Agent",
        "AgentLoop",
        "AgentRun",
        "FunctionTool",
        "HookRegistry",
        "ModelManager",
        "ModelProvider",
        "RunResult",
        "SessionManager",
        "Settings",
        "StreamGenerator",
        "ToolContext",
        "ToolManager",
        "Veto",
        "__version__",
        "load_settings",
        "tool",
    ]
    for name in agent_template.__all__:
        assert getattr(agent_template, name) is not None


def test_import_loads_no_sdk() -> None:
    code = (
        "import sys, agent_template\n"
        "from agent_template import Agent, tool\n"
        "heavy = {'openai', 'anthropic', 'pydantic_settings', 'fastapi', 'starlette',\n"
        "         'uvicorn', 'websockets', 'prometheus_client', 'opentelemetry'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
