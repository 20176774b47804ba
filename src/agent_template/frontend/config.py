"""Where ``agent-client`` finds its settings: command-line options, then the environment,
then a TOML file in the platform's config folder.

============  ========================  ==========================================
setting       environment               ``client.toml`` key
============  ========================  ==========================================
``--url``     ``AGENT_CLIENT_URL``      ``url``: the server (none: a local one)
``--token``   ``AGENT_CLIENT_TOKEN``    ``token``: an API token
``--session`` ``AGENT_CLIENT_SESSION``  ``session``: the session to open
``--theme``   ``AGENT_CLIENT_THEME``    ``theme``: a Textual theme name
============  ========================  ==========================================

The file is ``$XDG_CONFIG_HOME/agent-template/client.toml`` (``~/.config/...``) on Linux,
``~/Library/Application Support/agent-template/client.toml`` on macOS and
``%APPDATA%\\agent-template\\client.toml`` on Windows; ``AGENT_CLIENT_CONFIG`` names another.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent_template.frontend.connection import ClientError

__all__ = ["KEYS", "ClientConfig", "config_path", "load_config"]

KEYS: Final = ("url", "token", "session", "theme")
_ENV: Final = {key: f"AGENT_CLIENT_{key.upper()}" for key in KEYS}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The client's settings, resolved; ``path`` is the config file (it may not exist)."""

    url: str | None = None
    token: str | None = None
    session: str | None = None
    theme: str | None = None
    path: Path | None = None


def config_path(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The user's config file for the client on this platform (it may not exist)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    named = env.get("AGENT_CLIENT_CONFIG")
    if named:
        return Path(named).expanduser()
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "win32":
        base = Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData" / "Roaming"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_CONFIG_HOME")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return base / "agent-template" / "client.toml"


def _bad(path: Path, problem: str) -> ClientError:
    return ClientError(
        "bad_config",
        f"{path}: {problem}.",
        f"Fix or remove that file; it may hold the string keys {', '.join(KEYS)}.",
    )


def _read_file(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(path, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"is not valid TOML ({exc})") from None
    values: dict[str, str] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise _bad(path, f"unknown key '{key}'")
        if not isinstance(value, str):
            raise _bad(path, f"key '{key}' must be a string, not {type(value).__name__}")
        if value.strip():
            values[key] = value.strip()
    return values


def load_config(
    options: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> ClientConfig:
    """The settings from ``options`` (command line), then ``env``, then the config file.

    Raises:
        ClientError: ``bad_config``, naming the file and the key, for a file that cannot be
            used.
    """
    options = options or {}
    env = os.environ if env is None else env
    path = config_path(env) if path is None else path
    from_file = _read_file(path)
    resolved: dict[str, str | None] = {}
    for key in KEYS:
        given = options.get(key)
        if given is None or not given.strip():
            given = env.get(_ENV[key]) or None
        if given is None or not given.strip():
            given = from_file.get(key)
        resolved[key] = given.strip() if given and given.strip() else None
    return ClientConfig(**resolved, path=path)
