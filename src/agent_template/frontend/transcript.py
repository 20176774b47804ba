"""The plain-text transcript of a session, printed to the terminal's scrollback on exit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from agent_template.models import (
    AssistantMessage,
    Message,
    ToolResultMessage,
    UserMessage,
    content_text,
)

__all__ = ["Entry", "Transcript", "code_blocks", "entries_from_history"]

_FENCE: Final = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.DOTALL | re.MULTILINE)
_LABELS: Final = {"user": "You", "assistant": "Assistant", "tool": "Tool", "notice": "--"}


@dataclass(slots=True)
class Entry:
    """One message of the transcript; a streamed answer grows by fragments (cheap appends)."""

    role: str
    parts: list[str] = field(default_factory=list)
    title: str = ""

    @property
    def text(self) -> str:
        """The whole text (joined once per call; the parts stay as they came)."""
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def render(self) -> str:
        """The entry as plain Markdown-ish text."""
        label = _LABELS.get(self.role, self.role)
        head = f"{label} ({self.title})" if self.title else label
        return f"## {head}\n\n{self.text.rstrip()}\n"


class Transcript:
    """A session's messages in order; older pages are put in front as they are loaded."""

    def __init__(self, session_id: str | None = None) -> None:
        self.session_id = session_id
        self._older: list[list[Entry]] = []  # pages put in front, newest page last
        self._entries: list[Entry] = []

    def prepend(self, entries: list[Entry]) -> None:
        """Put an older page of messages in front."""
        self._older.append(entries)

    def add(self, role: str, text: str = "", *, title: str = "") -> Entry:
        """Append a message; returns it so a streamed answer can grow."""
        entry = Entry(role, [text] if text else [], title)
        self._entries.append(entry)
        return entry

    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        out: list[Entry] = []
        for page in reversed(self._older):
            out += page
        return out + self._entries

    def render(self) -> str:
        """The whole transcript as plain text (empty when nothing was said)."""
        entries = [e for e in self.entries() if e.text.strip()]
        if not entries:
            return ""
        head = f"# Session {self.session_id}\n\n" if self.session_id else ""
        return head + "\n".join(entry.render() for entry in entries)


def code_blocks(markdown: str) -> list[str]:
    """The fenced code blocks of a Markdown text, without their fences."""
    return [match.group(2).rstrip("\n") for match in _FENCE.finditer(markdown)]


def entries_from_history(items: list[tuple[int, Message]]) -> list[Entry]:
    """Transcript entries of a page of stored messages."""
    entries: list[Entry] = []
    for _seq, message in items:
        if isinstance(message, UserMessage):
            entries.append(Entry("user", [content_text(message.content)]))
        elif isinstance(message, AssistantMessage):
            entries.append(Entry("assistant", [content_text(message.content)]))
        elif isinstance(message, ToolResultMessage):
            entries.append(Entry("tool", [content_text(message.content)], message.name))
    return entries
