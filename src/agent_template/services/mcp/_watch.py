"""What a transport saw of its server, and a failure told in one line.

A connection that fails raises whatever the layer underneath raised: an exception group
from a task group, the SDK's ``MCPError``, an HTTP client error. :func:`describe_failure`
turns that, with what the transport recorded (an exit code, the last stderr line, an HTTP
status), into the cause a person reads: ``command not found: foo``, ``exited with code 1:
<last stderr line>``, ``HTTP 401 from URL``.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from agent_template.services.mcp.config import McpServerConfig

__all__ = ["STDERR_TAIL_LINES", "ServerStartError", "TransportWatch", "describe_failure"]

STDERR_TAIL_LINES = 20  # kept per server, to explain a failure with its last words
_MESSAGE_MAX = 300  # characters of a server's own text put in a cause


class ServerStartError(Exception):
    """The server could not even be started; the message is the whole cause."""


class TransportWatch:
    """Facts one connection attempt gathered: the process, its stderr, HTTP statuses.

    ``on_lost`` is called once, when the transport sees the server go away (its stdout
    closed, the event stream ended).
    """

    def __init__(self, server: str, on_lost: Callable[[], None] = lambda: None) -> None:
        self.server = server
        self.pid: int | None = None
        self.returncode: int | None = None
        self.stdout_closed = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.http_status: int | None = None
        self.stopping = False  # the client is closing the connection itself
        self.lost = False
        self._on_lost = on_lost

    def mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            self._on_lost()

    def saw_status(self, status: int) -> None:
        if status >= 400:
            self.http_status = status

    @property
    def last_stderr(self) -> str | None:
        return self.stderr_tail[-1] if self.stderr_tail else None

    def exit_cause(self) -> str | None:
        """How the process ended, with its last stderr line; None while it runs."""
        if self.returncode is None:
            return "closed its stdout" if self.stdout_closed else None
        if self.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-self.returncode}"
        else:
            how = f"exited with code {self.returncode}"
        last = self.last_stderr
        return f"{how}: {_clip(last)}" if last else how


def describe_failure(exc: BaseException, config: McpServerConfig, watch: TransportWatch) -> str:
    """The one-line cause of a failed or lost connection."""
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, ServerStartError):
            return str(leaf)
    exited = watch.exit_cause()
    if exited:
        return exited
    url = safe_url(config.target) if config.transport != "stdio" else ""
    if watch.http_status is not None:
        return f"HTTP {watch.http_status} from {url}{_status_hint(watch.http_status)}"
    return _describe(leaves[0] if leaves else exc, url)


def timeout_cause(seconds: float, watch: TransportWatch) -> str:
    """A start-up that ran out of time, with the server's last stderr line if it wrote one."""
    cause = f"timed out after {seconds:g} s"
    last = watch.last_stderr
    return f"{cause} (last stderr line: {_clip(last)})" if last else cause


def safe_url(url: str) -> str:
    """``url`` without credentials or query, which may carry secrets."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _describe(exc: BaseException, url: str) -> str:
    import httpx2
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        return f"HTTP {status} from {url}{_status_hint(status)}"
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect to {url} ({_clip(str(exc)) or 'connection refused'})"
    if isinstance(exc, httpx2.TimeoutException):
        return f"{url} did not answer in time"
    if isinstance(exc, httpx2.HTTPError):
        return f"HTTP error from {url}: {_clip(str(exc)) or type(exc).__name__}"
    if isinstance(exc, MCPError):
        return f"the server answered with an error: {_clip(exc.error.message)}"
    if isinstance(exc, TimeoutError):
        return "did not answer in time"
    text = _clip(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return ' (check the credentials in its "headers")'
    if status == 404:
        return ' (check its "url")'
    return ""


def _clip(text: str | None) -> str:
    """One line, not too long, without a closing period (causes are put inside sentences)."""
    text = " ".join((text or "").split()).rstrip(".")
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 3] + "..."
