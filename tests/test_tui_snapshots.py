"""SVG snapshots of the client's main screens (pytest-textual-snapshot).

The screens are built from recorded server frames (real JSON, parsed by the protocol's own
``parse_frame``) fed through the app's frame handler, the code path live frames take, with
fixed ids, times and terminal size so the pictures are reproducible. The same screens against
a live server are exercised by tests/test_tui.py.

Update after a deliberate change: ``pytest tests/test_tui_snapshots.py --snapshot-update``,
then look at the SVGs in tests/__snapshots__/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import work
from textual.pilot import Pilot

from agent_template.api.protocol import parse_frame
from agent_template.frontend.app import AgentClientApp
from agent_template.frontend.connection import ClientError, Connection
from agent_template.frontend.rest import Api, SessionInfo
from agent_template.frontend.screens.sessions import SessionsScreen
from tests.tui_helpers import (
    SID,
    T0,
    frames_approval,
    frames_streaming,
    frames_tasks,
    frames_tools,
)

SIZE = (100, 32)
NOWHERE = "http://127.0.0.1:9"  # never connected: the frames are fed directly


class RecordedApp(AgentClientApp):
    """The client with its link left closed: the test feeds it recorded frames."""

    def __init__(self, *, theme: str | None = None) -> None:
        super().__init__(
            Connection(NOWHERE),
            Api(NOWHERE),
            session_id=SID,
            server_label="localhost:8000",
            theme=theme,
            clock=lambda: T0 + 20.0,
        )

    @work(exclusive=True, group="start")
    async def start(self) -> None:
        """As after a successful connect, without the network."""
        status = self.status.status
        status.link, status.link_detail, status.model = "connected", "as default", "test:offline"
        self.context.limit = 128000
        self.prompt.cursor_blink = False
        self._status()


def feeding(frames: list[str], *keys: str, then: Callable[[Any], None] | None = None) -> Any:
    """A run_before that feeds ``frames``, presses ``keys`` and lets the screen settle."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, RecordedApp)
        await pilot.pause()
        if then is not None:
            then(app)
        for raw in frames:
            await app.on_frame(parse_frame(raw))
        await pilot.pause(0.2)  # the Markdown stream and the text repaint timers
        if keys:
            await pilot.press(*keys)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    return run_before


def with_user(text: str) -> Callable[[Any], None]:
    def add(app: Any) -> None:
        app.chat.add_user(text)

    return add


def test_chat_streaming(snap_compare: Any) -> None:
    run = feeding(frames_streaming(), then=with_user("Write an add function in Python."))
    assert snap_compare(RecordedApp(), terminal_size=SIZE, run_before=run)


def test_chat_streaming_light_theme(snap_compare: Any) -> None:
    run = feeding(frames_streaming(), then=with_user("Write an add function in Python."))
    assert snap_compare(RecordedApp(theme="textual-light"), terminal_size=SIZE, run_before=run)


def test_tool_panels_and_a_nested_subagent(snap_compare: Any) -> None:
    run = feeding(frames_tools(), then=with_user("Where are retries configured?"))
    assert snap_compare(RecordedApp(), terminal_size=SIZE, run_before=run)


def test_approval_prompt(snap_compare: Any) -> None:
    run = feeding(frames_approval(), then=with_user("Run the tests and push."))
    assert snap_compare(RecordedApp(), terminal_size=SIZE, run_before=run)


def test_approval_prompt_light_theme(snap_compare: Any) -> None:
    run = feeding(frames_approval(), then=with_user("Run the tests and push."))
    assert snap_compare(RecordedApp(theme="textual-light"), terminal_size=SIZE, run_before=run)


def test_task_monitor_and_todos(snap_compare: Any) -> None:
    run = feeding(frames_tasks(), "ctrl+t", then=with_user("Plan the client."))
    assert snap_compare(RecordedApp(), terminal_size=SIZE, run_before=run)


class RecordedSessions(SessionsScreen):
    """The sessions screen with a fixed list instead of the server's."""

    @work(exclusive=True, group="sessions")
    async def reload(self, query: str | None = None) -> None:
        self.sessions = [
            SessionInfo("demo_session", "Write the terminal client", T0 - 30, 42),
            SessionInfo("a1b2c3d4", "Fix the flaky test", T0 - 7200, 12),
            SessionInfo("e5f6a7b8", None, T0 - 3 * 86400, 3),
        ]
        self._show()


def test_session_list(snap_compare: Any) -> None:
    def open_sessions(app: Any) -> None:
        app.push_screen(RecordedSessions(app.api, current=SID, clock=lambda: T0))

    assert snap_compare(
        RecordedApp(), terminal_size=SIZE, run_before=feeding([], then=open_sessions)
    )


def test_server_down_screen(snap_compare: Any) -> None:
    error = ClientError(
        "server_unreachable",
        "Cannot reach agent-server at http://127.0.0.1:8000 (connection refused).",
        "Start it with `agent-server`, or run `agent-client --local` to start one for you.",
    )

    def fail(app: Any) -> None:
        app._show_error("Cannot connect", error)

    assert snap_compare(RecordedApp(), terminal_size=SIZE, run_before=feeding([], then=fail))
