"""Keys and slash commands."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from agent_template.frontend.commands import help_text

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen[None]):
    """The help page; any of Escape, q or F1 closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f1", "dismiss_help", "Close")]

    def compose(self) -> Any:
        """The help text."""
        with VerticalScroll(id="help-box"):
            yield Markdown(help_text())

    def action_dismiss_help(self) -> None:
        """Close the help."""
        self.dismiss(None)
