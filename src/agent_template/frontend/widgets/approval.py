"""The approval prompt: docked above the input, focused when a request comes, impossible to
miss; shows the exact command or arguments; answers with one key."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from agent_template.frontend.widgets.tools import pretty_arguments

__all__ = ["ApprovalPrompt", "Decision", "describe_request"]

Decision = Literal["approve", "deny", "always"]


def describe_request(request: dict[str, Any]) -> str:
    """What the request asks, exactly: the tool, the shell command or the arguments."""
    tool = str(request.get("tool", "tool"))
    raw = request.get("arguments", "{}")
    arguments: Any = raw
    if isinstance(raw, str):
        try:
            arguments = json.loads(raw)
        except ValueError:
            arguments = raw
    lines: list[str] = []
    if request.get("kind") == "question":
        lines.append(f"{tool} asks: {request.get('reason', '')}")
        if request.get("url"):
            lines.append(f"Open: {request['url']}")
        return "\n".join(lines)
    if isinstance(arguments, dict) and isinstance(arguments.get("command"), str):
        lines.append(f"{tool} wants to run:\n  $ {arguments['command']}")
    else:
        lines.append(f"{tool} wants to be called with:")
        lines.append(pretty_arguments(arguments if isinstance(arguments, dict) else str(raw)))
    parts = request.get("parts") or []
    if parts:
        lines.append("Needs approval: " + ", ".join(str(p) for p in parts))
    if request.get("reason"):
        lines.append(f"Why: {request['reason']}")
    return "\n".join(lines)


class ApprovalPrompt(Vertical, can_focus=True):
    """Shows the oldest pending approval request; ``y`` approve, ``n`` deny, ``a`` always."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer('approve')", "Approve", priority=True),
        Binding("n", "answer('deny')", "Deny", priority=True),
        Binding("a", "answer('always')", "Always (this session)", priority=True),
    ]

    class Answered(Message):
        """The user answered a request."""

        def __init__(self, approval_id: str, decision: Decision) -> None:
            super().__init__()
            self.approval_id = approval_id
            self.decision = decision

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request: dict[str, Any] | None = None
        self._body = Static("", classes="approval-body", markup=False)
        self._keys = Static(
            Text.assemble(
                ("[y]", "bold"),
                " approve   ",
                ("[n]", "bold"),
                " deny   ",
                ("[a]", "bold"),
                " always for this session",
            ),
            classes="approval-keys",
        )
        self.display = False

    def compose(self) -> Any:
        """The request and the keys that answer it."""
        yield self._body
        yield self._keys

    def show(self, request: dict[str, Any] | None, pending: int) -> None:
        """Show ``request`` (the oldest pending one) or hide when there is none."""
        self.request = request
        if request is None:
            self.display = False
            return
        self.border_title = "Approval needed" + (f" (1 of {pending})" if pending > 1 else "")
        self._body.update(Text(describe_request(request)))
        self.display = True

    def action_answer(self, decision: Decision) -> None:
        """Answer the shown request."""
        if self.request is not None:
            self.post_message(self.Answered(str(self.request["approval_id"]), decision))
