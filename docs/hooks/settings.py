"""MkDocs hook: the settings table of ``configuration.md``, built from ``Settings`` itself.

The page holds the marker ``<!-- settings-table -->``; at build time it is replaced by one table
per section of ``.env.example``, with every field of
:class:`agent_template.config.Settings`: its variable, type and constraints, default and
description. A field's description is its ``Field(description=...)``, else the comment on its
line in ``config.py``, else the comment on its line in ``.env.example``; the form a variable
must have (what start-up says when it is wrong) is added when ``config.py`` names one. A field
missing from ``.env.example`` still gets a row, under "Other settings". So the page cannot go
stale: a new setting shows up on the next build.
"""

from __future__ import annotations

import inspect
import io
import re
import sys
import tokenize
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from mkdocs.exceptions import PluginError

MARKER = "<!-- settings-table -->"
PAGE = "configuration.md"
ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / "src" / "agent_template" / "env.example"
OTHER = "Other settings"

_SECTION = re.compile(r"^#\s*---\s*(.+?)\s*-*\s*$")
_VARIABLE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
_FIELD_LINE = re.compile(r"^\s+([a-z_][a-z0-9_]*)\s*:")
_CONSTRAINTS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the marker of the configuration page with the generated tables."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} lost its {MARKER} marker; the settings table needs it")
    return markdown.replace(MARKER, settings_markdown())


def settings_markdown() -> str:
    """Every setting as Markdown tables, grouped by the sections of ``.env.example``."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from agent_template import config

    settings_cls = config.Settings
    forms: dict[str, str] = getattr(config, "_EXPECTED", {})
    source_comments = _field_comments(inspect.getsource(settings_cls))
    sections, env_comments = _env_example(ENV_EXAMPLE)

    groups: dict[str, list[str]] = {name: [] for name in dict.fromkeys(sections.values())}
    for name, field in settings_cls.model_fields.items():
        var = name.upper()
        choices = get_origin(_required(field.annotation)) is Literal
        description = _sentence(
            field.description or env_comments.get(var) or source_comments.get(name) or ""
        )
        if choices and _lists_choices(description, field.annotation):
            description = ""  # the type column names the choices already
        form = forms.get(var)
        # The form adds to what the type column says for strings and lists, and for numbers
        # that have no description; choices and booleans are plain from the type already.
        plain = choices or field.annotation is bool
        if form and not plain and (not description or not field.metadata):
            description = f"{description} Expected: {form}.".strip()
        row = [
            f"`{var}`",
            _type_name(field.annotation) + _constraints(field.metadata),
            _default(field),
            description,
        ]
        groups.setdefault(sections.get(var, OTHER), []).append(
            "| " + " | ".join(_cell(c) for c in row) + " |"
        )

    out: list[str] = []
    for title, rows in groups.items():
        if not rows:
            continue
        out += [f"## {title}", "", "| Variable | Type | Default | Description |"]
        out += ["|---|---|---|---|", *rows, ""]
    return "\n".join(out)


def _env_example(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each variable's section in ``.env.example``, and its comment: the one at the end of its
    line, else the comment lines right above it."""
    sections: dict[str, str] = {}
    comments: dict[str, str] = {}
    current = OTHER
    above: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        heading = _SECTION.match(line)
        variable = _VARIABLE.match(line)
        if heading:
            current = heading.group(1).rstrip(" -")
        elif variable:
            var, rest = variable.groups()
            sections.setdefault(var, current)
            _, sep, comment = rest.partition(" #")
            text = comment.strip() if sep else " ".join(above)
            if text:
                comments.setdefault(var, text)
        elif line.startswith("#"):
            above.append(line.lstrip("#").strip())
            continue
        above = []
    return sections, comments


def _field_comments(source: str) -> dict[str, str]:
    """The comment at the end of each field's line in the class source."""
    lines = source.splitlines()
    comments: dict[str, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, col = token.start
        line = lines[row - 1]
        field = _FIELD_LINE.match(line)
        if field and line[:col].strip():  # a comment after code, not a line of its own
            comments[field.group(1)] = token.string.lstrip("#").strip()
    return comments


def _required(annotation: Any) -> Any:
    """``X`` of ``X | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _lists_choices(text: str, annotation: Any) -> bool:
    """Whether ``text`` only lists the choices of a ``Literal``."""
    choices = {str(choice).lower() for choice in get_args(_required(annotation))}
    words = set(re.findall(r"\w+", text.lower()))
    return not words - choices - {"one", "of", "or", "and"}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        optional = len(named) < len(args)
        return " or ".join(named) + (", optional" if optional else "")
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"comma-separated list of {_type_name(args[0])}" if args else "list"
    names = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
    }
    if annotation in names:
        return names[annotation]
    if getattr(annotation, "__name__", "") == "SecretStr":
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(metadata: list[Any]) -> str:
    bounds = [
        f"{symbol} {getattr(item, attr):g}"
        for item in metadata
        for attr, symbol in _CONSTRAINTS.items()
        if getattr(item, attr, None) is not None
    ]
    return f" ({', '.join(bounds)})" if bounds else ""


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.is_required():
        return "required"
    else:
        value = field.default
    if value is None or value == []:
        return "*unset*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        value = value.as_posix()
        value = value if value.startswith(("/", ".")) else f"./{value}"
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f"`{value}`"


def _sentence(text: str) -> str:
    """A comment as a sentence, its reStructuredText double backquotes made Markdown's."""
    text = text.strip().rstrip(":").replace("``", "`")
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
