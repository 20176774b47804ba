"""The stdio transport: the server as a subprocess, its stderr in our log.

The SDK has a stdio transport too; this one exists because a person needs to know why a
server died (its exit code and last stderr line) and the server's stderr belongs in the
log, one record per line, not on the user's terminal. Shutdown follows the MCP spec: close
stdin, wait, then SIGTERM and SIGKILL to the server's whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import mcp.types as mt
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from agent_template.services.mcp._watch import ServerStartError, TransportWatch
from agent_template.services.mcp.config import StdioServerConfig

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

__all__ = ["stdio_transport"]

_log = logging.getLogger("agent_template.mcp")

STDOUT_LINE_LIMIT = 64 * 1024 * 1024  # one JSON-RPC message per line; images make long lines
STDIN_CLOSE_GRACE_S = 2.0  # the spec's first step: the server may exit once its stdin closes
TERM_GRACE_S = 2.0  # then SIGTERM, and this long before SIGKILL
KILL_WAIT_S = 2.0  # for the kernel to report a killed process
EXIT_REPORT_WAIT_S = 1.0  # after stdout closes, for the exit code that explains it
STDERR_FLUSH_WAIT_S = 0.5  # after stdout closes, for the last stderr lines
_EXIT_POLL_S = 0.02
_STDERR_CHUNK = 64 * 1024
_STDERR_LINE_MAX = 8 * 1024  # a longer stderr "line" is logged in pieces


@asynccontextmanager
async def stdio_transport(
    config: StdioServerConfig, watch: TransportWatch
) -> AsyncIterator[TransportStreams]:
    """Start the server and yield the SDK's (read, write) message streams.

    Raises:
        ServerStartError: the command or its working folder does not exist, or may not run.
    """
    process = await _spawn(config)
    watch.pid = process.pid
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
    stderr_done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pump_stdout, process, read_send, watch, stderr_done)
        tg.start_soon(_pump_stdin, process, write_receive, read_send)
        tg.start_soon(_pump_stderr, process, watch, stderr_done)
        try:
            yield read_receive, write_send
        finally:
            # Stopping must finish even when the caller is cancelled, or the process leaks.
            with anyio.CancelScope(shield=True):
                watch.stopping = True  # from here on, an exit is ours, not the server's doing
                await stop_process(process)
                await read_receive.aclose()
                await write_send.aclose()
            tg.cancel_scope.cancel()


async def _spawn(config: StdioServerConfig) -> asyncio.subprocess.Process:
    from mcp.client.stdio import get_default_environment

    env = get_default_environment() | dict(config.env)
    try:
        return await asyncio.create_subprocess_exec(
            config.command,
            *config.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=config.cwd,
            start_new_session=True,  # its own process group: stopped as a whole, spared Ctrl-C
            limit=STDOUT_LINE_LIMIT,
        )
    except FileNotFoundError as exc:
        if config.cwd is not None and exc.filename == str(config.cwd):
            raise ServerStartError(f"working folder not found: {config.cwd}") from None
        raise ServerStartError(f"command not found: {config.command}") from None
    except PermissionError:
        raise ServerStartError(f"cannot run {config.command}: permission denied") from None
    except OSError as exc:
        raise ServerStartError(f"cannot run {config.command}: {exc.strerror or exc}") from None


async def _pump_stdout(
    process: asyncio.subprocess.Process,
    send: anyio.abc.ObjectSendStream[SessionMessage | Exception],
    watch: TransportWatch,
    stderr_done: anyio.Event,
) -> None:
    """Server messages to the session; at the end, what became of the process."""
    assert process.stdout is not None
    async with send:
        delivering = True
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:
                _log.warning(
                    "%s: a message on stdout is over %d MiB; closing the connection",
                    watch.server,
                    STDOUT_LINE_LIMIT // (1024 * 1024),
                    extra={"mcp_server": watch.server},
                )
                break
            except OSError:
                break
            if not line:
                break
            message = _parse(line, watch.server) if delivering else None
            if message is None:
                continue  # after the session is gone, stdout is drained so the server can exit
            try:
                await send.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                delivering = False
        if not watch.stopping:
            watch.stdout_closed = True
            await wait_exit(process, EXIT_REPORT_WAIT_S)
            watch.returncode = process.returncode
            with anyio.move_on_after(STDERR_FLUSH_WAIT_S):
                await stderr_done.wait()
    watch.mark_lost()


def _parse(line: bytes, server: str) -> SessionMessage | None:
    text = line.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        return SessionMessage(mt.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except (ValidationError, ValueError):
        # A banner or a stray print() on stdout: not fatal, but the server should use stderr.
        _log.warning(
            "%s: ignored a line on stdout that is not an MCP message: %.200s",
            server,
            text,
            extra={"mcp_server": server},
        )
        return None


async def _pump_stdin(
    process: asyncio.subprocess.Process,
    receive: anyio.abc.ObjectReceiveStream[SessionMessage],
    read_send: anyio.abc.ObjectSendStream[SessionMessage | Exception],
) -> None:
    """Session messages to the server, one JSON line each."""
    assert process.stdin is not None
    try:
        async with receive:
            async for message in receive:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                process.stdin.write(data.encode() + b"\n")
                await process.stdin.drain()
    except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
        # The server stopped reading: end the session's read side so no request waits forever.
        await read_send.aclose()


async def _pump_stderr(
    process: asyncio.subprocess.Process, watch: TransportWatch, done: anyio.Event
) -> None:
    """Each stderr line to the ``agent_template.mcp`` log, the last few kept for causes."""
    assert process.stderr is not None
    pending = b""
    try:
        while chunk := await process.stderr.read(_STDERR_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            while len(pending) > _STDERR_LINE_MAX:
                lines.append(pending[:_STDERR_LINE_MAX])
                pending = pending[_STDERR_LINE_MAX:]
            for line in lines:
                _log_stderr(line, watch)
        _log_stderr(pending, watch)
    except OSError:
        pass  # the pipe broke: the process is gone, and the stdout pump reports how
    finally:
        done.set()


def _log_stderr(line: bytes, watch: TransportWatch) -> None:
    text = line.decode("utf-8", errors="replace").rstrip()
    if text.strip():
        watch.stderr_tail.append(text.strip())
        _log.info("%s: %s", watch.server, text, extra={"mcp_server": watch.server})


async def wait_exit(process: asyncio.subprocess.Process, within: float) -> bool:
    """Whether the process ended within ``within`` seconds.

    Polls ``returncode``: ``Process.wait()`` also waits for the pipes to close, which a
    grandchild holding them open would delay forever.
    """
    deadline = anyio.current_time() + within
    while process.returncode is None:
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(_EXIT_POLL_S)
    return True


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """Close stdin, wait, then SIGTERM and SIGKILL the process group; never raises."""
    if process.returncode is None and process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if not await wait_exit(process, STDIN_CLOSE_GRACE_S):
        _signal(process, signal.SIGTERM)
        if not await wait_exit(process, TERM_GRACE_S):
            _signal(process, signal.SIGKILL)
            if not await wait_exit(process, KILL_WAIT_S):
                _log.warning("MCP server process %d survived SIGKILL; leaving it", process.pid)
    # Helpers the server started may outlive it in its group; a group id stays reserved while
    # any member lives, so this reaches only them.
    _signal(process, signal.SIGTERM, group_only=True)


def _signal(
    process: asyncio.subprocess.Process, sig: signal.Signals, group_only: bool = False
) -> None:
    try:
        if sys.platform == "win32":  # pragma: no cover - no process groups to signal
            if not group_only:
                process.send_signal(sig)
        elif group_only:
            os.killpg(process.pid, 0)  # raises when the group is empty
            os.killpg(process.pid, sig)
        else:
            os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
