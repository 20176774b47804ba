"""The built-in tools through the tool registry, on real files and real commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_template import ToolContext, ToolManager
from agent_template.config import load_settings
from agent_template.models import ToolCall, ToolResultMessage
from agent_template.services.builtin_tools import BUILTIN_TOOL_NAMES, SandboxConfig, builtin_tools
from agent_template.services.sandbox import sandbox_report

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox tests need Linux")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture
def tools(ws: Path) -> ToolManager:
    config = SandboxConfig(workspace_dir=ws, wall_s=10, cpu_s=5, output_bytes=4096)
    return ToolManager(builtin_tools(config))


async def call(
    tools: ToolManager, name: str, context: ToolContext | None = None, **arguments: Any
) -> ToolResultMessage:
    return await tools.execute(
        ToolCall(id="call-1", name=name, arguments=json.dumps(arguments)), context
    )


async def ok(tools: ToolManager, name: str, **arguments: Any) -> str:
    result = await call(tools, name, **arguments)
    assert not result.is_error, result.text
    return result.text


async def refused(tools: ToolManager, name: str, **arguments: Any) -> str:
    result = await call(tools, name, **arguments)
    assert result.is_error, result.text
    return result.text


# --------------------------------------------------------------------------- the set


def test_the_tools_and_their_schemas(tools: ToolManager) -> None:
    assert tuple(t.name for t in tools.tools()) == BUILTIN_TOOL_NAMES
    assert all(t.source == "builtin" for t in tools.tools())
    params = {d.name: d.parameters for d in tools.definitions()}
    assert params["shell"]["required"] == ["command"]
    assert set(params["shell"]["properties"]) == {"command", "timeout_s"}
    assert params["edit_file"]["required"] == ["path", "old_string", "new_string"]
    assert set(params["grep"]["properties"]) == {"pattern", "path", "glob", "case_insensitive"}
    assert set(params["read_file"]["properties"]) == {"path", "offset", "limit", "line_numbers"}
    # The file tools run in worker threads; the shell outlives its own wall-time limit.
    by_name = {t.name: t for t in tools.tools()}
    assert all(by_name[n].runs_in_thread for n in BUILTIN_TOOL_NAMES if n != "shell")
    assert (by_name["shell"].timeout or 0) > 10


def test_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        workspace_dir=tmp_path, sandbox_network=True, sandbox_cpu_s=7, sandbox_wall_s=9
    )
    config = SandboxConfig.from_settings(settings)
    assert config.workspace_dir == tmp_path
    assert config.network is True
    assert (config.limits.cpu_s, config.limits.wall_s) == (7, 9)
    assert config.limits.output_bytes == settings.sandbox_output_bytes


# --------------------------------------------------------------------------- shell


async def test_shell_runs_in_the_workspace(tools: ToolManager, ws: Path) -> None:
    text = await ok(tools, "shell", command="pwd; echo hello > greeting.txt; exit 4")
    assert str(ws.resolve()) in text
    assert "[exit code 4;" in text
    assert (ws / "greeting.txt").read_text() == "hello\n"


async def test_shell_timeout_and_bad_arguments(tools: ToolManager) -> None:
    text = await ok(tools, "shell", command="echo begun; sleep 30", timeout_s=1)
    assert "begun" in text
    assert "stopped by the wall time limit (1 s)" in text
    assert "the command is empty" in await refused(tools, "shell", command="  ")
    assert "positive" in await refused(tools, "shell", command="true", timeout_s=-1)
    assert "command" in await refused(tools, "shell")
    assert "NUL" in await refused(tools, "shell", command="echo \0")
    assert "Write it to a script" in await refused(tools, "shell", command="#" * 200_000)


@pytest.mark.skipif(not sandbox_report().running_as_root, reason="the note is about root")
async def test_shell_says_once_what_is_not_enforced(tools: ToolManager) -> None:
    first = await ok(tools, "shell", command="true")
    second = await ok(tools, "shell", command="true")
    assert first.startswith("[sandbox note: the command runs as root (without capabilities)")
    assert "sandbox note" not in second


# --------------------------------------------------------------------------- read_file


async def test_read_file_numbers_lines(tools: ToolManager, ws: Path) -> None:
    (ws / "a.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    assert (await ok(tools, "read_file", path="a.txt")).splitlines()[:2] == [
        "     1\tline 1",
        "     2\tline 2",
    ]
    part = await ok(tools, "read_file", path="a.txt", offset=4, limit=2)
    assert part.splitlines() == [
        "     4\tline 4",
        "     5\tline 5",
        "[lines 4-5 of 10; read on with offset=6]",
    ]
    plain = await ok(tools, "read_file", path="a.txt", offset=9, line_numbers=False)
    assert plain.splitlines() == ["line 9", "line 10", "[lines 9-10 of 10]"]
    (ws / "empty.txt").write_text("")
    assert await ok(tools, "read_file", path="empty.txt") == "(empty.txt is empty)"


async def test_read_file_refusals(tools: ToolManager, ws: Path, tmp_path: Path) -> None:
    (ws / "dir").mkdir()
    (ws / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    with (ws / "huge.log").open("wb") as f:
        f.truncate(11 * 1024 * 1024)
    (ws / "short.txt").write_text("one\n")
    (tmp_path / "secret.txt").write_text("sk-secret")
    assert "There is no file 'nope.txt'" in await refused(tools, "read_file", path="nope.txt")
    assert "is a folder" in await refused(tools, "read_file", path="dir")
    assert "binary file" in await refused(tools, "read_file", path="blob.bin")
    huge = await refused(tools, "read_file", path="huge.log")
    assert "11.5 MB" in huge
    assert "head, tail" in huge
    assert "past the end" in await refused(tools, "read_file", path="short.txt", offset=5)
    denied = await refused(tools, "read_file", path="../secret.txt")
    assert "Access denied" in denied
    assert "sk-secret" not in denied
    assert "Access denied" in await refused(tools, "read_file", path=str(tmp_path / "secret.txt"))


# --------------------------------------------------------------------------- write_file


async def test_write_file_creates_and_overwrites(tools: ToolManager, ws: Path) -> None:
    text = await ok(tools, "write_file", path="src/pkg/mod.py", content="x = 1\ny = 2\n")
    assert text == "Created src/pkg/mod.py (12 bytes, 2 lines)."
    assert (ws / "src/pkg/mod.py").read_text() == "x = 1\ny = 2\n"
    text = await ok(tools, "write_file", path="src/pkg/mod.py", content="z = 3\n")
    assert text.startswith("Overwrote src/pkg/mod.py")
    assert (ws / "src/pkg/mod.py").read_text() == "z = 3\n"


async def test_write_file_refusals(tools: ToolManager, ws: Path, tmp_path: Path) -> None:
    (ws / "dir").mkdir()
    (ws / "file.txt").write_text("")
    (ws / "dangling").symlink_to(tmp_path / "planted.txt")
    assert "is a folder" in await refused(tools, "write_file", path="dir", content="x")
    assert "is a file" in await refused(tools, "write_file", path="file.txt/x", content="x")
    assert "Access denied" in await refused(tools, "write_file", path="../planted.txt", content="x")
    assert "symbolic link" in await refused(tools, "write_file", path="dangling", content="x")
    assert not (tmp_path / "planted.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root creates files for another user")
async def test_files_written_by_root_belong_to_the_workspace_owner(
    tools: ToolManager, ws: Path
) -> None:
    os.chown(ws, 65534, 65534)
    await ok(tools, "write_file", path="new/dir/file.txt", content="x")
    for path in (ws / "new", ws / "new/dir", ws / "new/dir/file.txt"):
        assert path.stat().st_uid == 65534
    # Commands run as that owner, so they can change what the tools wrote.
    text = await ok(tools, "shell", command="echo more >> new/dir/file.txt && id -u")
    assert "65534" in text
    assert (ws / "new/dir/file.txt").read_text() == "xmore\n"


# --------------------------------------------------------------------------- edit_file


async def test_edit_file_replaces_exact_text(tools: ToolManager, ws: Path) -> None:
    (ws / "m.py").write_text("def f():\n    return 1\n\n\ndef g():\n    return 1\n")
    text = await ok(
        tools,
        "edit_file",
        path="m.py",
        old_string="def g():\n    return 1",
        new_string="def g():\n    return 2",
    )
    assert text.startswith("Replaced 1 occurrence in m.py.")
    assert "     6\t    return 2" in text
    assert (ws / "m.py").read_text().endswith("def g():\n    return 2\n")
    text = await ok(
        tools, "edit_file", path="m.py", old_string="return", new_string="yield", replace_all=True
    )
    assert text.startswith("Replaced 2 occurrences")
    assert (ws / "m.py").read_text().count("yield") == 2


async def test_edit_file_refusals(tools: ToolManager, ws: Path) -> None:
    (ws / "m.py").write_text("a = 1\na = 1\na = 1\n")
    many = await refused(tools, "edit_file", path="m.py", old_string="a = 1", new_string="b")
    assert "occurs 3 times" in many
    assert "replace_all=true" in many
    missing = await refused(tools, "edit_file", path="m.py", old_string="zzz", new_string="b")
    assert "was not found in m.py" in missing
    assert "is empty" in await refused(
        tools, "edit_file", path="m.py", old_string="", new_string="b"
    )
    assert "the same" in await refused(
        tools, "edit_file", path="m.py", old_string="a", new_string="a"
    )
    assert "There is no file" in await refused(
        tools, "edit_file", path="nope.py", old_string="a", new_string="b"
    )
    assert (ws / "m.py").read_text() == "a = 1\na = 1\na = 1\n"


# --------------------------------------------------------------------------- list, glob, grep


async def test_list_files_shows_types_and_sizes(tools: ToolManager, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "README.md").write_text("hello")
    (ws / "link").symlink_to("README.md")
    lines = (await ok(tools, "list_files")).splitlines()
    assert lines[0] == "./: 1 folders, 2 files or links"
    assert lines[1].startswith("dir ") and lines[1].endswith("src/")
    assert lines[2].split() == ["file", "5", "README.md"]
    assert lines[3].split() == ["link", "link", "->", "README.md"]
    assert "There is no folder" in await refused(tools, "list_files", path="nope")
    assert "Access denied" in await refused(tools, "list_files", path="..")


async def test_glob_finds_files(tools: ToolManager, ws: Path) -> None:
    for rel in ("a.py", "src/b.py", "src/deep/c.py", "src/d.ts", "src/e.tsx", ".venv/x.py"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text("")
    assert (await ok(tools, "glob", pattern="**/*.py")).splitlines() == [
        "a.py",
        "src/b.py",
        "src/deep/c.py",
    ]
    assert (await ok(tools, "glob", pattern="*.{ts,tsx}", path="src")).splitlines() == [
        "src/d.ts",
        "src/e.tsx",
    ]
    assert (await ok(tools, "glob", pattern=".venv/*.py")).splitlines() == [".venv/x.py"]
    assert "No paths match" in await ok(tools, "glob", pattern="**/*.rs")
    assert "climbs out" in await refused(tools, "glob", pattern="../*")


async def test_glob_caps_its_results(tools: ToolManager, ws: Path) -> None:
    for i in range(520):
        (ws / f"f{i:03}.txt").write_text("")
    lines = (await ok(tools, "glob", pattern="*.txt")).splitlines()
    assert len(lines) == 501
    assert lines[-1].startswith("[more than 500 matches")


async def test_grep_finds_lines(tools: ToolManager, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src/a.py").write_text("import os\nTODO: one\n")
    (ws / "src/b.txt").write_text("todo: two\n")
    (ws / "blob.bin").write_bytes(b"TODO\x00")
    assert (await ok(tools, "grep", pattern="TODO")).splitlines() == [
        "src/a.py:2: TODO: one",
        "[skipped 1 binary file(s) and 0 file(s) over 5 MB]",
    ]
    insensitive = await ok(tools, "grep", pattern="todo", case_insensitive=True, path="src")
    assert insensitive.splitlines() == ["src/a.py:2: TODO: one", "src/b.txt:1: todo: two"]
    only_py = await ok(tools, "grep", pattern="o", glob="*.py")
    assert {line.split(":")[0] for line in only_py.splitlines()} == {"src/a.py"}
    assert "No matches for 'nothing'" in await ok(tools, "grep", pattern="nothing")
    assert "not a valid regular expression" in await refused(tools, "grep", pattern="(")
    assert "Access denied" in await refused(tools, "grep", pattern="x", path="/etc")


async def test_grep_caps_its_matches(tools: ToolManager, ws: Path) -> None:
    (ws / "many.txt").write_text("match\n" * 300)
    lines = (await ok(tools, "grep", pattern="match")).splitlines()
    assert len(lines) == 201
    assert lines[-1] == "[stopped at 200 matches; narrow the pattern or the path]"


# --------------------------------------------------------------------------- per-call workspace


async def test_a_call_can_work_in_another_workspace(
    tools: ToolManager, ws: Path, tmp_path: Path
) -> None:
    other = tmp_path / "session-ws"
    other.mkdir()
    (other / "only-here.txt").write_text("session file\n")
    context = ToolContext(session_id="s1", extra={"workspace": str(other)})
    result = await call(tools, "read_file", context, path="only-here.txt")
    assert result.text == "     1\tsession file"
    shell = await call(tools, "shell", context, command="pwd")
    assert str(other.resolve()) in shell.text
    assert (await call(tools, "read_file", path="only-here.txt")).is_error
