"""Tool calls in the transcript: one collapsible panel per call, and subagent runs nested
under the call that started them."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Collapsible, Static

from agent_template.frontend.widgets.text import GrowingText

__all__ = ["SubagentView", "ToolPanel", "pretty_arguments"]

_TITLE_ARGS = 60


def pretty_arguments(arguments: str | dict[str, Any]) -> str:
    """Arguments as indented JSON when they parse, else the text as it came."""
    if isinstance(arguments, dict):
        return json.dumps(arguments, indent=2, ensure_ascii=False)
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def _summary(arguments: str) -> str:
    try:
        value = json.loads(arguments)
    except ValueError:
        return ""
    if isinstance(value, dict):
        if isinstance(value.get("command"), str):
            text = value["command"]
        else:
            text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
    else:
        text = json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= _TITLE_ARGS else text[: _TITLE_ARGS - 1] + "…"


class ToolPanel(Collapsible):
    """A tool call: its arguments (streamed as they arrive), then its result or error, live."""

    def __init__(self, call_id: str, name: str, *, arguments: str = "") -> None:
        self.call_id = call_id
        self.tool_name = name
        self.status = "running"
        self.arguments = GrowingText(arguments, classes="tool-args")
        self.result = Static("", classes="tool-result", markup=False)
        self.result.display = False
        self.children_box = Vertical(classes="tool-children")
        self.children_box.display = False
        self.subagents: dict[str, SubagentView] = {}
        super().__init__(
            self.arguments,
            self.result,
            self.children_box,
            title=self._title_text(arguments),
            collapsed=False,
            classes="tool running",
        )

    def _watch_collapsed(self, collapsed: bool) -> None:
        # Folding a panel never moves the view: the reader may be elsewhere in the transcript.
        self._update_collapsed(collapsed)
        self.post_message(self.Collapsed(self) if collapsed else self.Expanded(self))

    def _title_text(self, arguments: str) -> str:
        marks = {"running": "…", "waiting": "⏸ awaiting approval", "ok": "✓", "error": "✗"}
        summary = _summary(arguments)
        head = f"{self.tool_name}({summary})" if summary else self.tool_name
        return f"{head}  {marks.get(self.status, self.status)}"

    def add_arguments(self, fragment: str) -> None:
        """More of the arguments' JSON text."""
        self.arguments.append(fragment)

    def set_arguments(self, arguments: str) -> None:
        """The call's complete arguments: shown indented."""
        self.arguments.set_text(pretty_arguments(arguments))
        self.title = self._title_text(arguments)

    def set_status(self, status: str) -> None:
        """``running``, ``waiting`` (for an approval), ``ok`` or ``error``."""
        self.remove_class(self.status)
        self.status = status
        self.add_class(status)
        self.title = self._title_text(self.arguments.text)

    def set_result(self, content: str, *, is_error: bool, duration_ms: float = 0.0) -> None:
        """The tool's result (or error). A successful call folds to its title line."""
        self.set_status("error" if is_error else "ok")
        label = "error" if is_error else "result"
        timing = f" in {duration_ms:.0f} ms" if duration_ms else ""
        self.result.update(Text(f"{label}{timing}:\n{content}"))
        self.result.display = True
        if not is_error and not self.subagents:
            self.collapsed = True

    def subagent(self, task_id: str, agent: str, depth: int) -> SubagentView:
        """The view of a subagent run this call started (made on its first event)."""
        view = self.subagents.get(task_id)
        if view is None:
            view = self.subagents[task_id] = SubagentView(task_id, agent, depth)
            self.children_box.display = True
            self.children_box.mount(view)
        return view


class SubagentView(Vertical):
    """A subagent's run: its words and its own tool calls (which may nest further runs)."""

    def __init__(self, task_id: str, agent: str, depth: int) -> None:
        self.text = GrowingText(classes="subagent-text")
        self.tools_box = Vertical(classes="tool-children")
        super().__init__(self.text, self.tools_box, classes="subagent")
        self.task_id = task_id
        self.border_title = f"↳ {agent} (depth {depth})"
        self.tools: dict[str, ToolPanel] = {}
        self._by_index: dict[int, ToolPanel] = {}
        self._ready = False
        self._backlog: list[dict[str, Any]] = []

    def on_mount(self) -> None:
        """Show the events that came before the view was on screen."""
        self._ready = True
        backlog, self._backlog = self._backlog, []
        for event in backlog:
            self.handle(event)

    def handle(self, event: dict[str, Any]) -> ToolPanel | None:
        """Show one event of the child's run; returns the panel of a call it concerns."""
        if not self._ready:
            self._backlog.append(event)
            return None
        kind = event.get("type")
        panel: ToolPanel | None
        if kind == "text_delta":
            self.text.append(str(event.get("text", "")))
        elif kind == "tool_call_started":
            panel = ToolPanel(str(event.get("id", "")), str(event.get("name", "tool")))
            self.tools[panel.call_id] = panel
            self._by_index[int(event.get("index", 0))] = panel
            self.tools_box.mount(panel)
            return panel
        elif kind == "tool_call_delta":
            panel = self._by_index.get(int(event.get("index", 0)))
            if panel is not None:
                panel.add_arguments(str(event.get("arguments_delta", "")))
            return panel
        elif kind == "tool_call_finished":
            call = event.get("call") or {}
            panel = self.tools.get(str(call.get("id", "")))
            if panel is not None:
                panel.set_arguments(str(call.get("arguments", "")))
            return panel
        elif kind == "tool_result":
            panel = self.tools.get(str(event.get("call_id", "")))
            if panel is not None:
                panel.set_result(
                    str(event.get("content", "")),
                    is_error=bool(event.get("is_error")),
                    duration_ms=float(event.get("duration_ms") or 0.0),
                )
            return panel
        elif kind == "subagent":
            panel = self.tools.get(str(event.get("call_id", "")))
            if panel is not None:
                child = panel.subagent(
                    str(event.get("task_id", "")),
                    str(event.get("agent", "agent")),
                    int(event.get("depth", 1)),
                )
                child.handle(dict(event.get("event") or {}))
            return panel
        elif kind == "done":
            status = str(event.get("status", "completed"))
            self.add_class(f"done-{status}")
            self.border_subtitle = status
        elif kind == "error":
            self.text.append(f"\n[error] {event.get('message', '')}")
        return None
