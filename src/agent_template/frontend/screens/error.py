"""A clear screen for a failure the user must act on: what happened and what to do."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

__all__ = ["ErrorScreen"]

Choice = Literal["retry", "quit"]


class ErrorScreen(ModalScreen[Choice]):
    """Shows a ClientError's message and hint; ``r`` retries, ``q`` quits."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "choose('retry')", "Retry"),
        Binding("q,escape", "choose('quit')", "Quit"),
    ]

    def __init__(self, title: str, message: str, hint: str = "", *, code: str = "") -> None:
        super().__init__()
        self._heading = title
        self._message = message
        self._hint = hint
        self._code = code

    def compose(self) -> Any:
        """The message, the hint, and the two ways forward."""
        with Vertical(id="error-box") as box:
            box.border_title = self._heading
            yield Static(Text(self._message, "bold"), id="error-message")
            if self._hint:
                yield Static(Text(self._hint), id="error-hint")
            if self._code:
                yield Static(Text(f"code: {self._code}", "dim"), id="error-code")
            yield Button("Retry [r]", id="retry", variant="primary")
            yield Button("Quit [q]", id="quit")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """A button answers like its key."""
        self.dismiss("retry" if event.button.id == "retry" else "quit")

    def action_choose(self, choice: Choice) -> None:
        """Close with ``choice``."""
        self.dismiss(choice)
