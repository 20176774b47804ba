"""``agent-client``: the terminal client's command line.

Settings come from the options, the environment and the user's ``client.toml`` (see
:mod:`agent_template.frontend.config`). Without a server URL it starts a local
``agent-server`` for the run and stops it on exit. When the app exits, the session's
transcript is printed, so it stays in the terminal's scrollback.

Nothing heavy is imported before the options are parsed: ``agent-client --help`` is quick.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from agent_template.frontend.config import ClientConfig
    from agent_template.frontend.local_server import LocalServer

__all__ = ["main", "parser"]

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

_DESCRIPTION = (
    "Chat with an agent-server in the terminal: streamed answers, tool calls, approvals, "
    "sessions and tasks. Without --url it starts a local agent-server for the session and "
    "stops it on exit (the offline model answers when no provider is configured)."
)
_EPILOG = (
    "Each option can also come from the environment (AGENT_CLIENT_URL, AGENT_CLIENT_TOKEN, "
    "AGENT_CLIENT_SESSION, AGENT_CLIENT_THEME) or from the keys url, token, session and theme "
    "of client.toml in the user's config folder (~/.config/agent-template/ on Linux; "
    "AGENT_CLIENT_CONFIG names another file). Options win over the environment, which wins "
    "over the file."
)


def parser() -> argparse.ArgumentParser:
    """The options of ``agent-client``."""
    p = argparse.ArgumentParser(prog="agent-client", description=_DESCRIPTION, epilog=_EPILOG)
    p.add_argument(
        "--url",
        help="the server, e.g. http://127.0.0.1:8000 (default: start a local one)",
    )
    p.add_argument("--token", help="an API token ('agent-template token create --user NAME')")
    p.add_argument("--session", help="the session to open (default: a new one)")
    p.add_argument("--theme", help="a Textual theme, e.g. textual-dark, nord, gruvbox")
    return p


def _fail(message: str, hint: str = "", code: int = EXIT_FAILED) -> int:
    print(f"agent-client: {message}", file=sys.stderr)
    if hint:
        print(hint, file=sys.stderr)
    return code


def _has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _label(config: ClientConfig, local: LocalServer | None) -> str:
    if local is not None:
        return f"local server {local.url.removeprefix('http://')}"
    return (config.url or "").split("://", 1)[-1].rstrip("/")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; returns the exit code."""
    args = parser().parse_args(argv)
    from agent_template.frontend.config import load_config
    from agent_template.frontend.connection import ClientError

    options = {"url": args.url, "token": args.token, "session": args.session, "theme": args.theme}
    try:
        config = load_config(options)
    except ClientError as exc:
        return _fail(exc.message, exc.hint)
    if not _has_terminal():
        return _fail(
            "needs a terminal (stdin and stdout must be a TTY).",
            "Run it in a terminal, or use 'agent-template run' or the REST API from scripts.",
            EXIT_USAGE,
        )
    local: LocalServer | None = None
    try:
        if config.url is None:
            from agent_template.frontend.local_server import LocalServer

            local = LocalServer()
            print("agent-client: starting a local agent-server...", file=sys.stderr, flush=True)
            url = local.start()
        else:
            url = config.url
        transcript = _run_app(config, url, local)
    except ClientError as exc:
        return _fail(exc.message, exc.hint)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if local is not None:
            local.stop()
    if transcript:
        sys.stdout.write(transcript if transcript.endswith("\n") else transcript + "\n")
        sys.stdout.flush()
    return 0


def _run_app(config: ClientConfig, url: str, local: LocalServer | None) -> str:
    """Run the app until it quits; the session's transcript."""
    from agent_template.frontend.app import AgentClientApp
    from agent_template.frontend.connection import Connection
    from agent_template.frontend.rest import Api

    connection = Connection(url, token=config.token)
    api = Api(url, token=config.token)
    app = AgentClientApp(
        connection,
        api,
        session_id=config.session,
        server_label=_label(config, local),
        theme=config.theme,
    )
    stops = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.getsignal(signum) for signum in stops}

    def on_sigterm(signum: int, frame: object) -> None:
        """Quit the app as its quit key does (SIGTERM, or the terminal closed), so the
        local server is stopped too."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KeyboardInterrupt from None
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.run_action("quit")))

    for signum in stops:
        signal.signal(signum, on_sigterm)
    try:
        transcript = app.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return transcript or ""


def run() -> None:
    """Entry point: exit with :func:`main`'s code."""
    raise SystemExit(main())
