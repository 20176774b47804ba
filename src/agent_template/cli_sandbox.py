"""``agent-template sandbox check``: what the sandbox of the built-in tools enforces here.

It prints the report, then runs real commands in the workspace that try to escape (read and
write outside it, read the server's environment, reach the network, signal the server, leave
a process running) and says whether each was blocked. The exit status is 0 when everything is
enforced and every attempt was blocked, 1 otherwise: a gap is never reported as success.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from agent_template.services.sandbox import CommandResult, SandboxConfig

sandbox_app = typer.Typer(
    help="The sandbox of the built-in tools (shell, file tools).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

_PROBE_WALL_S = 15.0


@dataclass(frozen=True, slots=True)
class _Probe:
    name: str
    blocked: bool
    detail: str = ""

    def line(self) -> str:
        verdict = "blocked" if self.blocked else "NOT blocked"
        return f"  {self.name}: {verdict}{f' ({self.detail})' if self.detail else ''}"


@sandbox_app.callback()
def _group() -> None:
    """The sandbox of the built-in tools (shell, file tools)."""


@sandbox_app.command("check")
def check() -> None:
    """Print what the sandbox enforces here, try escapes for real, and say which were blocked.

    Exits 0 when everything is enforced and every attempt was blocked, 1 otherwise.
    """
    from agent_template.cli import _settings
    from agent_template.services.sandbox import SandboxConfig, SandboxError, sandbox_report

    config = SandboxConfig.from_settings(_settings())
    report = sandbox_report()
    typer.echo("Sandbox of the built-in tools")
    for line in report.lines():
        typer.echo(f"  {line}")
    workspace = config.workspace_dir.resolve()
    typer.echo("Configuration")
    typer.echo(f"  workspace (WORKSPACE_DIR): {workspace}")
    network = "allowed" if config.network else "off"
    typer.echo(f"  network for commands (SANDBOX_NETWORK): {network}")
    typer.echo(
        f"  limits: {config.wall_s:g} s wall time, {config.cpu_s} s CPU and {config.memory_mb} "
        f"MB per process, {config.max_processes} processes, {config.output_bytes} bytes of "
        "output"
    )
    if config.network:
        typer.echo("  (commands may use the network: the network is not probed)")
    try:
        probes, notes = _run_probes(config)
    except SandboxError as exc:
        typer.echo(f"The probes could not run: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("Escape attempts (real commands in the workspace)")
    for probe in probes:
        typer.echo(probe.line())
    if notes:
        typer.echo("Not enforced for this workspace")
        for note in notes:
            typer.echo(f"  {note}")
    if notes or not all(p.blocked for p in probes):
        typer.echo("Result: NOT everything is enforced; see the lines marked NOT.")
        raise typer.Exit(1)
    typer.echo("Result: everything listed is enforced, and every attempt was blocked.")


_CANARY_VAR = "AGENT_TEMPLATE_CHECK_CANARY"


def _run_probes(config: SandboxConfig) -> tuple[list[_Probe], tuple[str, ...]]:
    """Set up the targets (a secret outside, listening sockets), run the attempts, judge."""
    outside = Path(tempfile.mkdtemp(prefix="agent-template-check-"))
    canary = secrets.token_hex(8)
    (outside / "secret.txt").write_text(canary)
    (outside / "secret.txt").chmod(0o644)
    outside.chmod(0o777)  # so that only the sandbox, not file permissions, can stop them
    os.environ[_CANARY_VAR] = canary
    tcp = socket.socket()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        for sock in (tcp, udp):
            sock.setblocking(False)
        commands = {
            "read": f"cat {outside / 'secret.txt'}",
            "write": f"echo x > {outside / 'written.txt'}",
            "environment": f"env; cat /proc/{os.getpid()}/environ",
            "signal": f"kill -0 {os.getpid()}",
            "leave": "sleep 600 & echo $!",
        }
        if not config.network:
            commands["tcp"] = _network_command("tcp", tcp.getsockname()[1])
            commands["udp"] = _network_command("udp", udp.getsockname()[1])
        results = asyncio.run(_attempts(config, commands))
        probes = _judge(results, outside, canary, tcp, udp)
    finally:
        del os.environ[_CANARY_VAR]
        tcp.close()
        udp.close()
        shutil.rmtree(outside, ignore_errors=True)
    notes = next(iter(results.values())).notes if results else ()
    return probes, notes


async def _attempts(config: SandboxConfig, commands: dict[str, str]) -> dict[str, CommandResult]:
    from agent_template.services.sandbox import run_command

    limits = replace(config.limits, wall_s=min(config.wall_s, _PROBE_WALL_S))
    return {
        key: await run_command(
            command, workspace=config.workspace_dir, limits=limits, network=config.network
        )
        for key, command in commands.items()
    }


def _judge(
    results: dict[str, CommandResult],
    outside: Path,
    canary: str,
    tcp: socket.socket,
    udp: socket.socket,
) -> list[_Probe]:
    environment = results["environment"]
    probes = [
        _Probe("read outside the workspace", canary not in results["read"].output),
        _Probe("write outside the workspace", not (outside / "written.txt").exists()),
        _Probe(
            "the server's environment (env, /proc/PID/environ)",
            canary not in environment.output and environment.exit_code != 0,
        ),
        _Probe("signal the server", results["signal"].exit_code != 0),
        _leftover(results["leave"]),
    ]
    if "tcp" in results:
        probes.append(_Probe("TCP connect to 127.0.0.1", not _accepted(tcp)))
        probes.append(_Probe("UDP send to 127.0.0.1", not _received(udp)))
    return probes


def _leftover(result: CommandResult) -> _Probe:
    name = "leave a background process running"
    try:
        pid = int(result.output.split()[0])
    except (IndexError, ValueError):
        return _Probe(name, False, f"could not start one: {result.output.strip()[:200]}")
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        state = "gone"
    return _Probe(name, state in ("gone", "Z"), "killed when the command ended")


def _accepted(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def _received(receiver: socket.socket) -> bool:
    try:
        receiver.recv(64)
    except BlockingIOError:
        return False
    return True


def _network_command(kind: str, port: int) -> str:
    """A command that reaches 127.0.0.1:port: bash's /dev/tcp or /dev/udp, else Python."""
    bash = shutil.which("bash", path="/usr/bin:/bin")
    if bash:
        return f"{bash} -c 'echo probe > /dev/{kind}/127.0.0.1/{port}'"
    family = "SOCK_STREAM" if kind == "tcp" else "SOCK_DGRAM"
    code = (
        f"import socket; s = socket.socket(socket.AF_INET, socket.{family}); "
        f"s.connect(('127.0.0.1', {port})); s.send(b'probe')"
    )
    return f'{sys.executable} -c "{code}"'
