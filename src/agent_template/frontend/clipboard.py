"""Copying text: OSC 52 (works over SSH and inside tmux) plus the system clipboard if any."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from typing import Protocol

__all__ = ["Copier", "copy_text", "system_clipboard_command"]


class Copier(Protocol):
    """What can copy through the terminal (a Textual App does, with OSC 52)."""

    def copy_to_clipboard(self, text: str) -> None: ...


def system_clipboard_command() -> list[str] | None:
    """The command that writes the system clipboard from stdin here, or None."""
    candidates: list[list[str]] = []
    if sys.platform == "darwin":
        candidates.append(["pbcopy"])
    elif sys.platform == "win32":
        candidates.append(["clip"])
    else:
        if os.environ.get("WAYLAND_DISPLAY"):
            candidates.append(["wl-copy"])
        if os.environ.get("DISPLAY"):
            candidates += [["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "-i"]]
        if shutil.which("clip.exe"):  # WSL
            candidates.append(["clip.exe"])
    for command in candidates:
        if shutil.which(command[0]):
            return command
    return None


def _run(command: list[str], text: str) -> None:
    # OSC 52 was sent already; the system clipboard is a bonus
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(command, input=text.encode(), timeout=5, check=False, capture_output=True)


def copy_text(app: Copier, text: str, *, system: bool = True) -> None:
    """Copy ``text``: OSC 52 through the terminal, and the system clipboard in the background
    (never blocking the interface)."""
    app.copy_to_clipboard(text)
    command = system_clipboard_command() if system else None
    if command is not None:
        threading.Thread(target=_run, args=(command, text), daemon=True).start()
