"""Settings from the environment and ``.env``, validated once at start-up.

Build a :class:`Settings` (or call :func:`load_settings`) where the program starts and pass it
to the components that need it; nothing deeper reads the environment. ``settings`` is a lazily
built module attribute for scripts that want the defaults.

The environment and the ``.env`` file are read here rather than by pydantic-settings, whose
import alone would add a sixth of a second to every command's start-up.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agent_template.errors import ConfigurationError

__all__ = ["PROVIDER_NAMES", "Settings", "load_settings", "read_env_file", "settings"]

PROVIDER_NAMES = ("openai", "anthropic", "deepseek", "qwen", "ollama", "local", "test")
ProviderName = Literal["openai", "anthropic", "deepseek", "qwen", "ollama", "local", "test"]

# What each checked variable must look like, for start-up messages.
_EXPECTED = {
    "DEFAULT_MODEL_PROVIDER": "one of " + ", ".join(PROVIDER_NAMES),
    "FALLBACK_PROVIDERS": "a comma-separated list of provider or provider:model, "
    "for example 'anthropic,deepseek:deepseek-chat' (providers: " + ", ".join(PROVIDER_NAMES) + ")",
    "SERVER_PORT": "an integer from 1 to 65535",
    "MAX_CONCURRENT_TASKS": "a positive integer",
    "MAX_CONTEXT_LENGTH": "a positive integer (tokens)",
    "CONTEXT_COMPRESSION_THRESHOLD": "a number greater than 0 and at most 1, such as 0.8",
    "LOG_LEVEL": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    "LOG_FORMAT": "json or text",
    "DATABASE_URL": "sqlite:///path/to/file.db or postgresql+asyncpg://user@host:5432/db",
    "LOAD_BALANCING": "none, round_robin or least_latency",
    "MODEL_TIMEOUT": "a positive number of seconds",
    "MODEL_ATTEMPT_TIMEOUT": "a positive number of seconds",
    "MODEL_CALL_TIMEOUT": "a positive number of seconds",
    **{
        var: "an http:// or https:// URL with a host, such as " + example
        for var, example in (
            ("OPENAI_BASE_URL", "http://localhost:8080/v1"),
            ("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            ("DEEPSEEK_BASE_URL", "https://api.deepseek.com"),
            ("QWEN_BASE_URL", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
            ("OLLAMA_HOST", "http://localhost:11434"),
            ("LOCAL_BASE_URL", "http://localhost:8000/v1"),
        )
    },
    "TOOL_TIMEOUT": "a positive number of seconds",
    "AUTH_REQUIRED": "true or false",
    "MAX_REQUEST_BYTES": "an integer of at least 1024 (bytes)",
    "RATE_LIMIT_PER_MINUTE": "an integer, 0 for no limit",
    "MAX_TASKS_PER_USER": "an integer, 0 for no limit",
    "SHUTDOWN_GRACE_S": "a number of seconds, 0 or more",
    "MAX_TURNS": "a positive integer",
    "MCP_STARTUP_TIMEOUT": "a positive number of seconds",
    "MCP_CALL_TIMEOUT": "a positive number of seconds",
    "SANDBOX_NETWORK": "true or false",
    "SANDBOX_CPU_S": "a positive integer (seconds)",
    "SANDBOX_MEMORY_MB": "an integer of at least 16 (MB)",
    "SANDBOX_WALL_S": "a positive number of seconds",
    "SANDBOX_MAX_PROCESSES": "a positive integer",
    "SANDBOX_OUTPUT_BYTES": "an integer of at least 1024 (bytes)",
    "APPROVAL_TIMEOUT_S": "a positive number of seconds",
    "SUBAGENT_MAX_DEPTH": "an integer, 0 or more (0: no subagents)",
    "SUBAGENT_MAX_CONCURRENT": "a positive integer",
}


class Settings(BaseModel):
    """Every setting of agent-template. Environment variables are the upper-case field names.

    Each value comes from the first of: a keyword argument, the environment (the variable's
    name in any case), the ``.env`` file (``_env_file``: a path, or None for none), the default.

    Raises:
        pydantic.ValidationError: a value does not have the form its setting needs
            (:func:`load_settings` turns that into a message naming each variable).
    """

    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, _env_file: str | Path | None = ".env", **values: Any) -> None:
        super().__init__(**{**_from_environment(_env_file), **values})

    # Providers and their credentials. A key may hold several comma-separated keys, which
    # are then load-balanced as equivalent providers.
    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None
    qwen_api_key: SecretStr | None = None
    local_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    deepseek_base_url: str = "https://api.deepseek.com"
    qwen_base_url: str = "https://dashscope.aliyuncs.com/compatible-mode/v1"
    ollama_host: str = "http://localhost:11434"
    local_base_url: str | None = None

    # None means: the first provider with a key, else the offline ``test`` provider.
    default_model_provider: ProviderName | None = None
    default_model: str | None = None
    fallback_providers: list[str] = Field(default_factory=list)
    load_balancing: Literal["none", "round_robin", "least_latency"] = "none"
    model_timeout: float = Field(60.0, gt=0)  # a stalled connection or read
    model_attempt_timeout: float = Field(300.0, gt=0)  # one attempt, request to finish
    model_call_timeout: float = Field(600.0, gt=0)  # one call, retries and failover included
    model_max_retries: int = Field(2, ge=0)
    model_retry_base_delay: float = Field(0.5, ge=0)
    model_retry_max_delay: float = Field(20.0, ge=0)
    circuit_breaker_threshold: int = Field(5, ge=1)
    circuit_breaker_cooldown: float = Field(30.0, ge=0)

    # Server
    server_host: str = "127.0.0.1"
    server_port: int = Field(8000, ge=1, le=65535)
    # Auth: bearer tokens from ``agent-template token create``. Off: loopback clients only.
    auth_required: bool = False
    cors_origins: list[str] = Field(default_factory=list)  # empty: no CORS headers
    max_request_bytes: int = Field(1024 * 1024, ge=1024)  # a request body or WebSocket frame
    rate_limit_per_minute: int = Field(120, ge=0)  # requests per user; 0: unlimited
    max_tasks_per_user: int = Field(8, ge=0)  # live tasks per user; 0: unlimited
    shutdown_grace_s: float = Field(10.0, ge=0)  # running tasks may finish within this
    ws_queue_frames: int = Field(512, ge=8)  # frames buffered per WebSocket before coalescing
    ws_heartbeat_s: float = Field(20.0, gt=0)  # seconds between heartbeat frames

    # Storage
    database_url: str = "sqlite:///./data/agent_template.db"
    redis_url: str | None = None
    cache_backend: Literal["memory", "sqlite", "redis"] | None = None  # None: redis if set
    # Prefix of every cache key; None: one derived from DATABASE_URL, so two databases that
    # share a Redis never see each other's sessions.
    cache_namespace: str | None = None
    data_dir: Path = Path("./data")
    session_ttl: float | None = Field(None, gt=0)  # seconds idle before cleanup; None: keep
    context_window_messages: int = Field(200, ge=2)
    checkpoint_interval: float = Field(1.0, gt=0)  # seconds between saves of a streaming answer
    task_lease_seconds: float = Field(15.0, gt=0)

    # Streams: each task's numbered chunks, kept for clients that join late or resume
    stream_retain_chunks: int = Field(10_000, ge=1)
    stream_retain_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    stream_buffer_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    stream_linger: float = Field(300.0, ge=0)

    # Agent
    max_concurrent_tasks: int = Field(10, ge=1)
    max_context_length: int = Field(8000, ge=1)
    context_compression_threshold: float = Field(0.8, gt=0, le=1)
    context_compression: bool = True  # off: requests are sent whole, whatever their size
    max_turns: int = Field(20, ge=1)
    tool_timeout: float = Field(60.0, gt=0)

    # Tools: MCP servers, the workspace and sandbox of the built-in tools, permissions,
    # approvals and subagents
    mcp_config: Path = Path(".mcp.json")  # {"mcpServers": {...}}; a missing file: no servers
    mcp_startup_timeout: float = Field(30.0, gt=0)  # seconds a server may take to start
    mcp_call_timeout: float = Field(60.0, gt=0)  # seconds one MCP tool call may take
    workspace_dir: Path = Path(".")  # the folder the built-in file and shell tools work in
    builtin_tools: bool = True  # shell, read/write/edit file, list, glob, grep
    sandbox_network: bool = False  # commands of the shell tool may use the network
    sandbox_cpu_s: int = Field(30, ge=1)  # CPU seconds one command may use
    sandbox_memory_mb: int = Field(1024, ge=16)  # address space of one command
    sandbox_wall_s: float = Field(120.0, gt=0)  # seconds one command may run
    sandbox_max_processes: int = Field(64, ge=1)  # processes a command may run at once
    sandbox_output_bytes: int = Field(64 * 1024, ge=1024)  # output kept per command
    permissions_config: Path | None = None  # a JSON file of allow / ask / deny rules
    approval_timeout_s: float = Field(300.0, gt=0)  # an unanswered approval is a denial
    subagents_config: Path | None = None  # a JSON file declaring subagent types
    subagent_max_depth: int = Field(2, ge=0)  # 0: no subagents
    subagent_max_concurrent: int = Field(4, ge=1)  # children of one run at once

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    log_file: Path | None = Path("./data/logs/agent.log")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "default_model_provider",
        "default_model",
        "openai_base_url",
        "anthropic_base_url",
        "local_base_url",
        "redis_url",
        "cache_backend",
        "cache_namespace",
        "session_ttl",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "openai_base_url",
        "anthropic_base_url",
        "deepseek_base_url",
        "qwen_base_url",
        "ollama_host",
        "local_base_url",
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        try:
            parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("invalid port") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("not an http(s) URL with a host")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme = value.partition("://")[0].split("+")[0]
        if "://" not in value or scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("unsupported database URL")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("fallback_providers", mode="before")
    @classmethod
    def _split_fallbacks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for item in value:
                name = str(item).partition(":")[0]
                if name not in PROVIDER_NAMES:
                    raise ValueError(f"unknown provider {name!r}")
        return value

    def api_key(self, provider: str) -> str | None:
        """The raw API key (or comma-separated keys) configured for ``provider``."""
        secret: SecretStr | None = getattr(self, f"{provider}_api_key", None)
        value = secret.get_secret_value().strip() if secret else ""
        return value or None


def _from_environment(env_file: str | Path | None) -> dict[str, Any]:
    """Setting values from the ``.env`` file, overridden by the environment's."""
    names = Settings.model_fields.keys()
    values: dict[str, Any] = {}
    if env_file is not None:
        for key, value in read_env_file(Path(env_file)).items():
            if key.lower() in names:
                values[key.lower()] = value
    environ = {key.lower(): value for key, value in os.environ.items()}
    values.update({name: environ[name] for name in names if name in environ})
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of a ``.env`` file ({} when there is none).

    Understood: blank lines and ``#`` comments, an ``export`` prefix, values in single quotes
    (taken as written) or double quotes (with ``\\n``, ``\\t``, ``\\"`` and ``\\\\``
    escapes), and unquoted values, which end at `` #``. Variables are not expanded.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        values[key] = _env_value(value.strip())
    return values


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _env_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == '"' and value.rfind('"') > 0:
        inner = value[1 : value.rfind('"')]
        out: list[str] = []
        chars = iter(inner)
        for char in chars:
            if char == "\\":
                following = next(chars, "")
                out.append(_ESCAPES.get(following, "\\" + following))
            else:
                out.append(char)
        return "".join(out)
    comment = value.find(" #")
    return (value[:comment] if comment >= 0 else value).strip()


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        var = str(err["loc"][0]).upper() if err["loc"] else "settings"
        expected = _EXPECTED.get(var)
        got = err.get("input")
        got_part = f" (got {got!r})" if isinstance(got, str | int | float) else ""
        reason = f"expected {expected}" if expected else err["msg"]
        lines.append(f"  {var}: {reason}{got_part}")
    return "Invalid configuration:\n" + "\n".join(lines) + "\nFix it in .env or the environment."


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, ``.env`` and ``overrides``.

    Raises:
        ConfigurationError: naming each invalid variable and the form it expects.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(_explain(exc)) from None


if TYPE_CHECKING:
    settings: Settings


@lru_cache(maxsize=1)
def _default_settings() -> Settings:
    return load_settings()


def __getattr__(name: str) -> Any:
    if name == "settings":
        return _default_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
