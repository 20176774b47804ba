"""The sandbox of the built-in tools: a workspace folder, and shell commands confined to it.

Commands run through a small launcher that applies resource limits, ``no_new_privs``,
Landlock (filesystem, TCP, signal and socket scopes) and a network namespace before it runs
``/bin/sh -c``. :func:`sandbox_report` says what this machine actually enforces.

Names are imported on first use: the launcher imports this package for every command.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "CommandResult",
    "SandboxConfig",
    "SandboxError",
    "SandboxLimits",
    "SandboxReport",
    "SandboxViolation",
    "Workspace",
    "run_command",
    "sandbox_report",
]

_EXPORTS = {
    "CommandResult": "_process",
    "run_command": "_process",
    "SandboxConfig": "limits",
    "SandboxLimits": "limits",
    "SandboxReport": "report",
    "sandbox_report": "report",
    "SandboxError": "workspace",
    "SandboxViolation": "workspace",
    "Workspace": "workspace",
}

if TYPE_CHECKING:
    from agent_template.services.sandbox._process import CommandResult, run_command
    from agent_template.services.sandbox.limits import SandboxConfig, SandboxLimits
    from agent_template.services.sandbox.report import SandboxReport, sandbox_report
    from agent_template.services.sandbox.workspace import (
        SandboxError,
        SandboxViolation,
        Workspace,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
