"""The MCP client against real servers: the demo server of tests/mcp_servers (stdio, HTTP,
SSE, both protocol eras), the published mcp-server-time and mcp-server-git, and broken ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from agent_template.config import Settings
from agent_template.models import DataPart, ImagePart, ResourcePart, TextPart, ToolCall
from agent_template.services.mcp import (
    ElicitationAnswer,
    ElicitationRequest,
    HttpServerConfig,
    McpConfigError,
    McpManager,
    StdioServerConfig,
    load_mcp_config,
    parse_mcp_config,
    tool_name,
)
from agent_template.services.tool_manager import ToolManager

DEMO = Path(__file__).resolve().parent / "mcp_servers" / "demo.py"
WAIT_S = 20.0  # generous: the machine is shared


def demo(
    state: Path | None = None, *extra: str, name: str = "demo", **options: Any
) -> StdioServerConfig:
    args = (str(DEMO), *(("--state", str(state)) if state else ()), *extra)
    return StdioServerConfig(name=name, command=sys.executable, args=args, **options)


def pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait for something a server process does (it writes files we can only look at)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def call(registry: ToolManager, tool: str, /, **arguments: Any) -> Any:
    return await registry.execute(ToolCall(id="c1", name=tool, arguments=json.dumps(arguments)))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """The records of ``agent_template.mcp``, kept from every console."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("agent_template.mcp")
    handler = Keep(logging.DEBUG)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield records
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


# --------------------------------------------------------------------------- config


def test_config_stdio_http_sse_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / ".mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "git": {"command": "uvx", "args": ["mcp-server-git", 8], "cwd": "repo"},
                    "remote": {"url": "https://example.test/mcp", "headers": {"X-A": "1"}},
                    "old": {"url": "http://127.0.0.1:9/sse", "transport": "sse", "lazy": True},
                    "off": {"type": "stdio", "command": "x", "enabled": False},
                    "slow": {"command": "y", "startup_timeout": 5, "call_timeout": 1.5},
                }
            }
        )
    )
    git, remote, old, off, slow = load_mcp_config(
        path, environ={}, startup_timeout=11, call_timeout=22
    )
    assert git == StdioServerConfig(
        name="git",
        command="uvx",
        args=("mcp-server-git", "8"),
        cwd=tmp_path / "repo",
        startup_timeout=11,
        call_timeout=22,
    )
    assert isinstance(remote, HttpServerConfig) and remote.transport == "http"
    assert remote.headers == {"X-A": "1"}
    assert isinstance(old, HttpServerConfig) and old.transport == "sse" and old.lazy
    assert off.enabled is False
    assert (slow.startup_timeout, slow.call_timeout) == (5.0, 1.5)
    assert load_mcp_config(tmp_path / "missing.json", environ={}) == []


def test_config_expands_variables_in_every_string(tmp_path: Path) -> None:
    data = {
        "mcpServers": {
            "gh": {
                "command": "${BIN:-npx}",
                "args": ["--token=${TOKEN}", "${EMPTY:-fallback}"],
                "env": {"GITHUB_TOKEN": "${TOKEN}"},
            },
            "api": {"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
        }
    }
    environ = {"TOKEN": "s3cret", "HOST": "api.test", "EMPTY": ""}
    gh, api = parse_mcp_config(data, path=tmp_path / "f.json", environ=environ)
    assert isinstance(gh, StdioServerConfig) and isinstance(api, HttpServerConfig)
    assert gh.command == "npx"
    assert gh.args == ("--token=s3cret", "fallback")
    assert gh.env == {"GITHUB_TOKEN": "s3cret"}
    assert api.url == "https://api.test/mcp"
    assert api.headers == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"servers2": {}}', 'no "mcpServers" object'),
        ('{"mcpServers": []}', '"mcpServers" must be an object'),
        ('{"mcpServers": {"a b": {"command": "x"}}}', "may hold only letters, digits"),
        ('{"mcpServers": {"s": {}}}', "server 's': needs \"command\""),
        ('{"mcpServers": {"s": {"command": "x", "url": "http://h"}}}', "not both"),
        ('{"mcpServers": {"s": {"command": "x", "args": "y"}}}', '"args" must be a list'),
        ('{"mcpServers": {"s": {"url": "ftp://h"}}}', "must start with http"),
        ('{"mcpServers": {"s": {"url": "http://h", "transport": "ws"}}}', "is not one of"),
        ('{"mcpServers": {"s": {"command": "x", "call_timeout": 0}}}', "above 0"),
        ('{"mcpServers": {"s": {"command": "x", "lazy": "yes"}}}', "true or false"),
        (
            '{"mcpServers": {"gh": {"command": "x", "env": {"T": "${GH_TOKEN}"}}}}',
            "server 'gh': \"env\".T uses ${GH_TOKEN}, which is not set",
        ),
    ],
)
def test_config_errors_are_one_line_naming_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(content)
    with pytest.raises(McpConfigError) as caught:
        load_mcp_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_tool_names_suit_every_provider() -> None:
    assert tool_name("git", "git_status") == "git__git_status"
    assert tool_name("web", "fetch.page v2") == "web__fetch_page_v2"
    long = tool_name("server", "x" * 100)
    assert len(long) == 64 and long.startswith("server__xxx")
    assert long == tool_name("server", "x" * 100)  # stable
    assert long != tool_name("server", "x" * 99 + "y")
    assert tool_name("a", "b.c", hashed=True) != tool_name("a", "b_c", hashed=True)


