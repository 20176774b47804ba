"""``agent-client`` end to end in a real terminal: tmux runs it with no ``--url`` (so it starts
its own server), the test types a message, reads the screen with ``capture-pane`` until the
offline model's answer shows, quits, and checks the client and its server are gone."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

CLIENT = "from agent_template.cli import client_main; client_main()"
TIMEOUT_S = 90.0  # the most any wait here may take (a slow machine starting a server)

if shutil.which("tmux") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("tmux is needed for the terminal test in CI", pytrace=False)
    pytest.skip("tmux is not installed", allow_module_level=True)


class Tmux:
    """A private tmux server (its own socket, no user config) with one session."""

    def __init__(self, name: str) -> None:
        self.socket = f"agent-client-test-{name}"
        self.session = name

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-200", "-t", self.session)

    def wait_for(self, seen: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + TIMEOUT_S
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if seen(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"the screen never showed {what}; it shows:\n{screen}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    terminal = Tmux(uuid.uuid4().hex[:8])
    yield terminal
    subprocess.run(["tmux", "-L", terminal.socket, "kill-server"], capture_output=True, timeout=30)


def client_script(tmp_path: Path, **extra: str) -> Path:
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_FILE": str(tmp_path / "server.log"),
        "DEFAULT_MODEL_PROVIDER": "test",
        "TERM": "xterm-256color",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        **extra,
    }
    lines = [
        "#!/bin/sh",
        "unset REDIS_URL AGENT_CLIENT_URL AGENT_CLIENT_TOKEN AGENT_CLIENT_SESSION",
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    lines += [
        f"cd {shlex.quote(str(tmp_path))}",
        f"{shlex.quote(sys.executable)} -c {shlex.quote(CLIENT)}",
        f"echo $? > {shlex.quote(str(tmp_path / 'exit-code'))}",
        "sleep 600",  # keep the pane, and the transcript printed in it, for capture-pane
    ]
    script = tmp_path / "run-client.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def server_processes(port: int) -> list[int]:
    """The pids of agent-server processes on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server_main" in b" ".join(argv) and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


def test_a_chat_in_a_real_terminal(tmux: Tmux, tmp_path: Path) -> None:
    script = client_script(tmp_path)
    tmux("new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "45", str(script))
    tmux.wait_for(lambda s: "● connected" in s, "the app, connected")
    log = tmp_path / "data" / "agent-client-server.log"
    started = re.search(r"--port (\d+)", log.read_text())
    assert started, log.read_text()
    port = int(started.group(1))
    assert server_processes(port)

    tmux("send-keys", "-t", tmux.session, "-l", "hello from tmux")
    tmux("send-keys", "-t", tmux.session, "Enter")
    answer = tmux.wait_for(
        lambda s: "You said: 'hello from tmux'" in s, "the offline model's answer"
    )
    assert "[offline test model]" in answer

    tmux("send-keys", "-t", tmux.session, "C-q")
    code_file = tmp_path / "exit-code"
    deadline = time.monotonic() + TIMEOUT_S
    while not code_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code_file.exists(), tmux.screen()
    assert code_file.read_text().strip() == "0", tmux.screen()
    after = tmux.screen()
    assert "hello from tmux" in after  # the transcript, printed into the scrollback
    assert "Traceback" not in after
    assert server_processes(port) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_closing_the_terminal_stops_the_local_server(tmux: Tmux, tmp_path: Path) -> None:
    script = client_script(tmp_path)
    tmux("new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "40", str(script))
    tmux.wait_for(lambda s: "● connected" in s, "the app, connected")
    log = tmp_path / "data" / "agent-client-server.log"
    started = re.search(r"--port (\d+)", log.read_text())
    assert started, log.read_text()
    port = int(started.group(1))
    assert server_processes(port)
    tmux("kill-session", "-t", tmux.session)  # the terminal goes away: a hang-up
    deadline = time.monotonic() + TIMEOUT_S
    while server_processes(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_processes(port) == []


def test_a_local_server_that_cannot_start_is_one_clear_message(tmux: Tmux, tmp_path: Path) -> None:
    script = client_script(tmp_path, MAX_CONTEXT_LENGTH="lots")
    tmux("new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "45", str(script))
    code_file = tmp_path / "exit-code"
    deadline = time.monotonic() + TIMEOUT_S
    while not code_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    screen = tmux.screen()
    assert code_file.exists() and code_file.read_text().strip() == "1", screen
    assert "agent-client: The local agent-server stopped (exit" in screen
    assert "MAX_CONTEXT_LENGTH" in screen and "--url" in screen
    assert "Traceback" not in screen
