"""The multi-line input: Enter sends, Ctrl+J / Shift+Enter add a line, Up/Down walk the
history, Tab completes slash commands. What is typed stays through reconnects."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from agent_template.frontend.commands import complete

__all__ = ["PromptInput"]

_NEWLINE_KEYS = frozenset({"ctrl+j", "shift+enter", "alt+enter"})


class PromptInput(TextArea):
    """The chat input."""

    class Submitted(Message):
        """The user pressed Enter with some text."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Completed(Message):
        """Tab completion ran: the candidate command names (empty: none)."""

        def __init__(self, candidates: list[str]) -> None:
            super().__init__()
            self.candidates = candidates

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.sent: list[str] = []
        self._index: int | None = None  # position in history while walking it
        self._draft = ""

    def remember(self, text: str) -> None:
        """Add a sent text to the history (no duplicate of the last one)."""
        if text and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._index = None
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        if key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
            return
        if key in _NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if key == "tab" and self.text.startswith("/"):
            event.stop()
            event.prevent_default()
            text, candidates = complete(self.text)
            if text != self.text:
                self.load_text(text)
                self.move_cursor(self.document.end)
            self.post_message(self.Completed(candidates))
            return
        row = self.cursor_location[0]
        if key == "up" and row == 0 and self.sent:
            event.stop()
            event.prevent_default()
            self._walk(-1)
            return
        if key == "down" and row == self.document.line_count - 1 and self._index is not None:
            event.stop()
            event.prevent_default()
            self._walk(1)
            return
        await super()._on_key(event)

    def _walk(self, step: int) -> None:
        if self._index is None:
            if step > 0:
                return
            self._draft = self.text
            self._index = len(self.sent)
        index = self._index + step
        if index < 0:
            return
        if index >= len(self.sent):
            self._index = None
            self.load_text(self._draft)
        else:
            self._index = index
            self.load_text(self.sent[index])
        self.move_cursor(self.document.end)
