"""Persisted sessions through the CLI: continue a conversation, survive SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.wire_server import Reply, WireServer


def env_for(wire: WireServer, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DEFAULT_MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": wire.openai_base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "CHECKPOINT_INTERVAL": "0.2",
    }


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_template.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


STORY = " ".join(f"word{i}" for i in range(400))


def start_story(
    wire: WireServer, env: dict[str, str], cwd: Path, session: str, *, until: int
) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start a run that streams a long story slowly; return once ``until`` bytes arrived."""
    wire.script(Reply(text=STORY, text_chunk=6, delay=0.02))
    child = subprocess.Popen(
        [sys.executable, "-m", "agent_template.cli", "run", "--session", session, "Tell a story"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    assert child.stdout is not None
    streamed = b""
    deadline = time.monotonic() + 30
    while len(streamed) < until and time.monotonic() < deadline:
        streamed += os.read(child.stdout.fileno(), 64)
    assert streamed, "nothing streamed"
    return child, streamed


def test_two_runs_continue_one_conversation(wire_server: WireServer, tmp_path: Path) -> None:
    env = env_for(wire_server, tmp_path)
    wire_server.script(Reply(text="Nice to meet you, Ada."), Reply(text="Your name is Ada."))
    first = cli("run", "--session", "chat1", "My name is Ada.", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli("run", "--session", "chat1", "What is my name?", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "Your name is Ada."
    sent = wire_server.requests[1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]
    listing = cli("sessions", "list", env=env, cwd=tmp_path)
    assert "chat1" in listing.stdout
    assert " 4  " in listing.stdout  # four messages


def test_sigkill_while_streaming_keeps_the_partial_answer(
    wire_server: WireServer, tmp_path: Path
) -> None:
    env = env_for(wire_server, tmp_path)
    wire_server.script(Reply(text="An earlier answer."))
    assert cli("run", "--session", "k", "Earlier question", env=env, cwd=tmp_path).returncode == 0
    child, _ = start_story(wire_server, env, tmp_path, "k", until=120)
    time.sleep(0.5)  # at least two checkpoint intervals after text began to stream
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    shown = cli("sessions", "show", "k", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "Earlier question" in out
    assert "An earlier answer." in out
    assert "Tell a story" in out
    assert "#4 assistant [interrupted]" in out
    partial = out.split("#4 assistant [interrupted]")[1].splitlines()[1].strip()
    assert partial and STORY.startswith(partial)
    assert len(partial) >= 60
    assert "interrupted: The process running this task stopped" in out


def test_sessions_delete_and_unknown_session(wire_server: WireServer, tmp_path: Path) -> None:
    env = env_for(wire_server, tmp_path)
    assert cli("run", "--session", "gone", "hi", env=env, cwd=tmp_path).returncode == 0
    assert cli("sessions", "delete", "gone", env=env, cwd=tmp_path).returncode == 0
    missing = cli("sessions", "show", "gone", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "Session 'gone' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    upgraded = cli("db", "upgrade", env=env, cwd=tmp_path)
    from agent_template.services.storage.migrate import HEAD_REVISION

    assert f"revision {HEAD_REVISION}" in upgraded.stdout


def test_ctrl_c_cancels_promptly_and_keeps_the_partial_answer(
    wire_server: WireServer, tmp_path: Path
) -> None:
    env = env_for(wire_server, tmp_path)
    child, _ = start_story(wire_server, env, tmp_path, "c", until=60)
    sent_at = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=15)
    assert time.monotonic() - sent_at < 5, "Ctrl-C did not stop the run promptly"
    assert child.returncode == 130
    assert b"[cancelled]" in err
    assert b"Traceback" not in err
    shown = cli("sessions", "show", "c", env=env, cwd=tmp_path).stdout
    assert "#2 assistant [cancelled]" in shown
    partial = shown.split("#2 assistant [cancelled]")[1].splitlines()[1].strip()
    assert STORY.startswith(partial)
    assert "task " in shown and " cancelled" in shown


def test_a_long_offline_session_shows_its_compactions(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "MAX_CONTEXT_LENGTH": "500",
    }
    seen = []
    for turn in range(6):
        prompt = f"Turn {turn}: tell me about the longest rivers of the world and their deltas"
        proc = cli("run", "--session", "long", prompt, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"You said: 'Turn {turn}" in proc.stdout
        seen += [line for line in proc.stderr.splitlines() if "context compacted" in line]
    assert seen, "the context never needed compacting"
    before, after = seen[-1].split("about ")[1].split(" tokens")[0].split(" -> ")
    assert int(before) > int(after)
    assert "limit 400" in seen[-1]
    history = cli("sessions", "show", "long", env=env, cwd=tmp_path).stdout
    assert history.count(" user\n") == 6  # the stored history is whole


def test_database_trouble_is_reported_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/x"}
    proc = cli("run", "--session", "s", "hi", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "The database at DATABASE_URL=postgresql+asyncpg://nobody@127.0.0.1:1/x" in proc.stderr
    assert "Traceback" not in proc.stderr
    listing = cli("sessions", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 1
    assert "is unavailable" in listing.stderr
    bad = cli("sessions", "list", env={**os.environ, "DATABASE_URL": "mysql://x/y"}, cwd=tmp_path)
    assert bad.returncode == 2
    assert "DATABASE_URL: expected sqlite:///" in bad.stderr


def test_sigterm_stores_everything_streamed_before_exiting(
    wire_server: WireServer, tmp_path: Path
) -> None:
    env = {**env_for(wire_server, tmp_path), "CHECKPOINT_INTERVAL": "30"}  # no checkpoint helps
    child, streamed = start_story(wire_server, env, tmp_path, "t", until=80)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=15)
    assert child.returncode == 143
    assert b"[terminated]" in err
    assert b"Traceback" not in err
    printed = (streamed + out).decode().strip()
    shown = cli("sessions", "show", "t", env=env, cwd=tmp_path).stdout
    assert "#2 assistant [cancelled]" in shown
    partial = shown.split("#2 assistant [cancelled]")[1].splitlines()[1].strip()
    assert partial.startswith(printed)  # nothing the user saw was lost
    assert STORY.startswith(partial)


HANGING_TOOLS = '''
import time
from agent_template import tool

@tool
def hang() -> str:
    """Never returns."""
    time.sleep(3600)
    return "never"
'''


def test_a_hung_sync_tool_never_keeps_the_cli_open(tmp_path: Path) -> None:
    (tmp_path / "hangtools.py").write_text(HANGING_TOOLS)
    env = {**os.environ, "DEFAULT_MODEL_PROVIDER": "test", "TOOL_TIMEOUT": "0.5"}
    timed_out = cli("run", "--tools", "hangtools", "call hang", env=env, cwd=tmp_path)
    assert timed_out.returncode == 0, timed_out.stderr  # the run went on and finished
    assert "thread may still be running" in timed_out.stderr
    assert "was stopped" not in timed_out.stderr + timed_out.stdout

    env["TOOL_TIMEOUT"] = "3600"
    child = subprocess.Popen(
        [sys.executable, "-m", "agent_template.cli", "run", "--tools", "hangtools", "call hang"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert child.stderr is not None
    seen = b""
    while b"-> hang" not in seen:  # the call has started
        chunk = os.read(child.stderr.fileno(), 256)
        assert chunk, "the run ended before calling the tool"
        seen += chunk
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=15)  # it exits although the tool's thread never returns
    assert child.returncode == 130
    assert b"Traceback" not in err


def test_compacting_a_short_session_says_there_was_nothing_to_do(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEFAULT_MODEL_PROVIDER": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
    }
    assert cli("run", "--session", "short", "hi", env=env, cwd=tmp_path).returncode == 0
    compacted = cli("sessions", "compact", "short", env=env, cwd=tmp_path)
    assert compacted.returncode == 0, compacted.stderr
    assert "Nothing to compact" in compacted.stdout


def test_session_commands_load_only_what_they_need(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEFAULT_MODEL_PROVIDER": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
    }
    assert cli("run", "--session", "s", "hi", env=env, cwd=tmp_path).returncode == 0
    code = (
        "import sys\n"
        "sys.argv = ['agent-template', 'sessions', 'list']\n"
        "from agent_template.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'alembic', 'mako', 'openai', 'anthropic', 'httpx', 'pydantic_settings'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "s " in proc.stdout  # it listed the session
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_data_folder_that_cannot_be_written_is_said_to_be_one(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    env = {
        **os.environ,
        "DEFAULT_MODEL_PROVIDER": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'agent.db'}",
    }
    proc = cli("run", "--session", "s", "hi", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Cannot write the SQLite database" in proc.stderr
    assert "this user may write to it" in proc.stderr
    assert "unavailable" not in proc.stderr and "reachable" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_databases_sharing_one_redis_keep_their_own_sessions(tmp_path: Path) -> None:
    """A session cached for one project's database is not taken to exist in another's."""
    import asyncio

    from agent_template.config import Settings
    from agent_template.services.session_manager import SessionManager

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception as exc:
        from tests.conftest import service_missing

        service_missing(f"Redis at {url}", exc)
    session = f"shared-{os.getpid()}-{time.time_ns()}"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()

    async def cached_in_one() -> None:  # as a process of project one leaves it, mid-run
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=f"sqlite:///{one / 'agent.db'}",
            redis_url=url,
            data_dir=one / "data",
        )
        manager = SessionManager(settings)
        await manager.create_session("default", session_id=session)
        await manager.get_session(session)  # now in Redis
        await manager.close()

    asyncio.run(cached_in_one())
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DEFAULT_MODEL_PROVIDER": "test",
        "DATABASE_URL": f"sqlite:///{two / 'agent.db'}",
    }
    proc = cli("run", "--session", session, "hi", env=env, cwd=two)
    assert proc.returncode == 0, proc.stderr
    assert "does not exist" not in proc.stderr
