"""``agent-client`` as users run it: quick help, settings from options, environment and the
config file (a bad file is one clear message), no terminal, and the local server it starts
when no ``--url`` is given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent_template.frontend.config import config_path, load_config
from agent_template.frontend.connection import ClientError
from agent_template.frontend.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "from agent_template.cli import client_main; client_main()"


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CLIENT_")}
    env.update(
        {
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "HOME": str(tmp_path / "home"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_FILE": str(tmp_path / "server.log"),
            "DEFAULT_MODEL_PROVIDER": "test",
        }
    )
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def agent_client(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLIENT, *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "agent-template" / "client.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_help_names_every_option_without_loading_the_app(tmp_path: Path) -> None:
    proc = agent_client("--help", env=client_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--url", "--token", "--session", "--theme", "AGENT_CLIENT_TOKEN", "client.toml"):
        assert option in proc.stdout
    probe = (
        "import sys\n"
        "sys.argv = ['agent-client', '--help']\n"
        "from agent_template.cli import client_main\n"
        "try:\n    client_main()\nexcept SystemExit:\n    pass\n"
        "print('textual' in sys.modules, 'agent_template.frontend.app' in sys.modules)"
    )
    check = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert check.stdout.strip().splitlines()[-1] == "False False", check.stderr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('urll = "http://127.0.0.1:8000"\n', "unknown key 'urll'"),
        ("token = 42\n", "key 'token' must be a string, not int"),
        ('url = "http://x\n', "is not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_clear_message(tmp_path: Path, text: str, problem: str) -> None:
    path = write_config(tmp_path, text)
    proc = agent_client(env=client_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"agent-client: {path}: {problem}" in proc.stderr
    assert "Fix or remove that file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_a_terminal_it_says_so(tmp_path: Path) -> None:
    write_config(tmp_path, 'theme = "nord"\n')
    proc = agent_client("--url", "http://127.0.0.1:9", env=client_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "agent-client: needs a terminal" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_options_win_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        'url = "http://file:1"\ntoken = "file-token"\nsession = "s-file"\ntheme = "nord"\n',
    )
    env = {"AGENT_CLIENT_TOKEN": "env-token", "AGENT_CLIENT_SESSION": "s-env"}
    config = load_config({"session": "s-cli", "url": None}, env=env, path=path)
    assert (config.url, config.token, config.session, config.theme) == (
        "http://file:1",
        "env-token",
        "s-cli",
        "nord",
    )
    assert config.path == path
    nothing = load_config({}, env={}, path=tmp_path / "missing.toml")
    assert (nothing.url, nothing.token, nothing.session, nothing.theme) == (None,) * 4


def test_the_config_file_lives_in_the_platforms_config_folder(tmp_path: Path) -> None:
    home = str(tmp_path)
    linux = config_path({"HOME": home}, "linux")
    assert linux == tmp_path / ".config" / "agent-template" / "client.toml"
    xdg = config_path({"HOME": home, "XDG_CONFIG_HOME": str(tmp_path / "x")}, "linux")
    assert xdg == tmp_path / "x" / "agent-template" / "client.toml"
    mac = config_path({"HOME": home}, "darwin")
    assert mac == tmp_path / "Library" / "Application Support" / "agent-template" / "client.toml"
    win = config_path({"APPDATA": str(tmp_path / "Roaming")}, "win32")
    assert win == tmp_path / "Roaming" / "agent-template" / "client.toml"
    named = config_path({"AGENT_CLIENT_CONFIG": str(tmp_path / "mine.toml")}, "linux")
    assert named == tmp_path / "mine.toml"


def test_the_local_server_starts_answers_and_stops(tmp_path: Path) -> None:
    server = LocalServer(env=client_env(tmp_path))
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
        ready = httpx.get(f"{url}/ready", timeout=5).json()
        assert ready["offline"] is True
        assert server.log_path == tmp_path / "data" / "agent-client-server.log"
        assert server.log_path.exists()
        process = server.process
        assert process is not None and process.poll() is None
    finally:
        code = server.stop()
    assert process.poll() is not None and code is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_local_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    env = client_env(tmp_path, MAX_CONTEXT_LENGTH="not a number")
    server = LocalServer(env=env)
    with pytest.raises(ClientError) as caught:
        server.start()
    error = caught.value
    assert error.code == "local_server_failed"
    assert "stopped (exit" in error.message and "MAX_CONTEXT_LENGTH" in error.message
    assert str(server.log_path) in error.hint and "--url" in error.hint
    assert server.process is not None and server.process.poll() is not None
