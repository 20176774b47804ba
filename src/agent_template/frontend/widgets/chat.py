"""The transcript pane: history loaded a page at a time (newest first, older ones as you
scroll up) and the live turns, rendered from the server's stream frames.

History stays cheap however long it grows: each page of stored messages is a
:class:`HistoryPage`, and a page far from the viewport is parked (its widgets removed, its
height kept), so layout and repaint cost what the pages near the screen cost. Scrolling back
near a parked page rebuilds it from the messages it keeps. What arrives live goes into
:class:`LivePage` boxes of a few turns each; a finished box far off screen is parked too (its
widgets hidden, not dropped: they hold what the stored history would lose, such as streamed
tool output)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.containers import Vertical, VerticalScroll
from textual.message import Message as TextualMessage
from textual.timer import Timer
from textual.widget import Widget

from agent_template.api.protocol import ServerFrame
from agent_template.frontend.transcript import Entry, Transcript
from agent_template.frontend.widgets.messages import (
    AnswerView,
    MessageView,
    NoticeView,
    ReasoningView,
)
from agent_template.frontend.widgets.text import GrowingText
from agent_template.frontend.widgets.tools import ToolPanel
from agent_template.models import (
    AssistantMessage,
    Message,
    ReasoningPart,
    ToolResultMessage,
    UserMessage,
    content_text,
)

__all__ = ["ChatView", "HistoryPage", "LivePage", "Turn"]

NEAR_SCREENS = 1.5  # pages within this many screens of the viewport stay built
LIVE_TURNS = 4  # turns per box of live messages
_PLACE_S = 0.1  # pages are parked or rebuilt this long after scrolling settles


@dataclass(slots=True)
class Turn:
    """The live state of one task's answer in the transcript."""

    task_id: str
    page: LivePage
    answer: AnswerView | None = None
    reasoning: ReasoningView | None = None
    by_index: dict[int, ToolPanel] = field(default_factory=dict)
    tools: dict[str, ToolPanel] = field(default_factory=dict)
    done: bool = False


class HistoryPage(Vertical):
    """A page of stored messages; parked (emptied, held at its height) while far off screen."""

    def __init__(self, items: list[tuple[int, Message]], widgets: list[Widget]) -> None:
        super().__init__(classes="history-page")
        self.items = items
        self.parked = False
        self._widgets: list[Widget] | None = widgets

    def compose(self) -> Any:
        """The page's widgets, as built when it was loaded."""
        widgets, self._widgets = self._widgets or [], None
        yield from widgets

    async def park(self) -> None:
        """Drop the widgets and keep the height, so the scroll position stays put."""
        if self.parked:
            return
        self.parked = True
        self.styles.height = self.outer_size.height
        await self.remove_children()

    async def unpark(self) -> None:
        """Rebuild the widgets from the stored messages."""
        if not self.parked:
            return
        self.parked = False
        await self.mount_all(history_widgets(self.items)[0])
        self.styles.height = "auto"


class LivePage(Vertical):
    """Messages that arrived live, a few turns of them; parked by hiding its widgets."""

    def __init__(self) -> None:
        super().__init__(classes="live-page")
        self.turns = 0  # turns begun in this box
        self.waiting = 0  # messages sent from here whose turn has not begun
        self.open = 0  # turns still running
        self.parked = False

    async def park(self) -> None:
        """Hide the widgets and keep the height. A finished answer becomes one widget, as in
        the stored history (its streamed Markdown is a widget per block)."""
        if self.parked or self.open:
            return
        self.parked = True
        self.styles.height = self.outer_size.height
        for child in list(self.children):
            if isinstance(child, AnswerView):
                compact = MessageView(child.entry)
                compact.display = False
                await self.mount(compact, after=child)
                await child.remove()
            else:
                child.display = False

    async def unpark(self) -> None:
        """Show the widgets again."""
        if not self.parked:
            return
        self.parked = False
        for child in self.children:
            child.display = True
        self.styles.height = "auto"