def test_importing_the_package_loads_no_sdk() -> None:
    code = (
        "import sys, agent_template\n"
        "from agent_template.services.mcp import McpManager\n"
        "McpManager([])\n"
        "import agent_template.cli_mcp\n"
        "print(sorted(m for m in ('mcp', 'mcp_types', 'httpx2', 'anyio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the demo server


async def test_demo_tools_results_resources_prompts_and_status(
    state: Path, server_log: list[logging.LogRecord], capfd: pytest.CaptureFixture[str]
) -> None:
    questions: list[ElicitationRequest] = []

    async def answer(request: ElicitationRequest) -> ElicitationAnswer:
        questions.append(request)
        return ElicitationAnswer("accept", {"name": "Ada"})

    manager = McpManager([demo(state)], on_elicit=answer)
    registry = ToolManager()
    try:
        await manager.start()
        (status,) = manager.status()
        assert status.state == "ready", status.error
        assert (status.server_name, status.server_version) == ("demo", "1.0.0")
        assert status.protocol_version == "2026-07-28"
        assert status.tools == 9
        assert "tools" in status.capabilities and status.instructions == "A server for tests."
        assert status.as_dict()["state"] == "ready"

        manager.sync(registry)
        names = {t.name for t in registry.tools()}
        assert {"demo__echo", "demo__image", "demo__report", "demo__hang"} <= names
        echo = registry.get("demo__echo")
        assert echo.source == "mcp"
        assert echo.description == "Say the text back."
        assert echo.definition.parameters["required"] == ["text"]

        result = await call(registry, "demo__echo", text="hi there")
        assert (result.is_error, result.content) == (False, "hi there")

        result = await call(registry, "demo__image")
        (image,) = result.content
        assert isinstance(image, ImagePart) and image.media_type == "image/png" and image.data

        result = await call(registry, "demo__report")
        resource, data = result.content
        assert isinstance(resource, ResourcePart)
        assert (resource.uri, resource.mime_type, resource.text) == (
            "demo://report.txt",
            "text/plain",
            "3 rows, all good",
        )
        assert isinstance(data, DataPart) and data.data == {"rows": 3, "ok": True}

        result = await call(registry, "demo__fail")
        assert result.is_error and result.content.endswith("McpToolError: the disk is full")

        result = await registry.execute(ToolCall(id="c2", name="demo__echo", arguments="[1]"))
        assert result.is_error and "must be a JSON object" in result.content

        result = await call(registry, "demo__echo")  # the server checks its schema
        assert result.is_error and "text" in result.content

        result = await call(registry, "demo__ask")
        assert result.content == "hello Ada"
        assert questions[0].server == "demo" and questions[0].message == "What is your name?"
        assert questions[0].requested_schema is not None
        assert "name" in questions[0].requested_schema["properties"]

        resources = {r.uri: r for r in await manager.list_resources()}
        assert set(resources) == {"demo://greeting", "demo://logo"}
        assert resources["demo://greeting"].mime_type == "text/plain"
        (text,) = await manager.read_resource("demo", "demo://greeting")
        assert text.text == "hello from demo"
        (blob,) = await manager.read_resource("demo", "demo://logo")
        assert blob.blob and blob.mime_type == "image/png"

        (prompt,) = await manager.list_prompts()
        assert (prompt.name, [a.name for a in prompt.arguments]) == ("review", ["code"])
        filled = await manager.get_prompt("demo", "review", {"code": "x = 1"})
        assert filled.messages[0].role == "user"
        assert filled.messages[0].content == "Please review this code:\nx = 1"
        (pid,) = pids(state / "starts")
    finally:
        await manager.aclose()
        await manager.aclose()  # harmless twice
    assert manager.status()[0].state == "stopped"
    assert not alive(pid)
    logged = [r.getMessage() for r in server_log if getattr(r, "mcp_server", None) == "demo"]
    assert "demo: demo server starting" in logged
    assert "demo: echo: hi there" in logged
    assert "demo server starting" not in capfd.readouterr().err


async def test_elicitation_without_a_handler_is_declined(state: Path) -> None:
    async with McpManager([demo(state)]) as manager:
        registry = ToolManager()
        manager.sync(registry)
        result = await call(registry, "demo__ask")
        assert (result.is_error, result.content) == (False, "decline")


@pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
async def test_call_timeout_and_cancellation_reach_the_server(state: Path, era: str) -> None:
    extra = ("--legacy",) if era == "2025-11-25" else ()
    async with McpManager([demo(state, *extra, call_timeout=1.0)]) as manager:
        assert manager.status()[0].protocol_version == era
        registry = ToolManager()
        manager.sync(registry)
        assert registry.get("demo__hang").timeout == 1.0
        result = await call(registry, "demo__hang")
        assert result.is_error and "did not finish within 1s and was cancelled" in result.content
        await until(lambda: (state / "hang-cancelled").exists(), "the server to see the cancel")

        hang = registry.get("demo__hang")
        task = asyncio.create_task(hang("{}"))
        await until(lambda: len(pids(state / "hang-started")) == 2, "the second call to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: len(pids(state / "hang-cancelled")) == 2, "the second cancel")
        result = await call(registry, "demo__echo", text="still here")
        assert result.content == "still here"


@pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
async def test_list_changes_refresh_and_crash_restart(state: Path, era: str) -> None:
    extra = ("--legacy",) if era == "2025-11-25" else ()
    manager = McpManager([demo(state, *extra)], restart_base=0.2)
    registry = ToolManager()
    try:
        await manager.start()
        assert manager.status()[0].protocol_version == era
        manager.sync(registry)
        assert await manager.refresh() is False

        # Nothing changed: refresh() must not talk to the server (a stopped one would hang it).
        (pid,) = pids(state / "starts")
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await asyncio.wait_for(manager.refresh(), WAIT_S) is False
        finally:
            os.kill(pid, signal.SIGCONT)

        assert (await call(registry, "demo__grow")).content == "added extra"
        await asyncio.wait_for(manager.wait_for_change(), WAIT_S)
        assert await manager.refresh() is True
        manager.sync(registry)
        assert "demo__extra" in registry
        assert (await call(registry, "demo__extra", x=21)).content == "42"
        assert await manager.refresh() is False

        result = await call(registry, "demo__crash")
        assert result.is_error
        assert result.content == (
            "Tool 'demo__crash' raised McpServerError: MCP server 'demo' went away during the "
            "call (exited with code 3: crashing on purpose); it is being restarted."
        )
        result = await call(registry, "demo__echo", text="back again")  # waits for the restart
        assert (result.is_error, result.content) == (False, "back again")
        status = manager.status()[0]
        assert (status.state, status.restarts) == ("ready", 1)
        assert len(pids(state / "starts")) == 2

        assert await manager.refresh() is True  # the new process has no 'extra'
        manager.sync(registry)
        assert "demo__extra" not in registry and "demo__echo" in registry
    finally:
        await manager.aclose()


async def test_lazy_server_starts_on_first_refresh(state: Path) -> None:
    async with McpManager([demo(state, lazy=True)]) as manager:
        assert manager.status()[0].state == "stopped"
        assert manager.tools() == []
        assert not (state / "starts").exists()
        assert await manager.refresh() is True
        assert manager.status()[0].state == "ready"
        assert "demo__echo" in {t.name for t in manager.tools()}
    assert manager.tools() == []  # closed: its tools are gone
    assert await manager.refresh() is False  # and nothing starts again
    assert manager.status()[0].state == "stopped"
    assert len(pids(state / "starts")) == 1


async def test_broken_servers_do_not_stop_the_good_one(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_SECRET", "opensesame")
    config = tmp_path / "servers.json"
    good = {
        "command": sys.executable,
        "args": [str(DEMO), "--state", str(state)],
        "env": {"SEEN": "${DEMO_SECRET}", "OTHER": "${NOT_SET:-plan b}"},
    }
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "missing": {"command": "no-such-command-here"},
                    "good": good,
                    "dies": {"command": sys.executable, "args": [str(DEMO), "--fail-start"]},
                    "mute": {
                        "command": sys.executable,
                        "args": [str(DEMO), "--silent"],
                        "startup_timeout": 1,
                    },
                    "nowhere": {"url": f"http://127.0.0.1:{_free_port()}/mcp"},
                }
            }
        )
    )
    manager = McpManager.from_settings(Settings(mcp_config=config))
    try:
        await manager.start()
        status = {s.name: s for s in manager.status()}
        assert status["good"].state == "ready"
        assert (status["missing"].state, status["missing"].error) == (
            "failed",
            "command not found: no-such-command-here",
        )
        assert status["dies"].error == "exited with code 1: error: DEMO_TOKEN is not set"
        assert status["mute"].error is not None
        assert status["mute"].error.startswith("timed out after 1 s")
        assert status["nowhere"].error is not None
        assert status["nowhere"].error.startswith("cannot connect to http://127.0.0.1:")
        registry = ToolManager()
        manager.sync(registry)
        assert {t.split("__")[0] for t in (t.name for t in registry.tools())} == {"good"}
        assert (await call(registry, "good__env", name="SEEN")).content == "opensesame"
        assert (await call(registry, "good__env", name="OTHER")).content == "plan b"
        # Only what the entry names reaches a server, not this process's whole environment.
        assert (await call(registry, "good__env", name="DEMO_SECRET")).content == "<unset>"
    finally:
        await manager.aclose()


