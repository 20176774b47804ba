"""Running the terminal client against a real server for tests: the server app with a
scripted offline model on a free port, the client's Connection and Api against its URL, and
Pilot waits that poll the app's state (never the clock)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_template.api.app import create_app
from agent_template.frontend.app import AgentClientApp
from agent_template.frontend.connection import Connection
from agent_template.frontend.rest import Api
from agent_template.models import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.providers.offline import TestProvider, TestTurn
from agent_template.services.tool_manager import tool
from tests.server_helpers import serve, server_settings

WAIT_S = 20.0  # generous bound on anything a test waits for
SIZE = (110, 36)

deployed: list[str] = []


@tool
def deploy(target: str) -> str:
    """Deploy the application.

    Args:
        target: where to deploy: staging or prod.
    """
    deployed.append(target)
    return f"deployed to {target}"


@dataclass(slots=True)
class Served:
    """A running server: its base URL and the FastAPI app (for seeding its storage)."""

    url: str
    app: Any

    @property
    def state(self) -> Any:
        return self.app.state.server

    def client(self, **kwargs: Any) -> AgentClientApp:
        """A client app against this server."""
        kwargs.setdefault("server_label", "test-server")
        return AgentClientApp(Connection(self.url), Api(self.url), **kwargs)


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path,
    script: Sequence[TestTurn | str] | Callable[[Any], TestTurn | str] | None = None,
    *,
    ask: Sequence[str] = (),
    delay: float = 0.0,
    **overrides: Any,
) -> AsyncIterator[Served]:
    """A real ``agent-server`` app with the offline model playing ``script``; ``ask``: tools
    whose calls need an approval."""
    if ask:
        policy = tmp_path / "permissions.json"
        policy.write_text(json.dumps({"ask": list(ask)}))
        overrides["permissions_config"] = policy
    settings = server_settings(tmp_path, **overrides)
    model = TestProvider(script, delay=delay)
    app = create_app(settings, model=model, tools=[deploy])
    async with serve(app) as url:
        yield Served(url, app)


async def until(pilot: Any, condition: Callable[[], bool], what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds (fails after WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def connected(pilot: Any, app: AgentClientApp) -> None:
    """Wait until the client is connected and follows its events."""
    await until(pilot, lambda: app.status.status.link == "connected", "the connection")


async def send(pilot: Any, app: AgentClientApp, text: str) -> None:
    """Type ``text`` into the input and press Enter."""
    app.prompt.focus()
    app.prompt.load_text(text)
    await pilot.press("enter")


def stored_conversation(count: int) -> list[Message]:
    """``count`` messages of a plausible conversation (user, assistant with a tool call, tool
    result, assistant...)."""
    out: list[Message] = []
    i = 0
    while len(out) < count:
        out.append(UserMessage(content=f"Question {i}: how do I do thing {i}?"))
        if i % 5 == 4:
            call = ToolCall(
                id=f"c{i}", name="read_file", arguments=json.dumps({"path": f"f{i}.py"})
            )
            out.append(AssistantMessage(content="Let me look.", tool_calls=[call]))
            out.append(
                ToolResultMessage(tool_call_id=call.id, name="read_file", content=f"x = {i}")
            )
        out.append(
            AssistantMessage(
                content=f"Answer {i}: use `thing_{i}()`.\n\n```python\nthing_{i}()\n```\n"
            )
        )
        i += 1
    return out[:count]


async def seed_session(served: Served, session_id: str, count: int, title: str = "") -> None:
    """A session of the local user with ``count`` stored messages."""
    sessions = served.state.sessions
    await sessions.create_session("default", session_id=session_id, title=title or None)
    messages = stored_conversation(count)
    for start in range(0, len(messages), 500):
        await sessions.add_messages(session_id, messages[start : start + 500])


# ----------------------------------------------------------------------- recorded frames
# Frames as the server sends them (the shapes of docs/protocol.md, which tests/test_protocol.py
# checks against the server), with fixed ids and times so that screens are reproducible.

SID = "demo_session"
TID = "3f2a9c1e5b7d4e8fa6c0b2d4e6f8a1c3"
T0 = 1718000000.0


def _task(state: str, **times: float | None) -> dict[str, Any]:
    return {
        "task_id": TID,
        "type": "chat",
        "state": state,
        "session_id": SID,
        "parent_id": None,
        "priority": 1,
        "created_at": T0,
        "started_at": times.get("started_at"),
        "finished_at": times.get("finished_at"),
        "error": None,
    }


def recorded(frames: list[tuple[str, dict[str, Any]]], *, task: bool = True) -> list[str]:
    """The JSON text of stream frames of task TID in session SID, numbered from 1."""
    out: list[str] = []
    for seq, (kind, data) in enumerate(frames, start=1):
        frame: dict[str, Any] = {"type": kind, "data": data, "session_id": SID}
        if task:
            frame.update(task_id=TID, seq=seq, last_seq=seq)
        out.append(json.dumps(frame))
    return out


def frames_streaming() -> list[str]:
    """A turn half-way through its answer: reasoning, then Markdown with a code block."""
    created = json.dumps(
        {
            "type": "task_created",
            "data": _task("running", started_at=T0 + 0.1),
            "session_id": SID,
            "task_id": TID,
        }
    )
    pieces = [
        "The user wants a function. ",
        "I will write one with a docstring.",
    ]
    text = [
        "Here is a **small** function:\n\n",
        "```python\ndef add(a: int, b: int) -> int:\n",
        '    """Add two numbers."""\n    return a + b\n```\n\n',
        "It works for any two integers, and",
    ]
    return [
        created,
        *recorded(
            [("reasoning_data", {"content": p}) for p in pieces]
            + [("stream_data", {"content": t}) for t in text]
            + [("usage", {"usage": {"input_tokens": 1200, "output_tokens": 85, "requests": 1}})]
        ),
    ]


def frames_tools() -> list[str]:
    """A run that read a file and delegated to a subagent, which called a tool itself."""
    args = json.dumps({"path": "src/app.py"})
    sub = {"type": "general", "task": "Find where retries are configured"}
    child = "7b1e0c9a2f3d4c5b8a6e1d0c9b8a7f6e"

    def nested(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        data = {"task_id": child, "call_id": "call_0_1", "agent": "general", "depth": 1}
        return ("subagent_event", {**data, "event": event})

    return recorded(
        [
            ("stream_data", {"content": "Let me look at the code."}),
            ("tool_call_started", {"index": 0, "id": "call_0_0", "name": "read_file"}),
            ("tool_call_arguments", {"index": 0, "arguments_delta": args[:10]}),
            ("tool_call_arguments", {"index": 0, "arguments_delta": args[10:]}),
            (
                "tool_call_finished",
                {"index": 0, "call": {"id": "call_0_0", "name": "read_file", "arguments": args}},
            ),
            (
                "tool_result",
                {
                    "call_id": "call_0_0",
                    "name": "read_file",
                    "content": "1: import asyncio\n2: RETRIES = 3",
                    "is_error": False,
                    "duration_ms": 3.0,
                },
            ),
            ("tool_call_started", {"index": 1, "id": "call_0_1", "name": "subagent"}),
            (
                "tool_call_finished",
                {
                    "index": 1,
                    "call": {"id": "call_0_1", "name": "subagent", "arguments": json.dumps(sub)},
                },
            ),
            nested({"type": "text_delta", "text": "Searching for retry settings. "}),
            nested({"type": "tool_call_started", "index": 0, "id": "c_0", "name": "grep"}),
            nested(
                {
                    "type": "tool_call_finished",
                    "index": 0,
                    "call": {
                        "id": "c_0",
                        "name": "grep",
                        "arguments": json.dumps({"pattern": "RETRIES"}),
                    },
                }
            ),
            nested(
                {
                    "type": "tool_result",
                    "call_id": "c_0",
                    "name": "grep",
                    "content": "src/app.py:2: RETRIES = 3",
                    "is_error": False,
                }
            ),
            nested({"type": "text_delta", "text": "Found it in src/app.py."}),
        ]
    )


def frames_approval() -> list[str]:
    """A shell call that waits for the user's answer."""
    command = json.dumps({"command": "pytest -q && git push"})
    return recorded(
        [
            ("tool_call_started", {"index": 0, "id": "call_1", "name": "shell"}),
            (
                "tool_call_finished",
                {"index": 0, "call": {"id": "call_1", "name": "shell", "arguments": command}},
            ),
            (
                "approval_request",
                {
                    "approval_id": "ap_5d0c2b9e61f84e0fa1b2",
                    "call_id": "call_1",
                    "tool": "shell",
                    "arguments": command,
                    "reason": "shell(git push) needs approval",
                    "parts": ["git push"],
                    "expires_at": T0 + 300,
                    "kind": "tool_call",
                    "requested_schema": None,
                    "url": None,
                },
            ),
        ]
    )


def frames_tasks() -> list[str]:
    """Tasks in several states, their tokens, and a todo list."""
    other = "8b1d0c2e4f6a4b8c9d0e1f2a3b4c5d6e"
    done = _task("completed", started_at=T0 + 0.5, finished_at=T0 + 12.5)
    done.update(task_id=other, created_at=T0 - 100, started_at=T0 - 99.5, finished_at=T0 - 87)
    todo = {
        "items": [
            {"content": "Read the protocol", "status": "completed"},
            {"content": "Write the client", "status": "in_progress"},
            {"content": "Write its docs", "status": "pending"},
        ]
    }
    return [
        json.dumps({"type": "task_completed", "data": done, "session_id": SID, "task_id": other}),
        json.dumps(
            {"type": "task_created", "data": _task("pending"), "session_id": SID, "task_id": TID}
        ),
        json.dumps(
            {
                "type": "task_updated",
                "data": _task("running", started_at=T0 + 1),
                "session_id": SID,
                "task_id": TID,
            }
        ),
        json.dumps({"type": "todo", "data": todo, "session_id": SID}),
        *recorded(
            [("usage", {"usage": {"input_tokens": 3000, "output_tokens": 420, "requests": 1}})]
        ),
    ]
