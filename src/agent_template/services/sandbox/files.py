"""File operations confined to a workspace: read, write, edit and list.

Each function is synchronous (the tools run it in a worker thread), takes a
:class:`~agent_template.services.sandbox.workspace.Workspace` and returns the text the model
reads. What the model can correct (a missing file, an ambiguous edit) raises
:class:`FileRefused` with a message saying what to do instead.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent_template.errors import AgentTemplateError
from agent_template.services.sandbox.workspace import Workspace

__all__ = [
    "MAX_READ_BYTES",
    "FileRefused",
    "edit_file",
    "is_binary",
    "list_files",
    "read_file",
    "write_file",
]

MAX_READ_BYTES = 10 * 1024 * 1024  # read_file and edit_file load the file whole
DEFAULT_READ_LINES = 2000
MAX_LINE_CHARS = 2000  # minified files have lines of megabytes
MAX_READ_OUTPUT = 256 * 1024  # characters one read_file call returns
MAX_LIST_ENTRIES = 500
_BINARY_SNIFF = 8192
_SNIPPET_CONTEXT = 3  # lines shown around an edit


class FileRefused(AgentTemplateError):
    """A file operation cannot be done as asked; the message says what to do instead."""

    code = "file_refused"


def is_binary(head: bytes) -> bool:
    """A NUL byte in the first few KB: what git and grep take for binary."""
    return b"\0" in head[:_BINARY_SNIFF]


def split_lines(text: str) -> list[str]:
    """Lines as editors number them: split on newlines, a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _open_flags(flags: int) -> int:
    # O_NOFOLLOW: the path was resolved already, so a symbolic link here appeared since.
    return flags | os.O_NOFOLLOW | os.O_CLOEXEC