# --------------------------------------------------------------------------- HTTP and SSE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def web_demo(request: pytest.FixtureRequest, state: Path) -> AsyncIterator[str]:
    """The demo server over HTTP or SSE (``request.param``), its URL."""
    transport = request.param
    port = _free_port()
    command = [sys.executable, str(DEMO), "--transport", transport, "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--state", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(f"the {transport} demo server did not start") from None
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/" + ("mcp" if transport == "http" else "sse")
    finally:
        process.terminate()
        process.wait(timeout=WAIT_S)


@pytest.mark.parametrize("web_demo", ["http", "sse"], indirect=True)
async def test_http_and_sse_servers(web_demo: str, state: Path) -> None:
    transport = "sse" if web_demo.endswith("/sse") else "http"
    config = HttpServerConfig(name="web", url=web_demo, transport=transport)
    async with McpManager([config]) as manager:
        status = manager.status()[0]
        assert (status.state, status.transport, status.server_name) == ("ready", transport, "demo")
        registry = ToolManager()
        manager.sync(registry)
        assert (await call(registry, "web__echo", text="over the wire")).content == "over the wire"

        hang = registry.get("web__hang")
        task = asyncio.create_task(hang("{}"))
        await until(lambda: (state / "hang-started").exists(), "the call to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: (state / "hang-cancelled").exists(), "the server to see the cancel")

        assert (await call(registry, "web__grow")).content == "added extra"
        await asyncio.wait_for(manager.wait_for_change(), WAIT_S)
        assert await manager.refresh() is True
        assert "web__extra" in {t.name for t in manager.tools()}


class _Refuses(BaseHTTPRequestHandler):
    """Every request: 401, as a server without the right token answers."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(401)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "12")
        self.end_headers()
        self.wfile.write(b"unauthorized")

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_http_401_is_the_cause(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp?key=hidden"
        data = {"mcpServers": {"api": {"url": url, "headers": {"Authorization": "Bearer ${T}"}}}}
        (config,) = parse_mcp_config(data, path=tmp_path / "x.json", environ={"T": "tok"})
        async with McpManager([config]) as manager:
            status = manager.status()[0]
        port = server.server_address[1]
        assert status.state == "failed"
        assert status.error == (
            f'HTTP 401 from http://127.0.0.1:{port}/mcp (check the credentials in its "headers")'
        )
        assert "Bearer tok" in _Refuses.seen
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- published servers


async def test_mcp_server_time() -> None:
    config = StdioServerConfig(
        name="time",
        command=sys.executable,
        args=("-m", "mcp_server_time", "--local-timezone", "UTC"),
    )
    async with McpManager([config]) as manager:
        assert manager.status()[0].state == "ready", manager.status()[0].error
        registry = ToolManager()
        manager.sync(registry)
        assert {"time__get_current_time", "time__convert_time"} <= {
            t.name for t in registry.tools()
        }
        result = await call(registry, "time__get_current_time", timezone="Europe/Paris")
        assert not result.is_error, result.content
        text = result.content if isinstance(result.content, str) else result.content[0].text
        assert json.loads(text)["timezone"] == "Europe/Paris"
        result = await call(registry, "time__get_current_time", timezone="Mars/Olympus")
        assert result.is_error


async def test_mcp_server_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "hello.txt").write_text("hello\n")
    config = StdioServerConfig(name="git", command=sys.executable, args=("-m", "mcp_server_git"))
    async with McpManager([config]) as manager:
        assert manager.status()[0].state == "ready", manager.status()[0].error
        names = {t.name for t in manager.tools()}
        assert {"git__git_status", "git__git_diff_unstaged", "git__git_log"} <= names
        registry = ToolManager()
        manager.sync(registry)
        result = await call(registry, "git__git_status", repo_path=str(repo))
        assert not result.is_error, result.content
        content = result.content
        parts = content if isinstance(content, list) else [TextPart(text=content)]
        text = "\n".join(p.text for p in parts if isinstance(p, TextPart))
        assert "hello.txt" in text
        result = await call(registry, "git__no_such_tool", repo_path=str(repo))
        assert result.is_error and "no such tool" in result.content


# --------------------------------------------------------------------------- the CLI


def _cli_config(tmp_path: Path, state: Path) -> Path:
    config = tmp_path / "cli.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "demo": {"command": sys.executable, "args": [str(DEMO), "--state", str(state)]},
                    "broken": {"command": "no-such-command-here"},
                    "later": {"url": "http://127.0.0.1:9/mcp", "enabled": False},
                }
            }
        )
    )
    return config


CLI = "from agent_template.cli_mcp import mcp_app; mcp_app()"


def test_cli_list_as_a_subprocess(tmp_path: Path, state: Path) -> None:
    config = _cli_config(tmp_path, state)
    out = subprocess.run(
        [sys.executable, "-c", CLI, "list", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "demo: ready (stdio, demo 1.0.0, protocol 2026-07-28, 9 tools)"
    assert "  demo__echo — Say the text back." in lines
    assert "broken: failed (stdio): command not found: no-such-command-here" in lines
    assert "later: disabled (http)" in lines
    assert "Traceback" not in out.stdout + out.stderr
    assert "demo server starting" not in out.stdout + out.stderr


def test_cli_test_command(tmp_path: Path, state: Path) -> None:
    from agent_template.cli_mcp import mcp_app

    config = _cli_config(tmp_path, state)
    runner = CliRunner()
    ok = runner.invoke(mcp_app, ["test", "demo", "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "demo: ready (stdio: " in ok.output
    assert "  server: demo 1.0.0" in ok.output
    assert "  protocol: 2026-07-28" in ok.output
    assert "  tools: 9, resources: 2, prompts: 1" in ok.output

    broken = runner.invoke(mcp_app, ["test", "broken", "--config", str(config)])
    assert broken.exit_code == 1
    assert "  cause: command not found: no-such-command-here" in broken.output

    unknown = runner.invoke(mcp_app, ["test", "nope", "--config", str(config)])
    assert unknown.exit_code == 2
    assert "No MCP server is named 'nope'" in unknown.output

    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    invalid = runner.invoke(mcp_app, ["list", "--config", str(bad)])
    assert invalid.exit_code == 2
    assert f"Invalid MCP config {bad}: not valid JSON" in invalid.output
    assert "Traceback" not in ok.output + broken.output + unknown.output + invalid.output

    empty = runner.invoke(mcp_app, ["list", "--config", str(tmp_path / "none.json")])
    assert empty.exit_code == 0 and "No MCP servers are configured" in empty.output
