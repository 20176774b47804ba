"""The messages of the transcript: the user's, the assistant's (streamed), its reasoning."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets._markdown import MarkdownStream

from agent_template.frontend.clipboard import copy_text
from agent_template.frontend.transcript import Entry, code_blocks
from agent_template.frontend.widgets.text import GrowingText, rich_markdown

__all__ = ["FRAME_S", "AnswerView", "MessageView", "NoticeView", "ReasoningView"]

FRAME_S = 1 / 30  # how often a streaming answer is repainted at most

_COPY_BINDINGS: list[BindingType] = [
    Binding("y", "copy_message", "Copy message"),
    Binding("b", "copy_code", "Copy code block"),
]


class Copyable:
    """A message that copies its text (``y``) and its code blocks (``b``, one per press)."""

    entry: Entry
    _code_index: int = 0

    def copy_message(self) -> str:
        """Copy the message's text; returns it."""
        text = self.entry.text
        copy_text(self.app, text)  # type: ignore[attr-defined]
        self.app.notify("Message copied.", timeout=2)  # type: ignore[attr-defined]
        return text

    def copy_code(self) -> str | None:
        """Copy the next code block of the message (cycling); returns it, None if none."""
        blocks = code_blocks(self.entry.text)
        if not blocks:
            self.app.notify("This message has no code block.", timeout=2)  # type: ignore[attr-defined]
            return None
        block = blocks[self._code_index % len(blocks)]
        self._code_index += 1
        copy_text(self.app, block)  # type: ignore[attr-defined]
        self.app.notify(  # type: ignore[attr-defined]
            f"Code block {(self._code_index - 1) % len(blocks) + 1}/{len(blocks)} copied.",
            timeout=2,
        )
        return block


class MessageView(Copyable, Static):
    """A finished message: one static widget (Rich renders it when shown), cheap to keep."""

    BINDINGS: ClassVar[list[BindingType]] = _COPY_BINDINGS
    can_focus = True

    def __init__(self, entry: Entry, **kwargs: Any) -> None:
        if entry.role == "user":
            body: Any = Text(entry.text)
        else:
            body = rich_markdown(entry.text)
        super().__init__(body, classes=f"message {entry.role}", **kwargs)
        self.entry = entry
        if entry.title:
            self.border_title = entry.title

    def action_copy_message(self) -> None:
        """Copy this message."""
        self.copy_message()

    def action_copy_code(self) -> None:
        """Copy this message's next code block."""
        self.copy_code()


class NoticeView(Static):
    """A one-line notice in the transcript (compaction, an error, a cancelled run)."""

    def __init__(self, text: str, *, kind: str = "info") -> None:
        super().__init__(Text(text), classes=f"notice {kind}")


class AnswerView(Copyable, Vertical):
    """The assistant's answer as it streams: one Markdown widget fed by MarkdownStream, so
    each update re-parses only the document's last block. Deltas are gathered and handed to
    the stream at most 30 times a second: appending a delta costs a list append, and a fast
    model costs no more repaints than a slow one."""

    BINDINGS: ClassVar[list[BindingType]] = _COPY_BINDINGS
    can_focus = True

    def __init__(self, entry: Entry, **kwargs: Any) -> None:
        super().__init__(classes="message assistant streaming", **kwargs)
        self.entry = entry
        self._markdown = Markdown()
        self._stream: MarkdownStream | None = None
        self._pending: list[str] = []
        self._timer: Timer | None = None

    def compose(self) -> Any:
        """The Markdown document."""
        yield self._markdown

    async def write(self, fragment: str) -> None:
        """Append a fragment of the answer (O(1): the screen catches up within 33 ms)."""
        self.entry.parts.append(fragment)
        self._pending.append(fragment)
        if self._timer is None:
            self._timer = self.set_timer(FRAME_S, self._flush)

    async def _flush(self) -> None:
        self._timer = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        stream = self._stream
        if stream is None:
            stream = self._stream = Markdown.get_stream(self._markdown)
        await stream.write(text)

    async def finish(self) -> None:
        """The answer is complete: what is gathered is rendered, then the stream stops."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()
        await self._flush()
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.stop()
        self.remove_class("streaming")

    def action_copy_message(self) -> None:
        """Copy this answer."""
        self.copy_message()

    def action_copy_code(self) -> None:
        """Copy this answer's next code block."""
        self.copy_code()


class ReasoningView(Collapsible):
    """The model's reasoning, folded under a one-line title; expand to read it."""

    def __init__(self, text: str = "") -> None:
        self.body = GrowingText(text, classes="reasoning-text")
        super().__init__(self.body, title="Thinking", collapsed=True, classes="reasoning")

    def append(self, fragment: str) -> None:
        """Add reasoning text."""
        self.body.append(fragment)
