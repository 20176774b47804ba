"""The built-in tools: a sandboxed shell and file tools confined to the workspace.

``shell``, ``read_file``, ``write_file``, ``edit_file``, ``list_files``, ``glob`` and ``grep``.
Build them with :func:`builtin_tools` from a :class:`SandboxConfig` (``from_settings``). The
file tools run in worker threads, so a slow disk never holds up other runs. A call whose
``ToolContext.extra["workspace"]`` is set works in that folder instead of the configured one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from agent_template.errors import ToolArgumentsError
from agent_template.models import ToolContext
from agent_template.services.sandbox import files, search
from agent_template.services.sandbox._process import run_command
from agent_template.services.sandbox.limits import SandboxConfig
from agent_template.services.sandbox.workspace import SandboxViolation, Workspace
from agent_template.services.tool_manager import FunctionTool, Tool

__all__ = ["BUILTIN_TOOL_NAMES", "BuiltinTool", "SandboxConfig", "builtin_tools"]

BUILTIN_TOOL_NAMES = ("shell", "read_file", "write_file", "edit_file", "list_files", "glob", "grep")
_MAX_COMMAND_BYTES = 100_000  # Linux refuses a single argument over 128 KiB (E2BIG)
_SHELL_TIMEOUT_MARGIN_S = 5.0  # the sandbox's own wall limit must fire before the registry's

_log = logging.getLogger("agent_template.sandbox")


class BuiltinTool(FunctionTool):
    """A tool that ships with agent-template; a path outside the workspace is the model's to
    correct, so it comes back as an argument error."""

    __slots__ = ()
    source = "builtin"

    async def __call__(self, arguments: str, context: ToolContext | None = None) -> Any:
        try:
            return await super().__call__(arguments, context)
        except (SandboxViolation, files.FileRefused) as exc:
            raise ToolArgumentsError(self.name, str(exc)) from None


class _Tools:
    """The tools' shared state: the configuration, the default workspace, what was said."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.workspace = Workspace(config.workspace_dir)
        self.noted = False

    def workspace_for(self, context: ToolContext | None) -> Workspace:
        override = context.extra.get("workspace") if context is not None else None
        return Workspace(override) if override else self.workspace

    def notes_once(self, notes: tuple[str, ...]) -> str:
        """What the sandbox does not enforce, told to the model and the log the first time."""
        if self.noted or not notes:
            return ""
        self.noted = True
        for note in notes:
            _log.warning("shell tool: %s", note)
        return "".join(f"[sandbox note: {note}]\n" for note in notes)


def _shell_description(config: SandboxConfig) -> str:
    network = "may use the network" if config.network else "have no network access"
    return (
        "Run a shell command with /bin/sh -c in the workspace folder and return its output "
        "(stdout and stderr together) and exit code. Commands are sandboxed: they can read and "
        "write only inside the workspace (and a private temporary folder in $TMPDIR), read the "
        f"system folders, and {network}. Limits: {config.wall_s:g} s of wall time, "
        f"{config.cpu_s} s of CPU per process, {config.memory_mb} MB of memory per process, "
        f"{config.max_processes} processes, {config.output_bytes} bytes of output (the middle "
        "of longer output is cut). Background processes are killed when the command ends, so "
        "do not start servers or daemons. No environment variables of the server are passed. "
        "The first result notes anything of this that this machine cannot enforce."
    )


