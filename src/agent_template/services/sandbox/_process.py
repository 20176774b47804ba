"""Running one shell command in the sandbox: plan, launch, supervise, collect, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent_template.services.sandbox._plan import (
    Plan,
    environment,
    make_plan,
    private_temp,
    rules,
    workspace_status,
)
from agent_template.services.sandbox.limits import SandboxLimits
from agent_template.services.sandbox.report import cached_report, launcher_command, sandbox_report
from agent_template.services.sandbox.workspace import SandboxError, Workspace

__all__ = ["CommandResult", "run_command"]

_LAUNCHER_MARGIN_S = 2.0  # beyond the grace period, before the launcher itself is killed
_DRAIN_S = 2.0  # output still arriving after the launcher is gone
_READ_CHUNK = 64 * 1024
_MEMORY_ERRORS = re.compile(
    r"MemoryError|Cannot allocate memory|out of memory|std::bad_alloc|memory allocation failed"
    r"|failed to allocate|mmap failed",
    re.IGNORECASE,
)
_FORK_ERRORS = re.compile(
    r"fork: (?:retry|Resource temporarily unavailable)|Cannot fork|can't fork"
    r"|BlockingIOError: \[Errno 11\]",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a sandboxed command did.

    Attributes:
        command: the command as given.
        exit_code: the shell's exit status; None when it was ended by a signal.
        signal: the signal that ended the shell, if one did.
        output: stdout and stderr, interleaved as written; its middle cut beyond the limit.
        output_bytes: how many bytes the command wrote in all.
        truncated: whether ``output`` was cut.
        killed_reason: the limit that stopped the command, such as ``wall time limit (120 s)``,
            or None.
        duration_s: wall-clock seconds from start to the last process reaped.
        cpu_s: CPU seconds of the command's processes that were waited for.
        leftover_processes: processes still running when the shell exited, killed then.
        notes: what was not enforced for this command (never silently).
    """

    command: str
    exit_code: int | None
    signal: int | None
    output: str
    output_bytes: int
    truncated: bool
    killed_reason: str | None
    duration_s: float
    cpu_s: float | None = None
    leftover_processes: int = 0
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None

    def render(self) -> str:
        """The result as the model reads it: the output, then one line of status."""
        status = (
            f"exit code {self.exit_code}"
            if self.exit_code is not None
            else f"killed by {_signal_name(self.signal)}"
        )
        if self.killed_reason:
            status = f"stopped by the {self.killed_reason}; {status}"
        if self.leftover_processes:
            status += (
                f"; {self.leftover_processes} background process(es) still running when the "
                "command ended were killed (commands cannot leave processes behind)"
            )
        output = self.output.rstrip("\n") or "(no output)"
        return f"{output}\n[{status}; {self.duration_s:.1f} s]"


def _signal_name(signum: int | None) -> str:
    if signum is None:
        return "a signal"
    try:
        return f"signal {signum} ({signal.Signals(signum).name})"
    except ValueError:
        return f"signal {signum}"


def _fmt(value: float) -> str:
    return f"{value:g}"


class _Output:
    """The first part and the last part of a stream, within ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tail_max = limit // 4
        self._head_max = limit - self._tail_max
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_max - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * self._tail_max:
                del self.tail[: len(self.tail) - self._tail_max]

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self.feed(chunk)

    def text(self) -> tuple[str, bool]:
        if self.total <= self.limit:
            return (self.head + self.tail).decode("utf-8", "replace"), False
        tail = self.tail[-self._tail_max :] if self._tail_max else bytearray()
        cut = self.total - len(self.head) - len(tail)
        note = (
            f"\n[... {cut} bytes of output cut here: only {self.limit} bytes are kept. "
            "Redirect long output to a file, then read or grep parts of it ...]\n"
        )
        head = self.head.decode("utf-8", "replace")
        return head + note + tail.decode("utf-8", "replace"), True


async def run_command(
    command: str,
    *,
    workspace: Workspace | str | os.PathLike[str],
    limits: SandboxLimits | None = None,
    network: bool = False,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``command`` with ``/bin/sh -c`` in the workspace, confined and limited.

    The command runs in a session of its own under the launcher, which kills the whole
    process tree when the shell exits, when ``limits.wall_s`` runs out, or when the calling
    task is cancelled. Nothing of this process's environment reaches it: only ``env``.

    Raises:
        SandboxError: the workspace does not exist, or the sandbox could not be set up as
            planned (the command was then not run).
    """
    limits = limits or SandboxLimits()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    report = cached_report()
    if report is None:
        report = await asyncio.to_thread(sandbox_report)
    st = await asyncio.to_thread(workspace_status, ws)
    root = ws.root
    plan = make_plan(report, st, network, limits)
    tmp = await asyncio.to_thread(private_temp, plan.owner)
    try:
        capless = plan.spec["run_as"] == "capless-root"
        if report.filesystem_enforced:
            plan.spec["rules"] = await asyncio.to_thread(
                rules, root, tmp, capless_root=capless, network=network
            )
        return await _supervise(command, root, plan, environment(tmp, env), limits)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _supervise(
    command: str, root: Path, plan: Plan, env: dict[str, str], limits: SandboxLimits
) -> CommandResult:
    status_r, status_w = os.pipe()
    started = time.monotonic()
    try:
        spec = {**plan.spec, "status_fd": status_w, "env": env}
        proc = await asyncio.create_subprocess_exec(
            *launcher_command(json.dumps(spec), command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
            pass_fds=(status_w,),
        )
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    os.set_blocking(status_r, False)
    status = _Status(status_r)
    output = _Output(limits.output_bytes)
    assert proc.stdout is not None
    reader = asyncio.create_task(output.read(proc.stdout))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(limits.wall_s):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await _stop(proc, status, limits.grace_s)
        except asyncio.CancelledError:
            await _stop(proc, status, limits.grace_s)
            raise
    finally:
        status.read()
        if proc.returncode is None or not status.finished:
            # Cancelled again while stopping, or the launcher died before it could sweep
            # (a command can kill it where Landlock cannot scope signals): kill what is left.
            _kill_now(proc, status)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), _DRAIN_S)
        finally:
            reader.cancel()
            status.read()
            os.close(status_r)
    if status.error:
        raise SandboxError(
            f"The command was not run: the sandbox could not be set up ({status.error}). "
            "Run 'agent-template sandbox check' to see what this machine enforces."
        )
    text, truncated = output.text()
    return _result(command, plan, status, proc, text, output, truncated, timed_out, limits, started)


