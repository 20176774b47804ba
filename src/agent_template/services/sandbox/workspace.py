"""The workspace: the one folder the built-in tools may touch, and paths resolved inside it."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from agent_template.errors import AgentTemplateError

__all__ = ["SandboxError", "SandboxViolation", "Workspace"]


class SandboxError(AgentTemplateError):
    """A command could not be run confined as planned, so it was not run at all."""

    code = "sandbox_error"


class SandboxViolation(AgentTemplateError):
    """A path given to a tool leads outside the workspace.

    Attributes:
        path: the path as given.
        reason: why it is outside (``..``, an absolute path, a symbolic link).
        workspace: the workspace folder.
    """

    code = "sandbox_denied"

    def __init__(self, path: str, reason: str, workspace: str) -> None:
        self.path = path
        self.reason = reason
        self.workspace = workspace
        super().__init__(
            f"Access denied: {path!r} {reason}. Only the workspace ({workspace}) can be used; "
            "give a path inside it, relative to it (such as 'src/main.py')."
        )


class Workspace:
    """A folder that file paths from the model are confined to.

    Paths are resolved the way the kernel would (symbolic links followed, dangling ones
    too, ``..`` after them), then refused unless the result is inside the folder. The root is
    resolved on first use, so building a Workspace does no I/O.

    A resolved path is checked, then opened. Between the two a process running in the same
    workspace could swap a folder for a symbolic link; opening the final component with
    ``O_NOFOLLOW`` narrows that window without closing it, and the command sandbox (Landlock)
    is what confines running commands.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._given = Path(root)

    @cached_property
    def root(self) -> Path:
        return Path(os.path.realpath(self._given))

    def __repr__(self) -> str:
        return f"Workspace({str(self._given)!r})"

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """The real path ``path`` leads to, which is inside the workspace.

        Relative paths are relative to the workspace; an absolute path is accepted when it
        leads inside.

        Raises:
            SandboxViolation: the path leads outside, in words the model can act on.
        """
        given = os.fspath(path)
        if "\0" in given:
            raise SandboxViolation(given, "contains a NUL character", str(self.root))
        if given.startswith("~"):
            raise SandboxViolation(given, "refers to a home folder", str(self.root))
        candidate = Path(given) if os.path.isabs(given) else self.root / given
        real = Path(os.path.realpath(candidate))
        if self.contains(real):
            return real
        raise SandboxViolation(given, self._why_outside(given, candidate, real), str(self.root))

    def contains(self, real: Path) -> bool:
        """Whether the already resolved path ``real`` is the workspace or inside it."""
        return real == self.root or real.is_relative_to(self.root)

    def relative(self, real: Path) -> str:
        """How to show a resolved path to the model: relative to the workspace."""
        if real == self.root:
            return "."
        try:
            return real.relative_to(self.root).as_posix()
        except ValueError:
            return str(real)

    def _why_outside(self, given: str, candidate: Path, real: Path) -> str:
        lexical = Path(os.path.normpath(candidate))
        if not self.contains(lexical):
            if ".." in Path(given).parts:
                return "climbs out of the workspace with '..'"
            return "is outside the workspace"
        return (
            f"goes through a symbolic link that points outside the workspace (it leads to {real})"
        )