def builtin_tools(config: SandboxConfig) -> list[Tool]:
    """The built-in tools, working in ``config.workspace_dir``.

    Building them does no I/O; the first command runs the sandbox probe (about 0.1 s).
    """
    state = _Tools(config)

    async def shell(context: ToolContext, command: str, timeout_s: float | None = None) -> str:
        """Run a shell command.

        Args:
            command: the command line, run by /bin/sh -c in the workspace folder.
            timeout_s: stop the command after this many seconds (at most the configured
                limit, which is also the default).
        """
        if not command.strip():
            raise ToolArgumentsError("shell", "the command is empty. Give a command to run.")
        if "\0" in command:
            raise ToolArgumentsError("shell", "the command contains a NUL character.")
        if len(command.encode()) > _MAX_COMMAND_BYTES:
            raise ToolArgumentsError(
                "shell",
                f"the command is {len(command.encode())} bytes long, more than the system "
                "passes to a program. Write it to a script with write_file and run the script.",
            )
        if timeout_s is not None and timeout_s <= 0:
            raise ToolArgumentsError("shell", "timeout_s must be a positive number of seconds.")
        limits = config.limits
        if timeout_s is not None and timeout_s < limits.wall_s:
            limits = replace(limits, wall_s=timeout_s)
        result = await run_command(
            command,
            workspace=state.workspace_for(context),
            limits=limits,
            network=config.network,
        )
        return state.notes_once(result.notes) + result.render()

    def read_file(
        context: ToolContext,
        path: str,
        offset: int = 1,
        limit: int = files.DEFAULT_READ_LINES,
        line_numbers: bool = True,
    ) -> str:
        """Read a text file of the workspace, its lines numbered.

        Args:
            path: the file, relative to the workspace.
            offset: the first line to return (counting from 1).
            limit: how many lines to return at most.
            line_numbers: prefix each line with its number and a tab.
        """
        return files.read_file(state.workspace_for(context), path, offset, limit, line_numbers)

    def write_file(context: ToolContext, path: str, content: str) -> str:
        """Write a file of the workspace, replacing it if it exists; folders are created.

        Args:
            path: the file, relative to the workspace.
            content: the whole new content of the file.
        """
        return files.write_file(state.workspace_for(context), path, content)

    def edit_file(
        context: ToolContext,
        path: str,
        old_string: str,
        new_string: str,
        replace_all: bool = False,
    ) -> str:
        """Replace exact text in a file of the workspace.

        old_string must occur exactly once, unless replace_all is true. Read the file first
        and copy the text exactly, indentation included.

        Args:
            path: the file, relative to the workspace.
            old_string: the exact text to replace.
            new_string: the text to put in its place.
            replace_all: replace every occurrence instead of exactly one.
        """
        ws = state.workspace_for(context)
        return files.edit_file(ws, path, old_string, new_string, replace_all)

    def list_files(context: ToolContext, path: str = ".") -> str:
        """List a folder of the workspace: each entry with its type (dir, file, link) and size.

        Args:
            path: the folder, relative to the workspace; the workspace itself by default.
        """
        return files.list_files(state.workspace_for(context), path)

    def glob(context: ToolContext, pattern: str, path: str = ".") -> str:
        """Find files and folders of the workspace by name pattern, such as '**/*.py'.

        '*' matches within a folder name, '**' across folders; '{a,b}' and '[abc]' work too.
        Folders such as .git, node_modules and .venv are skipped unless the pattern names
        them. Results are paths relative to the workspace, sorted, at most 500.

        Args:
            pattern: the pattern, relative to path.
            path: the folder to search, relative to the workspace.
        """
        return search.glob_files(state.workspace_for(context), pattern, path)

    def grep(
        context: ToolContext,
        pattern: str,
        path: str = ".",
        glob: str | None = None,
        case_insensitive: bool = False,
    ) -> str:
        """Search the text files of the workspace for a regular expression.

        Returns matching lines as 'path:line: text', at most 200. Binary files and files
        over 5 MB are skipped, and so are .git, node_modules and .venv.

        Args:
            pattern: a Python regular expression, searched in each line.
            path: a file or folder to search, relative to the workspace.
            glob: only files matching this pattern, such as '*.py' or 'src/**/*.ts'.
            case_insensitive: ignore upper and lower case.
        """
        ws = state.workspace_for(context)
        return search.grep_files(ws, pattern, path, glob, case_insensitive)

    shell_timeout = config.wall_s + config.limits.grace_s + _SHELL_TIMEOUT_MARGIN_S
    return [
        BuiltinTool(shell, description=_shell_description(config), timeout=shell_timeout),
        BuiltinTool(read_file),
        BuiltinTool(write_file),
        BuiltinTool(edit_file),
        BuiltinTool(list_files),
        BuiltinTool(glob),
        BuiltinTool(grep),
    ]
