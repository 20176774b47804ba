"""``agent-server``: the API served by uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT the server stops accepting connections, gives running tasks
``SHUTDOWN_GRACE_S`` to finish (their streams keep flowing to their clients meanwhile), marks
the rest interrupted with their partial answers stored, closes every WebSocket with 1012
("service restart") so clients reconnect, and closes its stores. A second Ctrl-C quits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agent_template.config import Settings

__all__ = ["app_factory", "main", "parse_args"]

log = logging.getLogger("agent_template.server")

_EXIT_FAILED = 1
_EXIT_USAGE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agent-server",
        description=(
            "Serve the agent over REST, Server-Sent Events and WebSocket (/ws). Settings come "
            "from the environment and .env; the options below override them."
        ),
    )
    parser.add_argument("--host", help="address to bind (SERVER_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (SERVER_PORT; default 8000)")
    parser.add_argument(
        "--debug", action="store_true", help="log at DEBUG level and show tracebacks in the log"
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="log level (LOG_LEVEL)",
    )
    parser.add_argument(
        "--reload", action="store_true", help="restart when the code changes (development)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address with AUTH_REQUIRED off (anyone who can "
        "reach it acts as the local user)",
    )
    return parser.parse_args(argv)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _settings_for(args: argparse.Namespace) -> Settings:
    from agent_template.config import load_settings

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["server_host"] = args.host
    if args.port is not None:
        overrides["server_port"] = args.port
    if args.debug:
        overrides["log_level"] = "DEBUG"
    elif args.log_level:
        overrides["log_level"] = args.log_level
    return load_settings(**overrides)


def app_factory() -> FastAPI:
    """The app from the environment's settings (what ``--reload`` imports in each worker)."""
    from agent_template.api.app import create_app

    return create_app()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use is found (and said) before start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio turns on TCP_NODELAY (else each response waits ~40 ms
    # on the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _fail(message: str, code: int = _EXIT_FAILED) -> None:
    print(f"agent-server: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``agent-server``."""
    from agent_template.errors import ConfigurationError

    args = parse_args(argv)
    try:
        settings = _settings_for(args)
    except ConfigurationError as exc:
        _fail(str(exc), _EXIT_USAGE)
        return
    host, port = settings.server_host, settings.server_port
    if not settings.auth_required and not _is_loopback_host(host) and not args.insecure:
        _fail(
            f"refusing to serve {host} without auth: anyone who can reach it would act as "
            "the local user. Set AUTH_REQUIRED=true and create tokens with "
            "'agent-template token create --user NAME', or bind 127.0.0.1, or pass "
            "--insecure if you really mean it.",
            _EXIT_USAGE,
        )
    from agent_template.utils.logging_setup import configure_logging

    configure_logging(
        settings.log_level, settings.log_format, settings.log_file, console_level=logging.INFO
    )
    if not args.debug:  # one line per request goes to the log file, not the terminal
        for handler in logging.getLogger("agent_template").handlers:
            if type(handler) is logging.StreamHandler:
                handler.addFilter(lambda record: record.name != "agent_template.access")
    if not settings.auth_required and not _is_loopback_host(host):
        log.warning(
            "INSECURE: serving %s with AUTH_REQUIRED off; every client acts as the local user",
            host,
        )
    try:
        sock = _bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            _fail(
                f"port {port} on {host} is in use (another agent-server?); stop it or "
                "choose another port with --port or SERVER_PORT."
            )
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return
    shown = f"[{host}]" if ":" in host else host
    log.info("agent-server on http://%s:%d (WebSocket ws://%s:%d/ws)", shown, port, shown, port)
    if args.reload:
        sock.close()
        _serve_reloading(settings, args)
        return
    from agent_template.api.app import create_app
    from agent_template.utils.gc_tuning import tune_gc

    tune_gc()
    server = _graceful_server(create_app(settings), settings)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass
    finally:
        sock.close()
    if not server.started:
        raise SystemExit(_EXIT_FAILED)  # start-up failed; the error is in the log


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "log_level": settings.log_level.lower(),
        "access_log": False,  # the app logs each request, with its id
        "lifespan": "on",
        # The app answers a frame over MAX_REQUEST_BYTES with an error and keeps the connection;
        # only far larger ones are cut off by the protocol layer.
        "ws_max_size": settings.max_request_bytes * 4 + 65536,
        # Per-message compression would compress each shared frame again per connection;
        # token-sized frames barely shrink.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_s + 5,
        "server_header": False,
    }


def _serve_reloading(settings: Settings, args: argparse.Namespace) -> None:
    import os

    import uvicorn

    # The reloading worker is a new process: it reads the same settings from the environment.
    os.environ["SERVER_HOST"] = settings.server_host
    os.environ["SERVER_PORT"] = str(settings.server_port)
    os.environ["LOG_LEVEL"] = settings.log_level
    uvicorn.run(
        "agent_template.api.server:app_factory",
        factory=True,
        host=settings.server_host,
        port=settings.server_port,
        reload=True,
        reload_dirs=[str(Path(__file__).resolve().parents[1])],
        **_uvicorn_options(settings),
    )


def _graceful_server(app: FastAPI, settings: Settings) -> Any:
    """A uvicorn server that drains the agent before uvicorn closes connections."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in getattr(self, "servers", []):
                server.close()  # take no new connections while running tasks finish
            state = getattr(app.state, "server", None)
            if state is not None:
                from agent_template.api.lifecycle import drain

                try:
                    await asyncio.wait_for(drain(state), settings.shutdown_grace_s + 5)
                except TimeoutError:
                    log.error("shutdown: tasks did not stop in time; closing anyway")
            await super().shutdown(sockets)

    return GracefulServer(uvicorn.Config(app, **_uvicorn_options(settings)))
