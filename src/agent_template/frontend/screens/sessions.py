"""The sessions screen: list, search, switch, create, rename and delete sessions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from agent_template.frontend.rest import Api, SessionInfo

__all__ = ["SessionsScreen", "age"]


def age(updated_at: float | None, now: float) -> str:
    """How long ago, in a few characters."""
    if updated_at is None:
        return ""
    seconds = max(0.0, now - updated_at)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


class SessionsScreen(ModalScreen[str | None]):
    """Pick a session (Enter); ``ctrl+n`` new, ``ctrl+r`` rename, ``ctrl+d`` delete (twice).

    Dismisses with the chosen session's id, or None.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+r", "rename", "Rename"),
        Binding("ctrl+d", "delete", "Delete"),
    ]

    def __init__(
        self, api: Api, *, current: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self.api = api
        self.current = current
        self.clock = clock
        self.sessions: list[SessionInfo] = []
        self._renaming: str | None = None
        self._delete_armed: str | None = None

    def compose(self) -> Any:
        """Search box, the list, and a hint line."""
        with Vertical(id="sessions-box") as box:
            box.border_title = "Sessions"
            yield Input(placeholder="Search sessions…", id="session-search")
            yield OptionList(id="session-list")
            yield Input(placeholder="New title, then Enter", id="session-rename")
            yield Static(
                "Enter switch · Ctrl+N new · Ctrl+R rename · Ctrl+D delete · Esc back",
                id="sessions-hint",
            )

    def on_mount(self) -> None:
        """Load the list."""
        self.query_one("#session-rename", Input).display = False
        self.reload()

    @work(exclusive=True, group="sessions")
    async def reload(self, query: str | None = None) -> None:
        """Fetch the sessions (matching ``query``) and show them."""
        from agent_template.frontend.connection import ClientError

        try:
            self.sessions = await self.api.sessions(query or None)
        except ClientError as error:
            self.notify(f"{error.message} {error.hint}", severity="error")
            return
        self._show()

    def _show(self) -> None:
        now = self.clock()
        options = self.query_one("#session-list", OptionList)
        options.clear_options()
        for info in self.sessions:
            label = Text()
            label.append("● " if info.session_id == self.current else "  ", "green")
            label.append(info.title or "(untitled)", "bold")
            label.append(f"  {info.session_id}", "dim")
            label.append(f"  {info.message_count} messages", "dim")
            when = age(info.updated_at, now)
            if when:
                label.append(f"  {when}", "dim")
            options.add_option(Option(label, id=info.session_id))
        if self.sessions:
            options.highlighted = 0
        self.query_one("#sessions-hint", Static).update(
            f"{len(self.sessions)} sessions · Enter switch · Ctrl+N new · Ctrl+R rename · "
            "Ctrl+D delete · Esc back"
        )

    def _selected(self) -> str | None:
        options = self.query_one("#session-list", OptionList)
        index = options.highlighted
        if index is None or not self.sessions:
            return None
        return options.get_option_at_index(index).id

    def on_input_changed(self, event: Input.Changed) -> None:
        """Search as you type."""
        if event.input.id == "session-search":
            self.reload(event.value.strip())

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search box switches to the first match; in the rename box, renames."""
        if event.input.id == "session-rename":
            await self._finish_rename(event.value.strip())
            return
        chosen = self._selected()
        if chosen is not None:
            self.dismiss(chosen)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter (or a click) on a session switches to it."""
        if event.option.id is not None:
            self.dismiss(event.option.id)

    async def action_new(self) -> None:
        """Create a session and switch to it."""
        from agent_template.frontend.connection import ClientError

        try:
            info = await self.api.create_session()
        except ClientError as error:
            self.notify(f"{error.message} {error.hint}", severity="error")
            return
        self.dismiss(info.session_id)

    def action_rename(self) -> None:
        """Ask for the highlighted session's new title."""
        chosen = self._selected()
        if chosen is None:
            return
        self._renaming = chosen
        box = self.query_one("#session-rename", Input)
        box.display = True
        box.value = next((s.title or "" for s in self.sessions if s.session_id == chosen), "")
        box.focus()

    async def _finish_rename(self, title: str) -> None:
        from agent_template.frontend.connection import ClientError

        box = self.query_one("#session-rename", Input)
        box.display = False
        target, self._renaming = self._renaming, None
        self.query_one("#session-list", OptionList).focus()
        if target is None or not title:
            return
        try:
            await self.api.rename_session(target, title)
        except ClientError as error:
            self.notify(f"{error.message} {error.hint}", severity="error")
            return
        self.notify(f"Renamed to {title!r}.", timeout=2)
        self.reload(self.query_one("#session-search", Input).value.strip())

    async def action_delete(self) -> None:
        """Delete the highlighted session (press twice to confirm)."""
        from agent_template.frontend.connection import ClientError

        chosen = self._selected()
        if chosen is None:
            return
        if self._delete_armed != chosen:
            self._delete_armed = chosen
            self.notify(f"Press Ctrl+D again to delete {chosen}.", severity="warning")
            return
        self._delete_armed = None
        try:
            await self.api.delete_session(chosen)
        except ClientError as error:
            self.notify(f"{error.message} {error.hint}", severity="error")
            return
        self.notify(f"Deleted {chosen}.", timeout=2)
        self.reload(self.query_one("#session-search", Input).value.strip())

    def action_close(self) -> None:
        """Back without switching."""
        if self._renaming is not None:
            self._renaming = None
            self.query_one("#session-rename", Input).display = False
            return
        self.dismiss(None)