class ChatView(VerticalScroll):
    """The messages of the shown session."""

    class NeedOlder(TextualMessage):
        """The view was scrolled to its top and older messages exist."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transcript = Transcript()
        self.turns: dict[str, Turn] = {}
        self.older: int | None = None  # the `before` cursor of the next older page
        self.loading_older = False
        self._marker = GrowingText("", classes="older-marker")
        self._history = Vertical(classes="history")
        self._live: LivePage | None = None
        self._place_timer: Timer | None = None
        self._placing = False

    def on_mount(self) -> None:
        """Follow the end of the transcript while it grows (until the user scrolls up)."""
        self.anchor()

    def reset(self, session_id: str | None) -> None:
        """Empty the view for another session."""
        self.transcript = Transcript(session_id)
        self.turns.clear()
        self.older = None
        self.loading_older = False
        self.remove_children()
        if self._place_timer is not None:
            self._place_timer.stop()
            self._place_timer = None
        self._marker = GrowingText("", classes="older-marker")
        self._marker.display = False
        # History in a box of its own: a live answer growing below it leaves the box's
        # layout (however many messages it holds) as it was.
        self._history = Vertical(classes="history")
        self._live = None
        self.mount(self._marker, self._history)

    def settle(self) -> None:
        """After a change of width: back within the scroll range (at the end if anchored)."""
        if self.scroll_y < 0 or self.scroll_y > self.max_scroll_y or self.is_anchored:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    # ------------------------------------------------------------------ history

    async def load_page(self, items: list[tuple[int, Message]], older: int | None) -> None:
        """Show a page of history; the first page goes at the end, later ones in front."""
        widgets, entries = history_widgets(items)
        first = not self.transcript.entries() and not self.turns
        self.older = older
        if older is not None:
            self._marker.set_text("↑ older messages: scroll up (or press Home) to load them")
        self._marker.display = older is not None
        if not widgets:
            return
        page = HistoryPage(items, widgets)
        if first:
            for entry in entries:
                self.transcript.add(entry.role, entry.text, title=entry.title)
            await self._history.mount(page)
            self.anchor()
            self.call_after_refresh(self.settle)
            return
        self.transcript.prepend(entries)
        await self._history.mount(page, before=0)
        self.call_after_refresh(self._keep_position, page)

    def _keep_position(self, added: Widget) -> None:
        self.scroll_to(y=self.scroll_y + added.outer_size.height, animate=False, immediate=True)
        self.loading_older = False
        self._place_soon()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Ask for the older page when the top is reached; re-place pages once scrolled."""
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 and old_value > 0:
            self.request_older()
        self._place_soon()

    # ------------------------------------------------------------------ parking

    def _place_soon(self) -> None:
        if self._place_timer is None and self.is_mounted:
            self._place_timer = self.set_timer(_PLACE_S, self._place_pages)

    @property
    def pages(self) -> list[HistoryPage]:
        """The loaded pages of history, oldest first."""
        return [page for page in self._history.children if isinstance(page, HistoryPage)]

    @property
    def live_pages(self) -> list[LivePage]:
        """The boxes of live messages, oldest first."""
        return [page for page in self.children if isinstance(page, LivePage)]

    async def _place_pages(self) -> None:
        """Park the pages far from the viewport and rebuild the parked ones near it."""
        self._place_timer = None
        if self._placing:  # one pass at a time; the running one is followed by another
            self._place_soon()
            return
        self._placing = True
        try:
            await self._place_once()
        finally:
            self._placing = False

    async def _place_once(self) -> None:
        pages: list[HistoryPage | LivePage] = [*self.pages, *self.live_pages[:-1]]
        view = self.content_region
        if len(pages) < 2 or not view.height:
            return
        margin = int(view.height * NEAR_SCREENS)
        top, bottom = view.y - margin, view.bottom + margin
        focused = self.app.focused
        rebuilt_above: list[tuple[Widget, int]] = []
        for page in pages:
            if page.parent is None or not page.is_attached:
                continue  # removed meanwhile: another session is shown
            region = page.region
            if not region.height:
                continue  # not laid out yet
            near = region.bottom > top and region.y < bottom
            if near and page.parked:
                if region.bottom <= view.y:
                    rebuilt_above.append((page, region.height))
                await page.unpark()
            elif not near and not page.parked:
                if focused is not None and page in focused.ancestors:
                    continue
                await page.park()
        if rebuilt_above:
            self.call_after_refresh(self._hold_position, rebuilt_above)

    def _hold_position(self, rebuilt: list[tuple[Widget, int]]) -> None:
        """Pages rebuilt above the viewport at another height than they were parked at (the
        width changed meanwhile): scroll by the difference, so the screen does not jump."""
        delta = sum(page.outer_size.height - height for page, height in rebuilt)
        if delta:
            self.scroll_to(y=self.scroll_y + delta, animate=False, immediate=True)

    def request_older(self) -> None:
        """Post :class:`NeedOlder` if there is an older page and none is loading."""
        if self.older is not None and not self.loading_older:
            self.loading_older = True
            self.post_message(self.NeedOlder())

    # ------------------------------------------------------------------ live

    def _live_page(self, new_turn: bool = False) -> LivePage:
        """The box live messages go in; a new one once the last holds LIVE_TURNS turns."""
        page = self._live
        if page is None or (new_turn and page.turns >= LIVE_TURNS):
            page = self._live = LivePage()
            self.mount(page)
            self._place_soon()
        if new_turn:
            page.turns += 1
        return page

    def add_user(self, text: str) -> None:
        """The user's message, shown as soon as it is sent."""
        entry = self.transcript.add("user", text)
        page = self._live_page(new_turn=True)
        page.waiting += 1
        page.mount(MessageView(entry))
        self.scroll_end(animate=False)
        self.anchor()

    def notice(self, text: str, kind: str = "info") -> None:
        """A notice line in the transcript."""
        self.transcript.add("notice", text)
        self._live_page().mount(NoticeView(text, kind=kind))

    def turn(self, task_id: str) -> Turn:
        """The turn of ``task_id`` (made on its first frame)."""
        turn = self.turns.get(task_id)
        if turn is None:
            page = self._live
            if page is not None and page.waiting:  # the turn of a message sent here
                page.waiting -= 1
            else:  # begun elsewhere: another client of the session
                page = self._live_page(new_turn=True)
            page.open += 1
            turn = self.turns[task_id] = Turn(task_id, page)
        return turn

    async def handle(self, frame: ServerFrame) -> None:
        """Render one stream frame of a task of this session."""
        if frame.task_id is None:
            return
        kind = frame.type
        data = frame.data
        turn = self.turn(frame.task_id)
        panel: ToolPanel | None
        if kind == "stream_data":
            answer = turn.answer
            if answer is None:
                answer = turn.answer = AnswerView(self.transcript.add("assistant"))
                await turn.page.mount(answer)
            await answer.write(str(data.get("content", "")))
        elif kind == "reasoning_data":
            if turn.reasoning is None:
                turn.reasoning = ReasoningView()
                await turn.page.mount(turn.reasoning)
            turn.reasoning.append(str(data.get("content", "")))
        elif kind == "tool_call_started":
            await self._close_answer(turn)
            panel = ToolPanel(str(data.get("id", "")), str(data.get("name", "tool")))
            turn.by_index[int(data.get("index", 0))] = panel
            turn.tools[panel.call_id] = panel
            await turn.page.mount(panel)
        elif kind == "tool_call_arguments":
            panel = turn.by_index.get(int(data.get("index", 0)))
            if panel is not None:
                panel.add_arguments(str(data.get("arguments_delta", "")))
        elif kind == "tool_call_finished":
            call = data.get("call") or {}
            panel = turn.tools.get(str(call.get("id", "")))
            if panel is not None:
                panel.set_arguments(str(call.get("arguments", "")))
        elif kind == "tool_result":
            self._tool_result(turn, data)
        elif kind == "approval_request":
            panel = turn.tools.get(str(data.get("call_id", "")))
            if panel is not None:
                panel.set_status("waiting")
        elif kind == "approval_resolved":
            panel = turn.tools.get(str(data.get("call_id", "")))
            if panel is not None:
                panel.set_status("running")
        elif kind == "subagent_event":
            panel = turn.tools.get(str(data.get("call_id", "")))
            if panel is not None:
                view = panel.subagent(
                    str(data.get("task_id", "")),
                    str(data.get("agent", "agent")),
                    int(data.get("depth", 1)),
                )
                view.handle(dict(data.get("event") or {}))
        elif kind == "queued":
            self.notice(f"Waiting: this session is busy ({data.get('ahead', 0)} ahead).")
        elif kind == "stream_gap":
            self.notice("Part of this answer is no longer kept by the server.", "warning")
        elif kind == "error":
            await self._close_answer(turn)
            self.notice(f"Error ({data.get('code', 'error')}): {data.get('message', '')}", "error")
        elif kind == "stream_complete":
            await self._close_answer(turn)
            if not turn.done:
                turn.done = True
                turn.page.open -= 1
            status = str(data.get("status", "completed"))
            if status != "completed":
                self.notice(f"The run ended: {status}.", "warning")

    def _tool_result(self, turn: Turn, data: dict[str, Any]) -> None:
        panel = turn.tools.get(str(data.get("call_id", "")))
        content = str(data.get("content", ""))
        name = str(data.get("name", "tool"))
        self.transcript.add("tool", content, title=name)
        if panel is not None:
            panel.set_result(
                content,
                is_error=bool(data.get("is_error")),
                duration_ms=float(data.get("duration_ms") or 0.0),
            )

    async def _close_answer(self, turn: Turn) -> None:
        answer, turn.answer = turn.answer, None
        turn.reasoning = None
        if answer is not None:
            await answer.finish()

    @property
    def last_answer(self) -> Entry | None:
        """The newest assistant message, if any."""
        for entry in reversed(self.transcript.entries()):
            if entry.role == "assistant" and entry.text.strip():
                return entry
        return None


