"""Finding files and text in a workspace: ``glob`` patterns and a pure-Python ``grep``.

Walks never follow symbolic links to folders, skip the usual bulky folders (``.git``,
``node_modules``, virtual environments, caches) unless the pattern names them, stop after a
number of results and after a time budget, and say so when they do.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from agent_template.services.sandbox.files import FileRefused, is_binary, split_lines
from agent_template.services.sandbox.workspace import Workspace

__all__ = ["MAX_GLOB_RESULTS", "MAX_GREP_MATCHES", "glob_files", "glob_regex", "grep_files"]

MAX_GLOB_RESULTS = 500
MAX_GREP_MATCHES = 200
MAX_GREP_FILE_BYTES = 5 * 1024 * 1024
MAX_MATCH_CHARS = 300
SEARCH_TIME_S = 20.0  # the tool runs in a thread that cannot be stopped: it stops itself
_MAX_BRACE_EXPANSIONS = 64
SKIPPED_FOLDERS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
_BRACES = re.compile(r"\{([^{}]*)\}")


def _expand_braces(pattern: str) -> list[str]:
    """``*.{ts,tsx}`` -> ``*.ts``, ``*.tsx`` (the shell's brace expansion)."""
    done: list[str] = []
    todo = [pattern]
    while todo:
        current = todo.pop()
        match = _BRACES.search(current)
        if match is None or "," not in match.group(1):
            done.append(current)
        else:
            for choice in match.group(1).split(","):
                todo.append(current[: match.start()] + choice + current[match.end() :])
        if len(done) + len(todo) > _MAX_BRACE_EXPANSIONS:
            raise FileRefused(f"The pattern {pattern!r} expands to too many alternatives.")
    return done


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and (end := segment.find("]", i + 2)) != -1:
            body = segment[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex matching relative POSIX paths the way ``pattern`` would.

    ``*`` and ``?`` stay within one path segment (dotfiles included); ``**`` spans any number
    of segments; ``[abc]``, ``[!abc]`` and ``{a,b}`` work as in the shell.
    """
    alternatives = []
    for expanded in _expand_braces(pattern):
        segments = expanded.split("/")
        regex = ""
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if segment == "**":
                regex += ".*" if last else "(?:[^/]+/)*"
            else:
                regex += _segment_regex(segment) + ("" if last else "/")
        alternatives.append(regex)
    return re.compile("(?:" + "|".join(alternatives) + ")")


def _clean_pattern(ws: Workspace, pattern: str, base: Path) -> str:
    pattern = pattern.strip()
    if not pattern:
        raise FileRefused("The pattern is empty. Give one such as '**/*.py'.")
    if os.path.isabs(pattern):
        if not Path(pattern).is_relative_to(base):
            raise FileRefused(
                f"The pattern {pattern!r} is absolute; patterns are relative to the workspace "
                "(such as 'src/**/*.py')."
            )
        pattern = Path(pattern).relative_to(base).as_posix()
    parts = pattern.split("/")
    if ".." in parts:
        raise FileRefused(f"The pattern {pattern!r} climbs out with '..'; it cannot.")
    while parts and parts[0] in (".", ""):
        parts.pop(0)
    return "/".join(parts) or "*"


def _walk(base: Path, pattern: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` in sorted order, without links to folders or the bulky folders the
    pattern does not name."""
    named = {part for part in re.split(r"[/{},]", pattern) if part in SKIPPED_FOLDERS}
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS or d in named)
        files.sort()
        yield folder, dirs, files


def glob_files(ws: Workspace, pattern: str, path: str = ".") -> str:
    """Paths in the workspace matching ``pattern``, relative to the workspace, sorted."""
    base = ws.resolve(path)
    if not base.is_dir():
        raise FileRefused(f"{path!r} is not a folder in the workspace; glob searches folders.")
    pattern = _clean_pattern(ws, pattern, base)
    regex = glob_regex(pattern)
    found: list[str] = []
    deadline = time.monotonic() + SEARCH_TIME_S
    stopped = ""
    for folder, dirs, files in _walk(base, pattern):
        rel_folder = Path(folder).relative_to(base).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        for name in dirs:
            if regex.fullmatch(prefix + name):
                found.append(ws.relative(Path(folder, name)) + "/")
        for name in files:
            if regex.fullmatch(prefix + name):
                found.append(ws.relative(Path(folder, name)))
        if len(found) > MAX_GLOB_RESULTS:
            stopped = f"[more than {MAX_GLOB_RESULTS} matches; showing the first; narrow it]"
            break
        if time.monotonic() > deadline:
            stopped = f"[search stopped after {SEARCH_TIME_S:g} s; narrow the pattern or path]"
            break
    if not found:
        return f"No paths match {pattern!r} in {ws.relative(base)}."
    lines = sorted(found)[:MAX_GLOB_RESULTS]
    if stopped:
        lines.append(stopped)
    return "\n".join(lines)


def _grep_targets(ws: Workspace, target: Path, file_glob: str | None) -> Iterator[tuple[Path, str]]:
    if target.is_file():
        yield target, ws.relative(target)
        return
    name_only = file_glob is not None and "/" not in file_glob
    selector = glob_regex(file_glob) if file_glob else None
    for folder, _dirs, files in _walk(target, file_glob or ""):
        for name in files:
            full = Path(folder, name)
            rel = full.relative_to(target).as_posix()
            if selector is not None and not selector.fullmatch(name if name_only else rel):
                continue
            yield full, ws.relative(full)


def grep_files(
    ws: Workspace,
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    case_insensitive: bool = False,
) -> str:
    """Lines matching the regular expression, as ``path:line: text``."""
    try:
        regex = re.compile(pattern, re.IGNORECASE if case_insensitive else 0)
    except re.error as exc:
        raise FileRefused(
            f"{pattern!r} is not a valid regular expression ({exc}). Python's re syntax is "
            r"used; escape special characters such as ( [ . * with a backslash."
        ) from None
    target = ws.resolve(path)
    if not target.exists():
        raise FileRefused(f"There is no file or folder {path!r} in the workspace.")
    matches: list[str] = []
    skipped_binary = skipped_large = 0
    deadline = time.monotonic() + SEARCH_TIME_S
    stopped = ""
    for full, rel in _grep_targets(ws, target, glob):
        if full.is_symlink() and not ws.contains(Path(os.path.realpath(full))):
            continue  # a link out of the workspace: not followed
        try:
            if full.stat().st_size > MAX_GREP_FILE_BYTES:
                skipped_large += 1
                continue
            data = full.read_bytes()
        except OSError:
            continue
        if is_binary(data):
            skipped_binary += 1
            continue
        for number, line in enumerate(split_lines(data.decode("utf-8", "replace")), 1):
            if regex.search(line):
                matches.append(f"{rel}:{number}: {line[:MAX_MATCH_CHARS]}")
                if len(matches) >= MAX_GREP_MATCHES:
                    break
        if len(matches) >= MAX_GREP_MATCHES:
            stopped = f"[stopped at {MAX_GREP_MATCHES} matches; narrow the pattern or the path]"
            break
        if time.monotonic() > deadline:
            stopped = f"[search stopped after {SEARCH_TIME_S:g} s; narrow the path or glob]"
            break
    notes = [stopped] if stopped else []
    if skipped_binary or skipped_large:
        notes.append(
            f"[skipped {skipped_binary} binary file(s) and {skipped_large} file(s) over "
            f"{MAX_GREP_FILE_BYTES // 2**20} MB]"
        )
    if not matches:
        return "\n".join([f"No matches for {pattern!r} in {ws.relative(target)}.", *notes])
    return "\n".join(matches + notes)
