"""The sandbox through real processes and files: escapes, limits, cleanup, network, report."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_template.errors import AgentTemplateError
from agent_template.services.sandbox import (
    SandboxError,
    SandboxLimits,
    SandboxViolation,
    Workspace,
    run_command,
    sandbox_report,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox tests need Linux")

REPORT = sandbox_report()
needs_landlock = pytest.mark.skipif(
    not REPORT.filesystem_enforced, reason=f"no Landlock here: {REPORT.landlock_detail}"
)
needs_network_isolation = pytest.mark.skipif(
    not (REPORT.network_namespace or REPORT.landlock_abi >= 4),
    reason="neither a network namespace nor Landlock TCP rules are available here",
)
LIMITS = SandboxLimits(
    wall_s=10, cpu_s=5, memory_mb=512, max_processes=32, output_bytes=4096, grace_s=0.5
)
SECRET = "sk-secret-test"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(f"{SECRET}\n")
    return folder


def _alive(pid: int) -> bool:
    """A process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def run(command: str, ws: Path, **limits: float) -> str:
    result = await run_command(command, workspace=ws, limits=SandboxLimits(**{**_base(), **limits}))
    return result.output


def _base() -> dict[str, float]:
    return {
        "wall_s": LIMITS.wall_s,
        "cpu_s": LIMITS.cpu_s,
        "memory_mb": LIMITS.memory_mb,
        "max_processes": LIMITS.max_processes,
        "output_bytes": LIMITS.output_bytes,
        "grace_s": LIMITS.grace_s,
    }


# --------------------------------------------------------------------------- workspace paths


def test_workspace_resolves_paths_inside(ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("x")
    (ws / "link").symlink_to(ws / "src")
    w = Workspace(ws)
    assert w.resolve("src/a.py") == ws.resolve() / "src" / "a.py"
    assert w.resolve(str(ws / "src" / "a.py")) == ws.resolve() / "src" / "a.py"
    assert w.resolve("src/../src/a.py") == ws.resolve() / "src" / "a.py"
    assert w.resolve("link/a.py") == ws.resolve() / "src" / "a.py"
    assert w.resolve("new/file.txt") == ws.resolve() / "new" / "file.txt"
    assert w.relative(w.resolve("src/a.py")) == "src/a.py"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("../outside/secret.txt", "climbs out of the workspace with '..'"),
        ("src/../../outside", "climbs out"),
        ("/etc/passwd", "is outside the workspace"),
        ("~/.ssh/id_rsa", "refers to a home folder"),
        ("escape/secret.txt", "symbolic link that points outside"),
        ("dangling", "symbolic link that points outside"),
    ],
)
def test_workspace_refuses_paths_that_lead_outside(
    ws: Path, outside: Path, given: str, reason: str
) -> None:
    (ws / "src").mkdir()
    (ws / "escape").symlink_to(outside)
    (ws / "dangling").symlink_to(outside / "not-yet-there.txt")
    with pytest.raises(SandboxViolation) as caught:
        Workspace(ws).resolve(given)
    error = caught.value
    assert isinstance(error, AgentTemplateError)
    assert error.code == "sandbox_denied"
    assert reason in str(error)
    assert "give a path inside it" in str(error)


# --------------------------------------------------------------------------- commands


async def test_command_runs_in_the_workspace(ws: Path) -> None:
    result = await run_command(
        "pwd; echo out; echo err >&2; echo made > made.txt; exit 3", workspace=ws, limits=LIMITS
    )
    assert result.exit_code == 3
    assert not result.ok
    assert result.output.splitlines() == [str(ws.resolve()), "out", "err"]
    assert (ws / "made.txt").read_text() == "made\n"
    assert result.killed_reason is None
    assert "[exit code 3;" in result.render()


async def test_missing_workspace_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="does not exist"):
        await run_command("true", workspace=tmp_path / "nope", limits=LIMITS)


