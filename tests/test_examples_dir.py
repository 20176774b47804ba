"""Every script in examples/ runs offline, in an empty folder, and prints what it shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE_TIMEOUT_S = 120  # server_client.py starts a server; the others take a few seconds
# Needs a server to talk to: the spec's client, run against one by the WebSocket tests.
NOT_RUN_HERE = {"websocket_client.py"}
PROVIDER_VARIABLES = {
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "DEEPSEEK_API_KEY",
    "QWEN_API_KEY",
    "LOCAL_API_KEY",
    "LOCAL_BASE_URL",
    "OLLAMA_HOST",
    "DEFAULT_MODEL_PROVIDER",
    "DEFAULT_MODEL",
    "FALLBACK_PROVIDERS",
}

# What each example must print: the part of its output that shows the feature worked.
EXPECTED = {
    "python_api.py": "You said: 'Hello, what can you help me with?'",
    "tools.py": "The tool convert returned: 42.195 km = 26.22 mi",
    "streaming.py": "<- word_count returned 7",
    "failover.py": "failovers: {'local -> test': 1}",
    "sessions.py": "second process: [offline test model] You said: 'What did I tell you?'. "
    "This conversation has 1 earlier message(s) from you.",
    "compression.py": "compacted with summarize",
    "subagents.py": "[counter] word_count returned 4",
    "permissions.py": "is denied by rule 'delete_notes'",
    "server_client.py": "stored messages: ['user', 'assistant', 'user', 'assistant']",
    "mcp_server.py": '"timezone": "Asia/Tokyo"',
}
# Checked too, where one line is not enough to show the example did what it says.
ALSO_EXPECTED = {
    "tools.py": [
        "The tool greet returned: Hello, Ada!",
        "invalid arguments",
        '"enum": ["km", "mi"]',
    ],
    "streaming.py": ["(28 text deltas)", "done: completed, 2 model turns"],
    "failover.py": ["answer: [offline test model]"],
    "sessions.py": ["stored messages: 4 (user, assistant, user, assistant)"],
    "compression.py": ["Tell me about Lisbon", "the request held 5 messages instead of 18"],
    "subagents.py": ["The tool subagent returned: The tool word_count returned: 4"],
    "permissions.py": ["deny  shell", "ask   shell", "the tool ran: False"],
    "server_client.py": ["REST reply: [offline test model]", "WebSocket reply: [offline"],
    "mcp_server.py": ["time: ready", "time__convert_time"],
}


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in NOT_RUN_HERE)


def test_every_example_has_an_expected_output() -> None:
    assert set(_examples()) == set(EXPECTED), "add the new example to EXPECTED (or remove it)"
    assert set(ALSO_EXPECTED) <= set(EXPECTED)


def test_the_examples_readme_lists_every_example() -> None:
    listing = (EXAMPLES / "README.md").read_text()
    for name in [*_examples(), *NOT_RUN_HERE]:
        assert f"examples/{name}" in listing, f"{name} is not in examples/README.md"


@pytest.mark.parametrize("name", _examples())
def test_example_runs_offline(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARIABLES}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stdout + proc.stderr, output
    for expected in [EXPECTED[name], *ALSO_EXPECTED.get(name, [])]:
        assert expected in proc.stdout, f"{expected!r} not printed\n{output}"
