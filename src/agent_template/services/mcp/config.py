"""The MCP config file: the ecosystem's ``{"mcpServers": {...}}`` JSON, read and checked.

A server runs a command (stdio) or is reached at a URL (streamable HTTP, or SSE for older
servers). Every string may name environment variables as ``${VAR}`` or ``${VAR:-default}``,
so secrets stay out of the file. Keys this client does not know (other clients' settings) are
ignored, so one file can serve several tools. Nothing here imports the MCP SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from agent_template.services.mcp.errors import McpConfigError

__all__ = [
    "SERVER_NAME",
    "HttpServerConfig",
    "McpServerConfig",
    "StdioServerConfig",
    "load_mcp_config",
    "parse_mcp_config",
]

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_VARIABLE = re.compile(r"\$\{([^}:]*)(?::-([^}]*))?\}")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Other clients spell the transport with "type", and streamable HTTP in several ways.
_TRANSPORTS: dict[str, Literal["stdio", "http", "sse"]] = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamable_http": "http",
    "streamablehttp": "http",
    "sse": "sse",
}

Transport: TypeAlias = Literal["stdio", "http", "sse"]


@dataclass(frozen=True, slots=True)
class StdioServerConfig:
    """A server this client starts as a subprocess and talks to over stdin and stdout.

    The subprocess gets a minimal environment (``PATH``, ``HOME``, ``USER``, ``SHELL``,
    ``TERM``, ``LOGNAME``) plus ``env``: secrets in this process's environment reach a server
    only when its entry names them.
    """

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_timeout: float = 30.0
    call_timeout: float = 60.0
    enabled: bool = True
    lazy: bool = False
    transport: Literal["stdio"] = "stdio"

    @property
    def target(self) -> str:
        """The command line, for messages."""
        return " ".join([self.command, *self.args])


@dataclass(frozen=True, slots=True)
class HttpServerConfig:
    """A server reached at ``url``: streamable HTTP (``http``) or the older ``sse``."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    transport: Literal["http", "sse"] = "http"
    startup_timeout: float = 30.0
    call_timeout: float = 60.0
    enabled: bool = True
    lazy: bool = False

    @property
    def target(self) -> str:
        """The URL, for messages."""
        return self.url


McpServerConfig: TypeAlias = StdioServerConfig | HttpServerConfig


def load_mcp_config(
    path: Path,
    *,
    environ: Mapping[str, str],
    startup_timeout: float = 30.0,
    call_timeout: float = 60.0,
) -> list[McpServerConfig]:
    """Read the servers of the config file at ``path``; a missing file means no servers.

    Args:
        path: the JSON file (``MCP_CONFIG``).
        environ: the variables ``${VAR}`` may name.
        startup_timeout: seconds a server may take to start, unless its entry says.
        call_timeout: seconds one tool call may take, unless its entry says.

    Raises:
        McpConfigError: the file cannot be read, is not JSON, or an entry is wrong; one line
            naming the file and the problem.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise McpConfigError(path, f"cannot read it ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(
            path, f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    return parse_mcp_config(
        data,
        path=path,
        environ=environ,
        startup_timeout=startup_timeout,
        call_timeout=call_timeout,
    )


def parse_mcp_config(
    data: Any,
    *,
    path: Path,
    environ: Mapping[str, str],
    startup_timeout: float = 30.0,
    call_timeout: float = 60.0,
) -> list[McpServerConfig]:
    """Check decoded JSON and build one config per server, in the file's order.

    ``path`` names the file in messages, and relative ``cwd`` values are taken from its folder.

    Raises:
        McpConfigError: naming the file, the server and the problem.
    """
    if not isinstance(data, dict):
        raise McpConfigError(path, 'the file must hold a JSON object: {"mcpServers": {...}}')
    servers = data.get("mcpServers", data.get("servers"))
    if servers is None:
        if data:
            raise McpConfigError(path, 'no "mcpServers" object: {"mcpServers": {NAME: {...}}}')
        return []
    if not isinstance(servers, dict):
        raise McpConfigError(path, '"mcpServers" must be an object of servers by name')
    defaults = _Defaults(startup_timeout, call_timeout)
    return [
        _parse_server(str(name), entry, path=path, environ=environ, defaults=defaults)
        for name, entry in servers.items()
    ]


@dataclass(frozen=True, slots=True)
class _Defaults:
    startup_timeout: float
    call_timeout: float


class _Entry:
    """One server's entry, with the file and name every message needs."""

    def __init__(self, name: str, raw: dict[str, Any], path: Path, environ: Mapping[str, str]):
        self.name = name
        self.raw = raw
        self.path = path
        self.environ = environ

    def fail(self, problem: str) -> McpConfigError:
        return McpConfigError(self.path, problem, server=self.name)

    def expand(self, value: str, key: str) -> str:
        """``value`` with each ``${VAR}`` and ``${VAR:-default}`` replaced."""

        def substitute(match: re.Match[str]) -> str:
            variable, default = match.group(1), match.group(2)
            if not _VARIABLE_NAME.match(variable):
                raise self.fail(f"{key}: {match.group(0)!r} does not name a variable")
            found = self.environ.get(variable)
            if found:
                return found
            if default is not None:
                return default
            if found is not None:
                return found  # set but empty, and no default given
            raise self.fail(
                f"{key} uses ${{{variable}}}, which is not set. Set {variable} in the "
                f"environment, or give a default: ${{{variable}:-value}}"
            )

        return _VARIABLE.sub(substitute, value)

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(f'"{key}" is required')
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f'"{key}" must be a non-empty string')
        return self.expand(value, f'"{key}"')

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f'"{key}" must be a list of strings')
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail(f'"{key}"[{i}] must be a string')
            out.append(self.expand(str(item), f'"{key}"[{i}]'))
        return tuple(out)

    def mapping(self, key: str) -> dict[str, str]:
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f'"{key}" must be an object of strings')
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.fail(f'"{key}".{k} must be a string')
            out[str(k)] = self.expand(str(v), f'"{key}".{k}')
        return out

    def seconds(self, key: str, default: float) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(f'"{key}" must be a number of seconds above 0')
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f'"{key}" must be true or false')
        return value