async def test_the_environment_is_built_from_scratch(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-secret@db/x")
    monkeypatch.setenv("REDIS_URL", "redis://:pw-secret@cache")
    out = await run("env; echo HOME=$HOME", ws)
    assert SECRET not in out
    assert "pw-secret" not in out
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert set(env) >= {"PATH", "HOME", "LANG", "TERM", "TMPDIR"}
    assert env["TERM"] == "dumb"
    assert env["HOME"] != os.environ.get("HOME")


@needs_landlock
async def test_no_process_environment_can_be_read_through_proc(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    # $PPID is the launcher (its environment is scrubbed too); os.getpid() is this "server".
    out = await run(
        f"cat /proc/self/environ; cat /proc/$PPID/environ; cat /proc/{os.getpid()}/environ; "
        "cat /proc/1/environ; ls /proc",
        ws,
    )
    assert SECRET not in out
    assert out.count("Permission denied") == 5


@needs_landlock
async def test_files_outside_the_workspace_cannot_be_read(ws: Path, outside: Path) -> None:
    secret = outside / "secret.txt"
    out = await run(
        f"cat {secret}; cat /etc/..{secret}; ln -s {secret} link && cat link; "
        f"cp {secret} copy.txt; ls {outside}; cat /root/.bashrc",
        ws,
    )
    assert SECRET not in out
    assert out.count("Permission denied") >= 5
    assert not (ws / "copy.txt").exists()


@needs_landlock
async def test_files_outside_the_workspace_cannot_be_written(ws: Path, outside: Path) -> None:
    out = await run(
        f"echo x > {outside}/new.txt; touch /tmp/agent-template-escape-test; "
        f"rm {outside}/secret.txt; mkdir {outside}/dir; echo ok > inside.txt",
        ws,
    )
    assert out.count("Permission denied") >= 3
    assert not (outside / "new.txt").exists()
    assert not (outside / "dir").exists()
    assert (outside / "secret.txt").exists()
    assert not Path("/tmp/agent-template-escape-test").exists()
    assert (ws / "inside.txt").read_text() == "ok\n"


async def test_system_programs_and_python_still_work(ws: Path) -> None:
    out = await run(f"ls /usr/bin >/dev/null && {sys.executable} -c 'print(6 * 7)'", ws)
    assert out.strip() == "42"


# --------------------------------------------------------------------------- limits


async def test_a_memory_hog_is_stopped(ws: Path) -> None:
    result = await run_command(
        f"{sys.executable} -c 'b = bytearray(4 * 1024**3); print(len(b))'",
        workspace=ws,
        limits=LIMITS,
    )
    assert result.exit_code != 0
    assert "MemoryError" in result.output
    assert result.killed_reason == "memory limit (512 MB of address space per process)"


async def test_an_infinite_loop_hits_the_cpu_limit(ws: Path) -> None:
    limits = SandboxLimits(cpu_s=1, wall_s=20, grace_s=0.5)
    result = await run_command("while :; do :; done", workspace=ws, limits=limits)
    assert result.killed_reason == "cpu time limit (1 s per process)"
    assert result.signal is not None
    assert result.duration_s < 15


async def test_a_sleeper_hits_the_wall_time_limit(ws: Path) -> None:
    limits = SandboxLimits(wall_s=1, grace_s=0.5)
    result = await run_command("echo started; sleep 30", workspace=ws, limits=limits)
    assert result.killed_reason == "wall time limit (1 s)"
    assert result.output.startswith("started")
    assert "stopped by the wall time limit (1 s)" in result.render()
    assert result.duration_s < 10


async def test_a_process_ignoring_sigterm_is_killed(ws: Path) -> None:
    limits = SandboxLimits(wall_s=1, grace_s=0.3)
    result = await run_command("trap '' TERM; sleep 30", workspace=ws, limits=limits)
    assert result.killed_reason == "wall time limit (1 s)"
    assert result.duration_s < 10


def _fork_bomb_workspace(ws: Path) -> Path:
    """As root, a workspace of an unprivileged user: commands then run as that user, and
    RLIMIT_NPROC applies (the kernel exempts root)."""
    if REPORT.running_as_root:
        if not REPORT.can_drop_user:
            pytest.skip("running as root without the ability to drop to another user")
        os.chown(ws, 65534, 65534)
    return ws


async def test_a_fork_bomb_is_contained(ws: Path) -> None:
    ws = _fork_bomb_workspace(ws)
    limits = SandboxLimits(wall_s=4, max_processes=20, grace_s=0.5)
    bomb = "echo $$ > pid; bomb() { bomb & bomb & wait; }; bomb"
    result = await run_command(bomb, workspace=ws, limits=limits)
    assert result.killed_reason is not None
    assert result.duration_s < 15
    # The machine stays responsive, and nothing of the bomb is left.
    subprocess.run(["true"], check=True, timeout=5)
    assert not _alive(int((ws / "pid").read_text()))
    assert not _processes_of(ws)


async def test_many_children_hit_the_process_limit(ws: Path) -> None:
    ws = _fork_bomb_workspace(ws)
    limits = SandboxLimits(wall_s=5, max_processes=20, grace_s=0.5)
    result = await run_command(
        "i=0; while [ $i -lt 100 ]; do sleep 20 & i=$((i+1)); done; echo spawned; wait",
        workspace=ws,
        limits=limits,
    )
    assert "fork" in result.output.lower()
    assert result.killed_reason == "process limit (20 processes)"
    assert result.leftover_processes >= 10
    assert not _processes_of(ws)


def _processes_of(ws: Path) -> list[int]:
    """Processes whose working folder is the workspace (what a command leaves behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(ws.resolve()) and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# --------------------------------------------------------------------------- cleanup


async def test_children_left_behind_are_killed(ws: Path) -> None:
    result = await run_command(
        "sleep 1000 & echo $! > bg; setsid sleep 1000 & echo $! > daemon; echo done",
        workspace=ws,
        limits=LIMITS,
    )
    assert result.exit_code == 0
    assert result.leftover_processes == 2
    assert "background process(es)" in result.render()
    for name in ("bg", "daemon"):
        assert not _alive(int((ws / name).read_text()))
    assert not _processes_of(ws)


async def test_cancelling_the_task_kills_the_whole_group(ws: Path) -> None:
    task = asyncio.create_task(
        run_command("sleep 1000 & echo $$ $! > pids; sleep 1000", workspace=ws, limits=LIMITS)
    )
    async with asyncio.timeout(10):
        while not (ws / "pids").exists() or not (ws / "pids").read_text().strip():
            await asyncio.sleep(0.02)
    pids = [int(p) for p in (ws / "pids").read_text().split()]
    assert all(_alive(p) for p in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(_alive(p) for p in pids)
    assert not _processes_of(ws)


# --------------------------------------------------------------------------- network


_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3)\n"
    "    print('CONNECTED')\n"
    "except OSError as exc:\n"
    "    print('BLOCKED', exc)\n"
)


async def _try_connect(ws: Path, *, network: bool) -> tuple[str, bool]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    (ws / "connect.py").write_text(_CONNECT)
    try:
        result = await run_command(
            f"{sys.executable} connect.py {port}", workspace=ws, limits=LIMITS, network=network
        )
        try:
            listener.accept()[0].close()
            accepted = True
        except BlockingIOError:
            accepted = False
    finally:
        listener.close()
    return result.output, accepted


@needs_network_isolation
async def test_network_is_off_by_default(ws: Path) -> None:
    out, accepted = await _try_connect(ws, network=False)
    assert out.startswith("BLOCKED")
    assert not accepted


async def test_network_can_be_allowed(ws: Path) -> None:
    out, accepted = await _try_connect(ws, network=True)
    assert out.startswith("CONNECTED")
    assert accepted


@pytest.mark.skipif(REPORT.landlock_abi < 6, reason="Landlock signal scoping needs ABI 6")
async def test_commands_cannot_signal_processes_outside(ws: Path) -> None:
    out = await run(f"kill -0 {os.getpid()} && echo REACHED; kill -9 $PPID && echo KILLED", ws)
    assert "REACHED" not in out
    assert "KILLED" not in out


# --------------------------------------------------------------------------- output


async def test_long_output_is_cut_in_the_middle(ws: Path) -> None:
    result = await run_command("seq 1 100000", workspace=ws, limits=LIMITS)
    assert result.truncated
    assert result.output_bytes == len("\n".join(str(i) for i in range(1, 100001))) + 1
    assert result.output.startswith("1\n2\n3\n")
    assert result.output.rstrip().endswith("99999\n100000")
    assert "bytes of output cut here: only 4096 bytes are kept" in result.output
    assert len(result.output) < 4096 + 300


# --------------------------------------------------------------------------- report and check


def test_the_report_says_what_is_enforced() -> None:
    report = sandbox_report()
    assert report is sandbox_report()  # made once
    data = json.loads(json.dumps(report.as_dict()))
    assert data["process_group_kill"] is True
    assert data["environment_scrubbed"] is True
    lines = report.lines()
    assert any(line.startswith("filesystem confinement: ") for line in lines)
    assert any(line.startswith("network (when SANDBOX_NETWORK is false): ") for line in lines)
    if report.filesystem_enforced:
        assert data["landlock_abi"] >= 1
        assert "enforced (Landlock ABI" in report.filesystem
    else:
        assert report.filesystem.startswith("NOT enforced (")


@needs_landlock
@needs_network_isolation
def test_sandbox_check_tries_the_escapes(ws: Path) -> None:
    from agent_template.cli_sandbox import sandbox_app

    ws = _fork_bomb_workspace(ws)  # a workspace every limit applies to
    result = CliRunner().invoke(sandbox_app, ["check"], env={"WORKSPACE_DIR": str(ws)})
    assert result.exit_code == 0, result.output
    assert "filesystem confinement: enforced" in result.output
    for probe in ("read outside the workspace", "write outside the workspace", "TCP connect"):
        line = next(ln for ln in result.output.splitlines() if probe in ln)
        assert "blocked" in line
        assert "NOT blocked" not in line
