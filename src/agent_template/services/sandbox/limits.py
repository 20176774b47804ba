"""The limits of one sandboxed command, and the sandbox's settings as a whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_template.config import Settings

__all__ = ["SandboxConfig", "SandboxLimits"]


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one command may use.

    Attributes:
        cpu_s: CPU seconds of each process (RLIMIT_CPU): SIGXCPU, then SIGKILL a second later.
        memory_mb: address space of each process (RLIMIT_AS), virtual memory rather than RAM.
        wall_s: seconds the whole command may run before its process tree is killed.
        max_processes: processes and threads the command may run at once (RLIMIT_NPROC).
        output_bytes: output kept (stdout and stderr together); the middle of more is cut.
        file_size_mb: largest file a process may write (RLIMIT_FSIZE).
        grace_s: seconds between SIGTERM and SIGKILL when the command is stopped.
    """

    cpu_s: int = 30
    memory_mb: int = 1024
    wall_s: float = 120.0
    max_processes: int = 64
    output_bytes: int = 64 * 1024
    file_size_mb: int = 1024
    grace_s: float = 1.0


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """The workspace and limits of the built-in tools (the ``WORKSPACE_DIR`` and ``SANDBOX_*``
    settings).

    Attributes:
        workspace_dir: the folder the file tools and commands work in; nothing outside it.
        network: whether commands may use the network (off by default).
    """

    workspace_dir: Path = Path(".")
    network: bool = False
    cpu_s: int = 30
    memory_mb: int = 1024
    wall_s: float = 120.0
    max_processes: int = 64
    output_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        return cls(
            workspace_dir=Path(settings.workspace_dir),
            network=settings.sandbox_network,
            cpu_s=settings.sandbox_cpu_s,
            memory_mb=settings.sandbox_memory_mb,
            wall_s=settings.sandbox_wall_s,
            max_processes=settings.sandbox_max_processes,
            output_bytes=settings.sandbox_output_bytes,
        )

    @property
    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            cpu_s=self.cpu_s,
            memory_mb=self.memory_mb,
            wall_s=self.wall_s,
            max_processes=self.max_processes,
            output_bytes=self.output_bytes,
        )