def _parse_server(
    name: str, raw: Any, *, path: Path, environ: Mapping[str, str], defaults: _Defaults
) -> McpServerConfig:
    if not SERVER_NAME.match(name):
        raise McpConfigError(
            path,
            f"server name {name!r} may hold only letters, digits, '-' and '_' "
            "(it prefixes the names of its tools)",
        )
    if not isinstance(raw, dict):
        raise McpConfigError(path, "the entry must be an object", server=name)
    entry = _Entry(name, raw, path, environ)
    transport = _transport(entry)
    common: dict[str, Any] = {
        "startup_timeout": entry.seconds("startup_timeout", defaults.startup_timeout),
        "call_timeout": entry.seconds("call_timeout", defaults.call_timeout),
        "enabled": entry.flag("enabled", True) and not entry.flag("disabled", False),
        "lazy": entry.flag("lazy", False),
    }
    if transport == "stdio":
        command = entry.string("command", required=True)
        assert command is not None
        cwd = entry.string("cwd")
        return StdioServerConfig(
            name=name,
            command=command,
            args=entry.strings("args"),
            env=entry.mapping("env"),
            cwd=(path.parent / cwd) if cwd else None,
            **common,
        )
    url = entry.string("url", required=True)
    assert url is not None
    if not url.startswith(("http://", "https://")):
        raise entry.fail(f'"url" must start with http:// or https://, not {url!r}')
    return HttpServerConfig(
        name=name, url=url, headers=entry.mapping("headers"), transport=transport, **common
    )


def _transport(entry: _Entry) -> Transport:
    """The entry's transport: named by ``transport`` (or ``type``), else implied by its keys."""
    has_command, has_url = "command" in entry.raw, "url" in entry.raw
    if has_command and has_url:
        raise entry.fail('give "command" (a program to run) or "url" (a server), not both')
    named = entry.raw.get("transport", entry.raw.get("type"))
    if named is None:
        if has_command:
            return "stdio"
        if has_url:
            return "http"
        raise entry.fail('needs "command" (a program to run) or "url" (a server to connect to)')
    transport = _TRANSPORTS.get(str(named).lower()) if isinstance(named, str) else None
    if transport is None:
        raise entry.fail(f'transport {named!r} is not one of "stdio", "http", "sse"')
    if transport == "stdio" and has_url:
        raise entry.fail('a "url" server uses transport "http" or "sse", not "stdio"')
    if transport != "stdio" and has_command:
        raise entry.fail(f'a "command" server uses transport "stdio", not {transport!r}')
    return transport