def _stat_file(ws: Workspace, real: Path, given: str) -> os.stat_result:
    rel = ws.relative(real)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileRefused(
            f"There is no file {given!r} in the workspace. Use list_files or glob to find it."
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise FileRefused(f"{rel!r} is a folder, not a file. Use list_files to see inside it.")
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{rel!r} is not a regular file (a device, socket or pipe).")
    return st


def _load_text(ws: Workspace, path: str, *, strict: bool) -> tuple[Path, str]:
    real = ws.resolve(path)
    rel = ws.relative(real)
    st = _stat_file(ws, real, path)
    if st.st_size > MAX_READ_BYTES:
        raise FileRefused(
            f"{rel!r} is {st.st_size / 1e6:.1f} MB, more than the {MAX_READ_BYTES // 2**20} MB "
            f"read at once. Use the shell tool to look at parts of it: head, tail, "
            f"sed -n '100,200p' {rel} or grep."
        )
    fd = os.open(real, _open_flags(os.O_RDONLY))
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if is_binary(data):
        raise FileRefused(
            f"{rel!r} looks like a binary file ({len(data)} bytes); these tools read text. "
            f"Use the shell tool to inspect it (file {rel}, xxd {rel} | head)."
        )
    try:
        return real, data.decode("utf-8", "strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        raise FileRefused(
            f"{rel!r} is not UTF-8 text (byte {exc.start}), so it cannot be edited safely here. "
            "Use the shell tool (sed, iconv) instead."
        ) from None


def read_file(
    ws: Workspace,
    path: str,
    offset: int = 1,
    limit: int = DEFAULT_READ_LINES,
    line_numbers: bool = True,
) -> str:
    """Lines ``offset`` to ``offset + limit - 1`` of a text file, numbered like ``cat -n``."""
    if offset < 1 or limit < 1:
        raise FileRefused("offset and limit count lines from 1; give positive numbers.")
    real, text = _load_text(ws, path, strict=False)
    rel = ws.relative(real)
    lines = split_lines(text)
    if not lines:
        return f"({rel} is empty)"
    if offset > len(lines):
        raise FileRefused(f"offset {offset} is past the end: {rel} has {len(lines)} lines.")
    out: list[str] = []
    size = 0
    last = min(len(lines), offset + limit - 1)
    for number in range(offset, last + 1):
        line = lines[number - 1]
        if len(line) > MAX_LINE_CHARS:
            line = f"{line[:MAX_LINE_CHARS]} [... {len(line) - MAX_LINE_CHARS} characters cut]"
        shown = f"{number:>6}\t{line}" if line_numbers else line
        size += len(shown) + 1
        if size > MAX_READ_OUTPUT and out:
            last = number - 1
            break
        out.append(shown)
    if last < len(lines) or offset > 1:
        more = f"; read on with offset={last + 1}" if last < len(lines) else ""
        out.append(f"[lines {offset}-{last} of {len(lines)}{more}]")
    return "\n".join(out)


def _adopt(ws: Workspace, path: Path) -> None:
    """Give a new file the workspace's owner when root creates it in someone else's folder,
    so that commands, which run as that owner, can change it too."""
    if os.geteuid() != 0:
        return
    owner = os.stat(ws.root)
    if owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _make_parents(ws: Workspace, folder: Path) -> None:
    missing: list[Path] = []
    while not folder.exists() and folder != ws.root:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        raise FileRefused(f"{ws.relative(folder)!r} is a file, so no folder can be made in it.")
    for new in reversed(missing):
        new.mkdir()
        _adopt(ws, new)


def write_file(ws: Workspace, path: str, content: str) -> str:
    """Write ``content`` to a file, creating it and its folders if needed."""
    real = ws.resolve(path)
    rel = ws.relative(real)
    if real == ws.root or real.is_dir():
        raise FileRefused(f"{rel!r} is a folder; give the path of a file inside it.")
    existed = real.exists()
    if existed:
        _stat_file(ws, real, path)
    else:
        _make_parents(ws, real.parent)
    data = content.encode("utf-8")
    fd = os.open(real, _open_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if not existed:
        _adopt(ws, real)
    verb = "Overwrote" if existed else "Created"
    return f"{verb} {rel} ({len(data)} bytes, {len(split_lines(content))} lines)."


def edit_file(
    ws: Workspace, path: str, old_string: str, new_string: str, replace_all: bool = False
) -> str:
    """Replace ``old_string`` by ``new_string``: exactly once, or everywhere with
    ``replace_all``."""
    if not old_string:
        raise FileRefused("old_string is empty. To create or overwrite a file, use write_file.")
    if old_string == new_string:
        raise FileRefused("old_string and new_string are the same: there is nothing to change.")
    real, text = _load_text(ws, path, strict=True)
    rel = ws.relative(real)
    count = text.count(old_string)
    if count == 0:
        hint = ""
        if "\r\n" in text and "\n" in old_string and "\r\n" not in old_string:
            hint = " The file has Windows line endings (\\r\\n)."
        raise FileRefused(
            f"old_string was not found in {rel}. Read the file and copy the text exactly, "
            f"indentation and line breaks included.{hint}"
        )
    if count > 1 and not replace_all:
        raise FileRefused(
            f"old_string occurs {count} times in {rel}. Include more of the surrounding lines "
            f"to make it unique, or pass replace_all=true to replace all {count}."
        )
    first = text.index(old_string)
    updated = text.replace(old_string, new_string, -1 if replace_all else 1)
    fd = os.open(real, _open_flags(os.O_WRONLY | os.O_TRUNC))  # in place: owner and mode stay
    with os.fdopen(fd, "wb") as f:
        f.write(updated.encode("utf-8"))
    replaced = count if replace_all else 1
    start = text.count("\n", 0, first) + 1
    end = start + new_string.count("\n")
    lines = split_lines(updated)
    low = max(1, start - _SNIPPET_CONTEXT)
    high = min(len(lines), end + _SNIPPET_CONTEXT)
    snippet = "\n".join(f"{n:>6}\t{lines[n - 1]}" for n in range(low, high + 1))
    noun = "occurrence" if replaced == 1 else "occurrences"
    return f"Replaced {replaced} {noun} in {rel}. Lines {low}-{high} now read:\n{snippet}"


def list_files(ws: Workspace, path: str = ".") -> str:
    """The entries of a folder, folders first, each with its type and size."""
    real = ws.resolve(path)
    rel = ws.relative(real)
    if not real.exists():
        raise FileRefused(f"There is no folder {path!r} in the workspace.")
    if not real.is_dir():
        return _file_line(real, rel)
    with os.scandir(real) as it:
        entries = sorted(it, key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
    folders = sum(e.is_dir(follow_symlinks=False) for e in entries)
    head = f"{rel}/: {folders} folders, {len(entries) - folders} files or links"
    lines = [head] + [_entry_line(e) for e in entries[:MAX_LIST_ENTRIES]]
    if len(entries) > MAX_LIST_ENTRIES:
        lines.append(
            f"[{len(entries) - MAX_LIST_ENTRIES} more entries not shown; use glob to narrow]"
        )
    return "\n".join(lines)


def _file_line(real: Path, rel: str) -> str:
    return f"file {real.stat().st_size:>10}  {rel}"


def _entry_line(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return f"link {'':>10}  {entry.name} -> {os.readlink(entry.path)}"
        if entry.is_dir(follow_symlinks=False):
            return f"dir  {'':>10}  {entry.name}/"
        return f"file {entry.stat(follow_symlinks=False).st_size:>10}  {entry.name}"
    except OSError:
        return f"?    {'':>10}  {entry.name}"
