"""A local ``agent-server`` for one run of ``agent-client`` (used when no ``--url`` is given).

It listens on a free loopback port, writes its output to a log file under the data folder
(the terminal belongs to the client), and is stopped with SIGTERM when the client exits
(SIGKILL if it has not stopped after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import httpx

from agent_template.frontend.connection import ClientError

__all__ = ["LocalServer", "default_data_dir"]

LOG_NAME: Final = "agent-client-server.log"
START_TIMEOUT_S: Final = 60.0
STOP_GRACE_S: Final = 15.0
_PORT_TRIES: Final = 3
_SERVER_CODE: Final = "from agent_template.cli import server_main; server_main()"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The server's data folder (``DATA_DIR``, from the environment or ``.env``)."""
    env = os.environ if env is None else env
    if env.get("DATA_DIR"):
        return Path(env["DATA_DIR"]).expanduser()
    try:
        from agent_template.config import Settings

        return Path(Settings().data_dir)
    except Exception:  # a bad setting: the server itself will say which
        return Path("data")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalServer:
    """An ``agent-server`` child process on a free loopback port.

    Args:
        data_dir: where its log goes (default: the server's ``DATA_DIR``).
        env: its environment (default: this process's).
        start_timeout_s: the longest wait for it to answer ``/health``.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.data_dir = data_dir if data_dir is not None else default_data_dir(self.env)
        self.log_path = self.data_dir / LOG_NAME
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (after :meth:`start`)."""
        if self.port is None:
            raise RuntimeError("the local server is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the server and wait until it answers; returns its base URL.

        Raises:
            ClientError: ``local_server_failed`` with the end of its log.
        """
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        except OSError as exc:
            raise ClientError(
                "local_server_failed",
                f"Cannot write the local server's log {self.log_path}: {exc.strerror or exc}.",
                "Set DATA_DIR to a folder you can write, or pass --url to use a running server.",
            ) from None
        for attempt in range(_PORT_TRIES):
            self.port = _free_port()
            offset = self._spawn()
            try:
                self._wait_healthy()
                return self.url
            except _PortTaken:  # another program took the port meanwhile: take another
                if attempt == _PORT_TRIES - 1:
                    raise self._failure(offset) from None
            except _Died:
                raise self._failure(offset) from None
        raise AssertionError("unreachable")

    def _spawn(self) -> int:
        """Start the process; the log's offset where its output begins."""
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-c", _SERVER_CODE, "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        assert self._log is not None
        self._log.write(f"--- agent-client started: {' '.join(command[3:])}\n".encode())
        self._log.flush()
        offset = self._log.tell()
        # In the client's own session and process group: a terminal that closes hangs both
        # up, so the server never outlives its client.
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        return offset

    def _wait_healthy(self) -> None:
        process = self.process
        assert process is not None
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    if "in use" in self.log_tail(5):
                        raise _PortTaken
                    raise _Died
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{self.url}/health").status_code == 200:
                        return
                time.sleep(0.1)
        self.stop(grace_s=2.0)
        raise _Died

    def _failure(self, offset: int) -> ClientError:
        code = self.process.returncode if self.process is not None else None
        tail = self.log_tail(12, offset=offset)
        how = f"stopped (exit {code})" if code is not None else "did not answer in time"
        return ClientError(
            "local_server_failed",
            f"The local agent-server {how} while starting:\n{tail}".rstrip(),
            f"The whole log is {self.log_path}. Fix what it says, or pass --url to use a "
            "server that runs already.",
        )

    def log_tail(self, lines: int = 12, *, offset: int = 0) -> str:
        """The last ``lines`` lines of the server's log (since ``offset``)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read()[-20_000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace_s``; its exit code."""
        process = self.process
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait(5)
            code = process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _PortTaken(Exception):
    pass


class _Died(Exception):
    pass