def history_widgets(items: list[tuple[int, Message]]) -> tuple[list[Widget], list[Entry]]:
    """Cheap widgets and transcript entries for a page of stored messages."""
    widgets: list[Widget] = []
    entries: list[Entry] = []
    panels: dict[str, ToolPanel] = {}
    for _seq, message in items:
        if isinstance(message, UserMessage):
            entry = Entry("user", [content_text(message.content)])
            widgets.append(MessageView(entry))
            entries.append(entry)
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, list):
                thinking = "".join(
                    p.text for p in message.content if isinstance(p, ReasoningPart) and p.text
                )
                if thinking:
                    widgets.append(ReasoningView(thinking))
            text = content_text(message.content)
            if text.strip():
                entry = Entry("assistant", [text])
                widgets.append(MessageView(entry))
                entries.append(entry)
            for call in message.tool_calls:
                panel = ToolPanel(call.id, call.name, arguments=call.arguments)
                panel.collapsed = True
                panels[call.id] = panel
                widgets.append(panel)
        elif isinstance(message, ToolResultMessage):
            text = content_text(message.content)
            entries.append(Entry("tool", [text], message.name))
            found = panels.get(message.tool_call_id)
            if found is not None:
                found.set_result(text, is_error=message.is_error)
            else:
                widgets.append(MessageView(Entry("tool", [text], message.name)))
    return widgets, entries
