"""The agent-template command, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "agent_template.cli"]
TOOLS = '''
from agent_template import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_run_without_a_provider_uses_the_offline_model() -> None:
    proc = run_cli("run", "hello")
    assert proc.returncode == 0, proc.stderr
    assert "offline test model" in proc.stderr  # says so plainly
    assert "You said: 'hello'" in proc.stdout
    assert "output tokens, 1 model call]" in proc.stderr


def test_run_with_tools_module_offline(tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(TOOLS)
    proc = run_cli("run", "--tools", "mytools", 'call add {"a": 2, "b": 3}', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '-> add({"a": 2, "b": 3})' in proc.stderr
    assert "<- add result: 5" in proc.stderr
    assert "returned: 5" in proc.stdout


def test_tools_module_without_tools_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    proc = run_cli("run", "--tools", str(tmp_path / "empty.py"), "hi")
    assert proc.returncode == 2
    assert "defines no tools" in proc.stderr
    missing = run_cli("run", "--tools", "no_such_module_xyz", "hi")
    assert missing.returncode == 2
    assert "Cannot load tools from 'no_such_module_xyz'" in missing.stderr


def test_json_events(tmp_path: Path) -> None:
    proc = run_cli("run", "--json", "hi")
    lines = proc.stdout.strip().splitlines()
    assert '"type":"done"' in lines[-1]
    assert '"status":"completed"' in lines[-1]


def test_invalid_setting_stops_start_up() -> None:
    proc = run_cli("run", "hi", env={"MAX_CONCURRENT_TASKS": "many"})
    assert proc.returncode == 2
    assert "MAX_CONCURRENT_TASKS: expected a positive integer (got 'many')" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_or_unconfigured_provider() -> None:
    proc = run_cli("run", "--provider", "openai", "hi")
    assert proc.returncode == 2
    assert "Set OPENAI_API_KEY" in proc.stderr
    assert proc.stderr.count("choose another provider") == 1  # advice said once, for the CLI
    assert "choose another provider with --provider" in proc.stderr
    proc = run_cli("test-model", "--provider", "anthropic")
    assert proc.returncode == 2
    assert "Set ANTHROPIC_API_KEY" in proc.stderr
    proc = run_cli("run", "--provider", "nope", "hi")
    assert proc.returncode == 2
    assert "Unknown provider 'nope'" in proc.stderr


def test_unreachable_host_is_reported_by_test_model() -> None:
    proc = run_cli(
        "test-model",
        "--provider",
        "openai",
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "MODEL_TIMEOUT": "5"},
    )
    assert proc.returncode == 1
    assert "Provider 'openai'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_test_model_offline() -> None:
    proc = run_cli("test-model", "--provider", "test")
    assert proc.returncode == 0, proc.stderr
    assert "latency:" in proc.stdout
    assert "usage:" in proc.stdout


def test_status_shows_configuration() -> None:
    proc = run_cli("status", env={"FALLBACK_PROVIDERS": "anthropic", "ANTHROPIC_API_KEY": "k"})
    assert proc.returncode == 0, proc.stderr
    assert "anthropic" in proc.stdout
    assert "primary" in proc.stdout
    assert "fallback" in proc.stdout
    assert "sqlite" in proc.stdout


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    proc = run_cli("init", cwd=tmp_path)
    assert proc.returncode == 0
    env_file = tmp_path / ".env"
    assert "DEFAULT_MODEL_PROVIDER=" in env_file.read_text()
    assert (tmp_path / "data" / "logs").is_dir()
    env_file.write_text("MINE=1\n")
    run_cli("init", cwd=tmp_path)
    assert env_file.read_text() == "MINE=1\n"
    run_cli("init", "--force", cwd=tmp_path)
    assert "OPENAI_API_KEY" in env_file.read_text()


def test_help_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['agent-template', '--help']\n"
        "from agent_template.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'openai', 'anthropic', 'pydantic_settings', 'pydantic', 'httpx'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "test-model" in proc.stdout


def test_an_empty_prompt_is_refused_plainly() -> None:
    proc = run_cli("run", "  ")
    assert proc.returncode == 2
    assert "The prompt is empty" in proc.stderr


def test_the_prompt_can_come_from_stdin_or_a_file(tmp_path: Path) -> None:
    piped = subprocess.run(
        [*CLI, "run", "-"],
        input="what is on stdin?\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "You said: 'what is on stdin?'" in piped.stdout
    big = "word " * 200_000 + "THE END"  # 1 MB: more than a shell passes as one argument
    (tmp_path / "prompt.txt").write_text(big)
    from_file = run_cli("run", "--file", str(tmp_path / "prompt.txt"))
    assert from_file.returncode == 0, from_file.stderr[-500:]
    assert "THE END'" in from_file.stdout
    both = run_cli("run", "--file", str(tmp_path / "prompt.txt"), "and this")
    assert both.returncode == 2
    assert "not both" in both.stderr
    missing = run_cli("run", "--file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "Cannot read the prompt from" in missing.stderr


@pytest.mark.parametrize("turns", ["0", "-3"])
def test_a_run_needs_at_least_one_turn(turns: str) -> None:
    proc = run_cli("run", "--max-turns", turns, "hi")
    assert proc.returncode == 2
    assert "--max-turns" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "command", [["run"], ["sessions", "show"], ["test-model"], ["status"], ["init"], []]
)
def test_help_reads_as_prose_without_type_markers(command: list[str]) -> None:
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    for marker in ("<bool>", "<str>", "<int", "{prompt}", "{PROMPT}", "{session"):
        assert marker not in proc.stdout


def test_init_says_when_it_could_not_write(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    proc = run_cli("init", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Cannot write" in proc.stderr
    assert "Data folders ready" not in proc.stdout
    assert "Traceback" not in proc.stderr


def test_status_check_fails_when_the_primary_provider_is_down() -> None:
    proc = run_cli(
        "status",
        "--check",
        env={
            "DEFAULT_MODEL_PROVIDER": "openai",
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "MODEL_TIMEOUT": "5",
        },
    )
    assert proc.returncode == 1
    assert "down:" in proc.stdout
    assert "primary provider 'openai' is not answering" in proc.stderr
    offline = run_cli("status", "--check")
    assert offline.returncode == 0, offline.stderr
