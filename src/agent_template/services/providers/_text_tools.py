"""Recognise tool calls that local models write as text instead of structured calls.

Two shapes are common:

* Qwen and Hermes-style blocks anywhere in the text:
  ``<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>``
* a reply whose whole content is one JSON object (possibly in a ```json fence):
  ``{"name": "search", "arguments": {"q": "x"}}`` (``parameters`` is accepted for ``arguments``)

Only names of offered tools count; anything else stays text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

__all__ = ["TextToolCallParser"]

_OPEN = "<tool_call>"
_CLOSE = "</tool_call>"
_FENCE = "```"


class TextToolCallParser:
    """A streaming filter that takes tool calls out of a model's text.

    Feed it the text deltas; it returns the text that is safe to show now and holds back what
    may turn out to be a call: a possible ``<tool_call>`` prefix at the end of the text, a block
    until it closes, and a reply that starts with ``{`` or a code fence until the end.

    Args:
        tool_names: the names of the tools offered in the request.
    """

    __slots__ = ("_calls", "_mode", "_names", "_pending")

    def __init__(self, tool_names: Iterable[str]) -> None:
        self._names = frozenset(tool_names)
        self._mode: Literal["start", "text", "block", "whole"] = "start"
        self._pending = ""  # text held back
        self._calls: list[tuple[str, str]] = []

    def feed(self, delta: str) -> str:
        """Take one text delta; return the text that can be emitted now."""
        self._pending += delta
        if self._mode == "whole":
            return ""
        if self._mode == "start":
            head = self._pending.lstrip()
            if not head or (len(head) < len(_FENCE) and _FENCE.startswith(head)):
                return ""  # cannot tell yet
            if head.startswith(("{", _FENCE)):
                self._mode = "whole"
                return ""
            self._mode = "text"
        return self._scan()

    def _scan(self) -> str:
        """Consume ``_pending`` in text and block mode; return the text to emit."""
        out: list[str] = []
        while True:
            text = self._pending
            if self._mode == "block":
                end = text.find(_CLOSE)
                if end < 0:
                    break
                body, self._pending = text[:end], text[end + len(_CLOSE) :]
                self._mode = "text"
                if not self._take_call(body):
                    out.append(f"{_OPEN}{body}{_CLOSE}")
                continue
            start = text.find(_OPEN)
            if start >= 0:
                out.append(text[:start])
                self._pending = text[start + len(_OPEN) :]
                self._mode = "block"
                continue
            keep = _partial_tag_start(text)
            out.append(text[:keep])
            self._pending = text[keep:]
            break
        return "".join(out)

    def finish(self) -> tuple[str, list[tuple[str, str]]]:
        """End of the reply: the remaining text, and the calls as (name, arguments JSON)."""
        rest, self._pending = self._pending, ""
        if self._mode == "whole" and self._take_call(_strip_fence(rest.strip())):
            rest = ""
        elif self._mode == "block":
            # A reply may end inside a block whose closing tag never came.
            rest = "" if self._take_call(rest) else f"{_OPEN}{rest}"
        return rest, self._calls

    def _take_call(self, text: str) -> bool:
        """Record ``text`` as a call if it is one to an offered tool."""
        try:
            value = json.loads(text)
        except ValueError:
            return False
        if not isinstance(value, dict):
            return False
        name = value.get("name")
        if not isinstance(name, str) or name not in self._names:
            return False
        arguments: Any = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):  # some models encode the arguments twice
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return False
        if not isinstance(arguments, dict):
            return False
        self._calls.append((name, json.dumps(arguments)))
        return True


def _partial_tag_start(text: str) -> int:
    """Where a possible beginning of ``<tool_call>`` starts at the end of ``text``."""
    start = text.rfind("<", max(0, len(text) - len(_OPEN) + 1))
    if start >= 0 and _OPEN.startswith(text[start:]):
        return start
    return len(text)


def _strip_fence(text: str) -> str:
    """The inside of a ```json fence, or ``text`` itself when it is not fenced."""
    if not text.startswith(_FENCE) or not text.endswith(_FENCE) or len(text) < 2 * len(_FENCE):
        return text
    inner = text[len(_FENCE) : -len(_FENCE)]
    first_line, _, body = inner.partition("\n")
    return body if first_line.strip().isalpha() or not first_line.strip() else inner
