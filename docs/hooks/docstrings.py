"""MkDocs hook: the reStructuredText roles some docstrings use, shown as plain code.

A docstring may write ``:class:`ToolManager``` or ``:meth:`~Agent.run```; Markdown renders
that as ``:class:`` followed by code. This hook drops the role and, as Sphinx does, shortens a
``~``-prefixed name to its last part.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):<code>(~?)([^<]+)</code>")


def _code(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    """Replace each role and its code with the code alone."""
    return _ROLE.sub(_code, html)
