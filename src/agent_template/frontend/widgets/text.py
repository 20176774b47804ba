"""Widgets that show text which grows: cheap appends, repaints at most every 50 ms."""

from __future__ import annotations

from typing import Any

from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual.timer import Timer
from textual.widgets import Static

__all__ = ["GrowingText", "rich_markdown"]

_REPAINT_S = 0.05


def rich_markdown(text: str) -> RichMarkdown:
    """A Rich Markdown renderable (code blocks highlighted): one cheap widget per message."""
    return RichMarkdown(text, code_theme="monokai", hyperlinks=False)


class GrowingText(Static):
    """Plain text that grows by fragments (tool arguments, reasoning, a subagent's words).

    Appending is O(1); the widget repaints on a short timer, so a burst of fragments costs
    one repaint.
    """

    def __init__(self, text: str = "", **kwargs: Any) -> None:
        super().__init__("", markup=False, **kwargs)
        self._parts: list[str] = [text] if text else []
        self._timer: Timer | None = None
        self._dirty = bool(text)

    def on_mount(self) -> None:
        """Show what was appended before mounting."""
        self._dirty = False
        self.update(Text(self.text))

    @property
    def text(self) -> str:
        """Everything appended so far."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def append(self, fragment: str) -> None:
        """Add a fragment; the screen catches up within 50 ms."""
        if not fragment:
            return
        self._parts.append(fragment)
        self._dirty = True
        if self._timer is None and self.is_mounted:
            self._timer = self.set_timer(_REPAINT_S, self._flush)

    def set_text(self, text: str) -> None:
        """Replace the whole text."""
        self._parts[:] = [text] if text else []
        self._dirty = True
        self._flush()

    def _flush(self) -> None:
        self._timer = None
        if self._dirty and self.is_mounted:
            self._dirty = False
            self.update(Text(self.text))