def _result(
    command: str,
    plan: Plan,
    status: _Status,
    proc: asyncio.subprocess.Process,
    text: str,
    output: _Output,
    truncated: bool,
    timed_out: bool,
    limits: SandboxLimits,
    started: float,
) -> CommandResult:
    exit_code, sig = status.exit_code, status.signal
    if exit_code is None and sig is None and proc.returncode is not None:
        exit_code, sig = (
            (proc.returncode, None) if proc.returncode >= 0 else (None, -proc.returncode)
        )
    return CommandResult(
        command=command,
        exit_code=exit_code,
        signal=sig,
        output=text,
        output_bytes=output.total,
        truncated=truncated,
        killed_reason=_killed_reason(exit_code, sig, status.cpu_s, text, timed_out, limits),
        duration_s=time.monotonic() - started,
        cpu_s=status.cpu_s,
        leftover_processes=status.leftovers,
        notes=plan.notes,
    )


def _killed_reason(
    exit_code: int | None,
    sig: int | None,
    cpu_s: float | None,
    text: str,
    timed_out: bool,
    limits: SandboxLimits,
) -> str | None:
    cpu = f"cpu time limit ({limits.cpu_s} s per process)"
    fsize = f"file size limit ({limits.file_size_mb} MB)"
    if timed_out:
        return f"wall time limit ({_fmt(limits.wall_s)} s)"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and (cpu_s or 0) >= limits.cpu_s):
        return cpu
    if sig == signal.SIGXFSZ:
        return fsize
    if _FORK_ERRORS.search(text):  # reported even when the command coped with it
        return f"process limit ({limits.max_processes} processes)"
    if exit_code in (None, 0):
        return None
    if exit_code == 128 + signal.SIGXCPU or "CPU time limit exceeded" in text:
        return cpu
    if exit_code == 128 + signal.SIGXFSZ or "File size limit exceeded" in text:
        return fsize
    if _MEMORY_ERRORS.search(text):
        return f"memory limit ({limits.memory_mb} MB of address space per process)"
    return None


class _Status:
    """The launcher's status lines: the child's pid, then how it ended or why it never ran."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.child: int | None = None
        self.error: str | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.cpu_s: float | None = None
        self.leftovers = 0

    @property
    def finished(self) -> bool:
        """The launcher reported how the command ended, after sweeping its processes."""
        return self.exit_code is not None or self.signal is not None or self.error is not None

    def read(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self._fd, 4096):
                self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._parse(raw.decode("utf-8", "replace"))

    def _parse(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        fields = rest.split()
        if kind == "pid" and fields:
            self.child = int(fields[0])
        elif kind == "error":
            self.error = rest
        elif kind in ("exit", "signal") and len(fields) == 3:
            value = int(fields[0])
            if kind == "exit":
                self.exit_code = value
            else:
                self.signal = value
            self.cpu_s = float(fields[1])
            self.leftovers = int(fields[2])


async def _stop(proc: asyncio.subprocess.Process, status: _Status, grace_s: float) -> None:
    """Ask the launcher to stop the command; kill everything if it does not in time."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_s + _LAUNCHER_MARGIN_S):
            await proc.wait()
    except TimeoutError:
        _kill_now(proc, status)
        await proc.wait()


def _kill_now(proc: asyncio.subprocess.Process, status: _Status) -> None:
    """SIGKILL to the launcher's group (while it is not reaped) and the command's group,
    without waiting."""
    status.read()
    for pgid in (proc.pid if proc.returncode is None else None, status.child):
        if pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
