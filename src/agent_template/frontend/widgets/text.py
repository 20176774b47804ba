"""Widgets that show text which grows: cheap appends, repaints at most every 50 ms."""

from __future__ import annotations

from typing import Any, ClassVar

from markdown_it import MarkdownIt
from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual.timer import Timer
from textual.widgets import Static

__all__ = ["GrowingText", "rich_markdown"]

_REPAINT_S = 0.05


class _Markdown(RichMarkdown):
    """Rich's Markdown, parsed by one shared parser: Rich builds a parser per document, and
    setting up its rules costs more than parsing a message."""

    _parser: ClassVar[MarkdownIt | None] = None

    def __init__(self, markup: str) -> None:  # the attributes Rich's own __init__ sets
        parser = _Markdown._parser
        if parser is None:
            parser = _Markdown._parser = MarkdownIt().enable("strikethrough").enable("table")
        self.markup = markup
        self.parsed = parser.parse(markup)
        self.code_theme = "monokai"
        self.justify = None
        self.style = "none"
        self.hyperlinks = False
        self.inline_code_lexer = None
        self.inline_code_theme = "monokai"


def rich_markdown(text: str) -> RichMarkdown:
    """A Rich Markdown renderable (code blocks highlighted): one cheap widget per message."""
    return _Markdown(text)


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
