"""The status bar: server and link state, model, context use, notices, pending approvals."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

__all__ = ["Status", "StatusBar"]

_LINK_STYLE = {
    "connected": "green",
    "connecting": "yellow",
    "reconnecting": "bold yellow",
    "closed": "bold red",
}


@dataclass(slots=True)
class Status:
    """What the status bar shows."""

    server: str = ""
    link: str = "connecting"
    link_detail: str = ""
    model: str = ""
    session: str = ""
    context_tokens: int = 0
    context_limit: int | None = None
    total_tokens: int = 0
    notice: str = ""
    pending_approvals: int = 0
    running: int = 0
    mouse_released: bool = False


def _tokens(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


class StatusBar(Static):
    """One line at the bottom of the screen."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.status = Status()

    def refresh_status(self) -> None:
        """Repaint from :attr:`status`."""
        s = self.status
        out = Text(no_wrap=True, overflow="ellipsis")
        if s.pending_approvals:
            out.append(f" ⚠ {s.pending_approvals} approval(s) pending ", "bold reverse red")
            out.append(" ")
        out.append(f"● {s.link}", _LINK_STYLE.get(s.link, ""))
        if s.link_detail and s.link != "connected":
            out.append(f" ({s.link_detail})", "dim")
        if s.running:
            out.append(f"  ⟳ {s.running} running", "yellow")
        if s.mouse_released:
            out.append("  MOUSE RELEASED (F2)", "bold magenta")
        if s.model:
            out.append(f"  {s.model}", "cyan")
        if s.context_limit:
            share = s.context_tokens / s.context_limit
            style = "red" if share > 0.9 else "yellow" if share > 0.7 else ""
            out.append(
                f"  ctx {_tokens(s.context_tokens)}/{_tokens(s.context_limit)} ({share:.0%})",
                style,
            )
        elif s.context_tokens:
            out.append(f"  ctx {_tokens(s.context_tokens)}")
        if s.notice:
            out.append(f"  {s.notice}", "italic")
        if s.session:
            out.append(f"  session {s.session}")
        if s.total_tokens:
            out.append(f"  used {_tokens(s.total_tokens)}", "dim")
        if s.server:
            out.append(f"  {s.server}", "dim")
        self.update(out)
