"""The Textual app of ``agent-client``: chat with live streaming, tool panels, approvals,
the task monitor and todos, sessions. It talks to ``agent-server`` only through
:class:`~agent_template.frontend.connection.Connection` (WebSocket) and
:class:`~agent_template.frontend.rest.Api` (REST).

``run()`` returns the session's transcript as plain text, for the terminal's scrollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from agent_template.api.protocol import ServerFrame
from agent_template.frontend.clipboard import copy_text
from agent_template.frontend.commands import chat_text, parse, run_command
from agent_template.frontend.connection import ClientError, Connection, LinkChanged, LinkState
from agent_template.frontend.rest import Api
from agent_template.frontend.screens.error import ErrorScreen
from agent_template.frontend.screens.help import HelpScreen
from agent_template.frontend.screens.sessions import SessionsScreen
from agent_template.frontend.state import Approvals, ContextUse, nested_approval
from agent_template.frontend.transcript import Entry, code_blocks, entries_from_history
from agent_template.frontend.widgets.approval import ApprovalPrompt
from agent_template.frontend.widgets.chat import ChatView
from agent_template.frontend.widgets.prompt import PromptInput
from agent_template.frontend.widgets.status import StatusBar
from agent_template.frontend.widgets.tasks import TaskPanel, TodoPanel

__all__ = ["AgentClientApp"]

PAGE = 50  # messages per page of older history
FIRST_PAGE = 30  # messages shown when a session opens (more than a screen holds)
_TASK_FRAMES = frozenset({"task_created", "task_updated", "task_completed"})
_QUIET = frozenset({"heartbeat", "pong", "subscribed", "unsubscribed", "hello"})
DARK, LIGHT = "textual-dark", "textual-light"


class AgentClientApp(App[str]):
    """The terminal client.

    Args:
        connection: the WebSocket link (opened by the app at mount).
        api: the REST client.
        session_id: the session to show first (None: a new one with the first message).
        server_label: how the status bar names the server.
        theme: a Textual theme name (``textual-dark``, ``textual-light``...).
        clock: the time source of elapsed times (fixed in screen tests).
    """

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))
    TITLE = "agent-client"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+s", "sessions", "Sessions"),
        Binding("ctrl+t", "toggle_panel", "Tasks"),
        Binding("ctrl+y", "copy_last", "Copy answer", priority=True),
        Binding("ctrl+b", "copy_code", "Copy code", priority=True),
        Binding("ctrl+g", "focus_approval", "Approval", show=False),
        Binding("f1", "help", "Help"),
        Binding("f2", "toggle_mouse", "Mouse mode"),
        Binding("f3", "toggle_theme", "Theme"),
        Binding("escape", "focus_input", "Input", show=False),
        Binding("home", "older", "Older", show=False),
    ]

    def __init__(
        self,
        connection: Connection,
        api: Api,
        *,
        session_id: str | None = None,
        server_label: str = "",
        theme: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.connection = connection
        self.api = api
        self.session_id = session_id
        self.clock = clock
        self.model: str | None = None  # the model asked for new turns (/model NAME)
        self.approvals = Approvals()
        self.context = ContextUse()
        self._initial_theme = theme
        self._code_index = 0
        self._mouse_released = False
        self._quitting = False
        self.chat = ChatView(id="chat")
        self.tasks = TaskPanel(id="tasks", clock=clock)
        self.todos = TodoPanel(id="todos")
        self.approval = ApprovalPrompt(id="approval")
        self.prompt = PromptInput(id="input")
        self.hint = Static("", id="hint")
        self.status = StatusBar(id="status")
        self.status.status.server = server_label

    # ------------------------------------------------------------------ layout

    def compose(self) -> Any:
        """Transcript and side panel, the approval prompt, the input, the status bar."""
        with Horizontal(id="main"):
            yield self.chat
            with Vertical(id="side"):
                yield self.tasks
                yield self.todos
        yield self.approval
        yield self.hint
        yield self.prompt
        yield self.status

    def on_mount(self) -> None:
        """Theme, then connect (a failure gets its own screen)."""
        if self._initial_theme:
            if self._initial_theme in self.available_themes:
                self.theme = self._initial_theme
            else:
                names = ", ".join(sorted(self.available_themes))
                self.notify(f"Unknown theme {self._initial_theme!r}; themes: {names}.")
        self.query_one("#side").display = False
        self.hint.display = False
        self.chat.reset(self.session_id)
        self.prompt.focus()
        self._status()
        self.start()

    def refresh_status(self) -> None:
        """Repaint the status bar from the app's state."""
        self._status()

    def _status(self) -> None:
        s = self.status.status
        s.session = self.session_id or "(new)"
        s.context_tokens = self.context.last_request
        s.context_limit = self.context.limit
        s.total_tokens = self.context.total
        s.pending_approvals = len(self.approvals)
        s.running = len(self.tasks.live)
        s.mouse_released = self._mouse_released
        if self.model:
            s.model = self.model
        self.status.refresh_status()

    # ------------------------------------------------------------------ start-up

    @work(exclusive=True, group="start")
    async def start(self) -> None:
        """Open the connection, show the session, load pending approvals, follow events."""
        self.status.status.link = str(LinkState.CONNECTING)
        self._status()
        try:
            hello = await self.connection.open()
        except ClientError as error:
            self._show_error("Cannot connect", error)
            return
        self.status.status.link = str(LinkState.CONNECTED)
        self.status.status.link_detail = f"as {hello.user_id}"
        self._status()
        self.follow_events()
        self.load_models()
        if self.session_id is not None:
            await self.switch_session(self.session_id)
        await self.load_approvals()

    def _show_error(self, title: str, error: ClientError) -> None:
        async def chosen(choice: str | None) -> None:
            if choice == "retry":
                self.start()
            else:
                await self._leave(self.chat.transcript.render())

        self.status.status.link = "closed"
        self.status.status.link_detail = error.code
        self.status.refresh_status()
        self.push_screen(ErrorScreen(title, error.message, error.hint, code=error.code), chosen)

    @work(group="models")
    async def load_models(self) -> None:
        """Provider, model and context limit, for the status bar."""
        try:
            info = await self.api.models()
        except ClientError:
            return
        provider, model = info.get("provider"), info.get("model")
        if model and not self.model:
            self.status.status.model = f"{provider}:{model}" if provider else str(model)
        limit = info.get("context_limit")
        if isinstance(limit, int) and limit > 0:
            self.context.limit = limit
        if info.get("offline"):
            self.status.status.notice = "offline model"
        self._status()

    async def load_approvals(self) -> None:
        """Pending approvals from the server, so none is missed after a reconnect."""
        try:
            requests = await self.api.approvals()
        except ClientError as error:
            self.notify(f"Could not load pending approvals: {error.message}", severity="warning")
            return
        for request in requests:
            self._add_approval(request)

    # ------------------------------------------------------------------ events

    @work(exclusive=True, group="events")
    async def follow_events(self) -> None:
        """Consume the connection's frames and link changes until it closes."""
        async for item in self.connection.events():
            if isinstance(item, LinkChanged):
                await self._link_changed(item)
            else:
                try:
                    await self.on_frame(item)
                except Exception as error:  # one bad frame must not stop the client
                    self.log.error(f"frame {item.type} not shown: {error!r}")

    async def _link_changed(self, change: LinkChanged) -> None:
        s = self.status.status
        s.link = str(change.state)
        s.link_detail = change.detail
        if change.state is LinkState.RECONNECTING:
            retry = f", retrying in {change.retry_in_s:.0f}s" if change.retry_in_s else ""
            s.link_detail = f"{change.detail} (attempt {change.attempt}{retry})".strip()
        self._status()
        if change.state is LinkState.CONNECTED and change.attempt:
            self.notify("Reconnected.", timeout=3)
            await self.load_approvals()
        elif (
            change.state is LinkState.CLOSED
            and self.connection.state is LinkState.CLOSED  # not a failed try since retried
            and not self._quitting
        ):
            error = ClientError(
                "connection_closed",
                change.detail or "The connection to the server was closed.",
                "Check that agent-server is running, then retry.",
            )
            self._show_error("Disconnected", error)

    async def on_frame(self, frame: ServerFrame) -> None:
        """Route one server frame to the widgets that show it."""
        kind = frame.type
        if kind in _QUIET:
            return
        data = frame.data
        mine = frame.session_id is None or frame.session_id == self.session_id
        if kind == "session_created":
            if self.session_id is None and frame.request_id is not None:
                self.session_id = frame.session_id
                self.chat.transcript.session_id = frame.session_id
                self._status()
            return
        if kind == "approval_request":
            self._add_approval({**data, "session_id": frame.session_id, "task_id": frame.task_id})
        elif kind == "subagent_event":
            request = nested_approval(data)
            if request is not None:
                self._add_approval({**request, "session_id": frame.session_id})
        elif kind in ("approval_resolved", "approval_answered"):
            self._resolve_approval(str(data.get("approval_id", "")))
        if kind in _TASK_FRAMES:
            if mine:
                self.tasks.upsert(data)
                self._status()
            return
        if kind == "usage" and mine:
            tokens = self.context.add(frame.task_id, dict(data.get("usage") or {}))
            if frame.task_id:
                self.tasks.add_tokens(frame.task_id, tokens)
            self._status()
        elif kind == "response_finished" and mine and not self.model:
            message = data.get("message") or {}
            if message.get("model"):
                provider = message.get("provider")
                name = message["model"]
                self.status.status.model = f"{provider}:{name}" if provider else str(name)
                self._status()
        elif kind == "todo":
            if mine:
                self.todos.set_items(list(data.get("items") or []))
            return
        elif kind == "compaction":
            if mine:
                self._compacted(data)
            return
        elif kind == "session_updated":
            return
        elif kind == "session_deleted":
            if frame.session_id == self.session_id:
                self.chat.notice("This session was deleted.", "warning")
            return
        elif kind == "error" and frame.task_id is None:
            self.notify(
                f"{data.get('message', 'Error')} ({data.get('code', '')})", severity="error"
            )
            return
        if frame.task_id is not None and mine:
            await self.chat.handle(frame)

    def _compacted(self, data: dict[str, Any]) -> None:
        before, after = data.get("tokens_before"), data.get("tokens_after")
        text = f"Context compacted: {before} → {after} tokens ({data.get('strategy', '')})."
        self.status.status.notice = f"compacted {before}→{after}"
        self.chat.notice(text)
        self._status()

    # ------------------------------------------------------------------ approvals

    def _add_approval(self, request: dict[str, Any]) -> None:
        if not self.approvals.add(request):
            return
        self._show_approval()
        self.bell()
        if not self.approval.has_focus and self.prompt.text.strip():
            self.notify("An approval is waiting: Ctrl+G to answer.", severity="warning")

    def _resolve_approval(self, approval_id: str) -> None:
        if approval_id:
            self.approvals.resolve(approval_id)
            self._show_approval()

    def _show_approval(self) -> None:
        request = self.approvals.oldest()
        had_focus = self.approval.has_focus
        self.approval.show(request, len(self.approvals))
        if request is not None and not self.prompt.text.strip():
            self.approval.focus()
        elif request is None and had_focus:
            self.prompt.focus()
        self._status()

    @on(ApprovalPrompt.Answered)
    async def _answered(self, event: ApprovalPrompt.Answered) -> None:
        await self.answer_approval(event.approval_id, event.decision)

    async def answer_approval(self, approval_id: str, decision: Any) -> None:
        """Send an answer; the request leaves the queue at once (and comes back if sending
        fails)."""
        request = self.approvals.resolve(approval_id)
        self._show_approval()
        if request is None:
            return
        try:
            await self.connection.approve(approval_id, decision)
        except ClientError as error:
            self.approvals.reopen(request)
            self._show_approval()
            self.notify(f"{error.message} {error.hint}", severity="error")

    # ------------------------------------------------------------------ sessions

    async def switch_session(self, session_id: str) -> None:
        """Show ``session_id``: its latest page of history, todos and tasks, and follow it."""
        old, self.session_id = self.session_id, session_id
        if old and old != session_id:
            with contextlib.suppress(ClientError):
                await self.connection.unsubscribe(old)
        self.chat.reset(session_id)
        self.tasks.clear_rows()
        self.todos.set_items([])
        self.context = ContextUse(limit=self.context.limit)
        self._status()
        try:
            page = await self.api.history(session_id, limit=FIRST_PAGE)
        except ClientError as error:
            self.chat.notice(f"{error.message} {error.hint}", "error")
            return
        await self.chat.load_page(page.items, page.older)
        try:
            await self.connection.subscribe(session_id)
        except ClientError as error:
            self.notify(f"Live updates are off: {error.message}", severity="warning")
        self.load_side(session_id)

    @work(group="side")
    async def load_side(self, session_id: str) -> None:
        """The session's todos and tasks."""
        try:
            todos = await self.api.todos(session_id)
            tasks = await self.api.tasks(session_id=session_id)
        except ClientError:
            return
        if session_id == self.session_id:
            self.todos.set_items(todos)
            for task in tasks:
                self.tasks.upsert(task)
            self._status()

    @on(TaskPanel.CancelRequested)
    async def _cancel_task(self, event: TaskPanel.CancelRequested) -> None:
        try:
            await self.connection.cancel(event.task_id)
        except ClientError as error:
            self.notify(f"{error.message} {error.hint}", severity="error")
            return
        self.notify(f"Cancelling {event.task_id[:8]}…", timeout=2)

    @on(ChatView.NeedOlder)
    def _need_older(self) -> None:
        self.load_older()

    @work(group="older")
    async def load_older(self) -> None:
        """The page before the oldest shown."""
        session_id, before = self.session_id, self.chat.older
        if session_id is None or before is None:
            self.chat.loading_older = False
            return
        try:
            page = await self.api.history(session_id, before=before, limit=PAGE)
        except ClientError as error:
            self.chat.loading_older = False
            self.notify(error.message, severity="error")
            return
        if session_id == self.session_id:
            await self.chat.load_page(page.items, page.older)

    def action_older(self) -> None:
        """Scroll to the top of the transcript and load the older page."""
        self.chat.scroll_home(animate=False)
        self.chat.request_older()

    def action_sessions(self) -> None:
        """Open the sessions screen."""

        async def chosen(session_id: str | None) -> None:
            if session_id is not None:
                await self.switch_session(session_id)

        self.push_screen(
            SessionsScreen(self.api, current=self.session_id, clock=self.clock), chosen
        )

    # ------------------------------------------------------------------ input

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        self.hint.display = False
        command = parse(event.text)
        if command is not None:
            self.prompt.remember(event.text.strip())
            self.prompt.load_text("")
            await run_command(self, command)
            return
        await self.send(chat_text(event.text))

    async def send(self, text: str) -> None:
        """Send a chat message; the input is cleared only once the message is on its way."""
        try:
            await self.connection.chat(text, session_id=self.session_id, model=self.model)
        except ClientError as error:
            self.notify(f"{error.message} {error.hint}", severity="error")
            return
        self.prompt.remember(text)
        self.prompt.load_text("")
        self.chat.add_user(text)

    @on(PromptInput.Completed)
    def _completed(self, event: PromptInput.Completed) -> None:
        if len(event.candidates) > 1:
            self.hint.update("  ".join(f"/{name}" for name in event.candidates))
            self.hint.display = True
        else:
            self.hint.display = False

    # ------------------------------------------------------------------ actions

    def action_focus_input(self) -> None:
        """Back to the input."""
        self.prompt.focus()

    def action_focus_approval(self) -> None:
        """Go to the pending approval."""
        if len(self.approvals):
            self.approval.focus()

    def action_help(self) -> None:
        """Keys and commands."""
        self.push_screen(HelpScreen())

    def action_toggle_panel(self) -> None:
        """Show or hide the tasks and todos panel."""
        side = self.query_one("#side")
        side.display = not side.display
        self.tasks.render_rows()
        self.call_after_refresh(self.chat.settle)

    def _last_answer(self) -> Entry | None:
        entry = self.chat.last_answer
        if entry is None:
            self.notify("No answer to copy yet.", timeout=2)
        return entry

    def action_copy_last(self) -> None:
        """Copy the last answer (OSC 52 and the system clipboard)."""
        entry = self._last_answer()
        if entry is not None:
            copy_text(self, entry.text)
            self.notify("Answer copied.", timeout=2)

    def action_copy_code(self) -> None:
        """Copy a code block of the last answer (press again for the next one)."""
        entry = self._last_answer()
        if entry is None:
            return
        blocks = code_blocks(entry.text)
        if not blocks:
            self.notify("The last answer has no code block.", timeout=2)
            return
        index = self._code_index % len(blocks)
        self._code_index += 1
        copy_text(self, blocks[index])
        self.notify(f"Code block {index + 1}/{len(blocks)} copied.", timeout=2)

    def action_toggle_mouse(self) -> None:
        """Release the mouse to the terminal (its own selection works) or take it back."""
        self._mouse_released = not self._mouse_released
        driver = self._driver
        method = "_disable_mouse_support" if self._mouse_released else "_enable_mouse_support"
        switch = getattr(driver, method, None)
        if callable(switch):
            switch()
        if self._mouse_released:
            self.notify("Mouse released: select text with the terminal. F2 takes it back.")
        self._status()

    def action_toggle_theme(self) -> None:
        """Dark or light."""
        self.theme = LIGHT if self.current_theme.dark else DARK

    async def action_quit(self) -> None:
        """Leave; ``run()`` returns the whole session's transcript."""
        self._quitting = True
        text = await self.full_transcript()
        await self._leave(text)

    async def _leave(self, text: str) -> None:
        """Close the link and the HTTP client, then exit with ``text``."""
        self._quitting = True
        await self.connection.close()
        await self.api.aclose()
        self.exit(text)

    async def full_transcript(self, timeout_s: float = 5.0) -> str:
        """The transcript with the pages not loaded yet fetched first (within ``timeout_s``)."""
        transcript = self.chat.transcript
        before, session_id = self.chat.older, self.session_id
        try:
            async with asyncio.timeout(timeout_s):
                while before is not None and session_id is not None:
                    page = await self.api.history(session_id, before=before, limit=200)
                    transcript.prepend(entries_from_history(page.items))
                    before = page.older
        except (ClientError, TimeoutError):
            pass
        self.chat.older = before
        return transcript.render()
