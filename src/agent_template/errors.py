"""The one exception hierarchy of agent-template.

Every error keeps its facts in attributes and builds a message that says what happened and
what to do next. Third-party exceptions are translated where they enter the package.
"""

from __future__ import annotations

__all__ = [
    "AgentTemplateError",
    "AllProvidersFailedError",
    "AuthenticationError",
    "BadRequestError",
    "CacheUnavailableError",
    "ConfigurationError",
    "MaxTurnsExceededError",
    "MissingAPIKeyError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderOverloadedError",
    "ProviderTimeoutError",
    "QueueClosedError",
    "QueueFullError",
    "RateLimitError",
    "RunCancelledError",
    "SessionNotFoundError",
    "SlowConsumerError",
    "StateCacheError",
    "StorageError",
    "StorageMigrationError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "StreamError",
    "StreamNotFoundError",
    "TaskNotFoundError",
    "ToolArgumentsError",
    "ToolError",
    "ToolNotFoundError",
    "ToolTimeoutError",
]


class AgentTemplateError(Exception):
    """Base class of every error this package raises on purpose."""

    code: str = "agent_template_error"


class ConfigurationError(AgentTemplateError):
    """A setting is missing or invalid, or names something that does not exist."""

    code = "configuration_error"


# --------------------------------------------------------------------------- providers


class ProviderError(AgentTemplateError):
    """A model provider failed.

    The message is built from the attributes; ``hint`` says what to do in words that fit any
    frontend (no command-line flags: a frontend adds its own advice from ``code``).

    Attributes:
        provider: the provider's name (``openai``, ``anthropic``...).
        detail: what went wrong, without the provider's name or a hint.
        status: the HTTP status, when the provider answered with one.
        hint: what to do about it.
        retryable: whether the same request may succeed if sent again.
    """

    code = "provider_error"
    retryable: bool = False

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.provider = provider
        self.detail = detail
        self.status = status
        self.hint = hint or self.default_hint()
        super().__init__(self._message())

    def _message(self) -> str:
        return f"Provider {self.cause()}. {self.hint}"

    def cause(self) -> str:
        """The provider, status and detail without the hint: ``'openai' (HTTP 503): ...``."""
        status_part = f" (HTTP {self.status})" if self.status else ""
        return f"'{self.provider}'{status_part}: {self.detail}"

    def default_hint(self) -> str:
        return "Try again, or choose another provider."


class AuthenticationError(ProviderError):
    """The provider rejected the credentials (401/403) or none are configured.

    Attributes:
        key_var: the variable that holds the provider's key (``OPENAI_API_KEY``...), if known.
    """

    code = "provider_authentication"

    def __init__(
        self, provider: str, detail: str, *, status: int | None = None, hint: str | None = None
    ) -> None:
        self.key_var = _KEY_VARS.get(provider)
        super().__init__(provider, detail, status=status, hint=hint)

    def default_hint(self) -> str:
        where = f"Check {self.key_var}" if self.key_var else "Check the provider's API key"
        return f"{where}, or choose another provider."


class MissingAPIKeyError(ConfigurationError):
    """A provider that needs an API key has none configured.

    Attributes:
        provider: the provider's name.
        key_var: the variable to set (``ANTHROPIC_API_KEY``...).
        hint: what to do about it.
    """

    code = "missing_api_key"

    def __init__(self, provider: str, key_var: str) -> None:
        self.provider = provider
        self.key_var = key_var
        self.hint = f"Set {key_var} in .env or the environment, or choose another provider."
        super().__init__(f"No API key for provider {provider!r}. {self.hint}")


class RateLimitError(ProviderError):
    """The provider asked us to slow down (429)."""

    code = "provider_rate_limited"
    retryable = True

    def __init__(
        self, provider: str, detail: str, *, retry_after: float | None = None, status: int = 429
    ) -> None:
        self.retry_after = retry_after
        super().__init__(provider, detail, status=status)

    def default_hint(self) -> str:
        when = f"in {self.retry_after:g}s" if self.retry_after is not None else "later"
        return f"Retry {when}, lower the request rate, or configure FALLBACK_PROVIDERS."


class ProviderOverloadedError(ProviderError):
    """The provider had an internal error or is overloaded (5xx, 529)."""

    code = "provider_unavailable"
    retryable = True

    def default_hint(self) -> str:
        return "The provider is having trouble; retry later or configure FALLBACK_PROVIDERS."


class ProviderTimeoutError(ProviderError):
    """The provider did not answer, or did not finish, within a configured time.

    Attributes:
        setting: the setting whose limit was reached: ``MODEL_TIMEOUT`` (a stalled
            connection), ``MODEL_ATTEMPT_TIMEOUT`` (one attempt) or ``MODEL_CALL_TIMEOUT``
            (the whole call, retries and failover included).
        timeout: that limit in seconds, when known.
    """

    code = "provider_timeout"
    retryable = True

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        setting: str = "MODEL_TIMEOUT",
        timeout: float | None = None,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.setting = setting
        self.timeout = timeout
        super().__init__(provider, detail, status=status, hint=hint)

    def default_hint(self) -> str:
        return f"Raise {self.setting}, check the network, or configure FALLBACK_PROVIDERS."


class ProviderConnectionError(ProviderError):
    """The provider's host could not be reached."""

    code = "provider_unreachable"
    retryable = True

    def default_hint(self) -> str:
        return "Check that the host is up and the base URL setting is right."


class BadRequestError(ProviderError):
    """The provider refused the request as invalid (400, 404, 422)."""

    code = "provider_bad_request"

    def default_hint(self) -> str:
        return "Check the model name and the request; retrying the same request will not help."


class StreamError(ProviderError):
    """The provider's stream was malformed or broke off before it finished."""

    code = "provider_stream_error"
    retryable = True

    def default_hint(self) -> str:
        return "The answer was cut off; retry, or configure FALLBACK_PROVIDERS."


class AllProvidersFailedError(ProviderError):
    """Every provider in the failover chain failed for one request.

    The message states each provider's cause once, in the order they were tried:
    ``Every provider failed: 1. openai (HTTP 503): ...; 2. anthropic: ...``.

    Attributes:
        errors: every failure, retries included, in order.
        causes: the last failure of each provider, in the order the providers were tried.
    """

    code = "all_providers_failed"

    def __init__(self, errors: list[ProviderError]) -> None:
        self.errors = errors
        # A dict keeps each key where it was first inserted and the value last assigned.
        self.causes = list({e.provider: e for e in errors}.values())
        last = errors[-1] if errors else None
        self.retryable = bool(last and last.retryable)
        if self.retryable:
            hint = "Retry later, or add providers to FALLBACK_PROVIDERS."
        else:
            hint = "Fix the causes listed, or add providers to FALLBACK_PROVIDERS."
        listed = "; ".join(
            f"{n}. {e.provider}{f' (HTTP {e.status})' if e.status else ''}: {e.detail}"
            for n, e in enumerate(self.causes, 1)
        )
        super().__init__(
            last.provider if last else "none",
            listed or "no provider was available",
            status=last.status if last else None,
            hint=hint,
        )

    def _message(self) -> str:
        if not self.errors:
            return f"No model provider was available. {self.hint}"
        return f"Every provider failed: {self.detail}. {self.hint}"


_KEY_VARS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "qwen": "QWEN_API_KEY",
    "local": "LOCAL_API_KEY",
}


# --------------------------------------------------------------------------- tools


class ToolError(AgentTemplateError):
    """A tool could not be run or failed while running.

    A failing tool becomes an error result that the model sees; it does not end the run.
    """

    code = "tool_error"

    def __init__(self, tool: str, detail: str) -> None:
        self.tool = tool
        self.detail = detail
        super().__init__(f"Tool '{tool}': {detail}")


class ToolNotFoundError(ToolError):
    code = "tool_not_found"


class ToolArgumentsError(ToolError):
    code = "tool_invalid_arguments"


class ToolTimeoutError(ToolError):
    """A tool call took longer than its timeout.

    Attributes:
        timeout: the limit in seconds.
        thread_left_running: the tool is a sync function whose worker thread could not be
            stopped (Python cannot stop threads); it may still be running, its result ignored.
    """

    code = "tool_timeout"

    def __init__(self, tool: str, timeout: float, *, thread_left_running: bool = False) -> None:
        self.timeout = timeout
        self.thread_left_running = thread_left_running
        if thread_left_running:
            what = (
                f"did not finish within {timeout:g}s; its result will be ignored, though its "
                "thread may still be running (a thread cannot be stopped)"
            )
        else:
            what = f"did not finish within {timeout:g}s and was cancelled"
        super().__init__(tool, what)


# --------------------------------------------------------------------------- runs and tasks


class MaxTurnsExceededError(AgentTemplateError):
    code = "max_turns_exceeded"

    def __init__(self, max_turns: int) -> None:
        self.max_turns = max_turns
        super().__init__(
            f"The run stopped after {max_turns} model turns without a final answer. "
            "Raise max_turns (MAX_TURNS) or make the instructions more specific."
        )


class RunCancelledError(AgentTemplateError):
    code = "run_cancelled"


class SessionNotFoundError(AgentTemplateError):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"Session '{session_id}' does not exist. List sessions to find its id, or create one."
        )


class TaskNotFoundError(AgentTemplateError):
    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"Task '{task_id}' does not exist (it may have been cleaned up).")


class QueueFullError(AgentTemplateError):
    code = "queue_full"

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        super().__init__(
            f"Queue '{name}' is full ({maxsize} items) and rejects new items; "
            "slow down or raise its size."
        )


class QueueClosedError(AgentTemplateError):
    code = "queue_closed"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Queue '{name}' is closed and takes no more items.")


class SlowConsumerError(AgentTemplateError):
    """A stream consumer fell too far behind and was disconnected by its policy."""

    code = "slow_consumer"

    def __init__(self, stream_id: str, behind: int) -> None:
        self.stream_id = stream_id
        self.behind = behind
        super().__init__(
            f"Disconnected from stream '{stream_id}': {behind} chunks behind. "
            "Reconnect and resume from the last chunk number you received."
        )


class StreamNotFoundError(AgentTemplateError):
    code = "stream_not_found"

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"Stream '{stream_id}' does not exist or has expired.")


# --------------------------------------------------------------------------- state cache


class StateCacheError(AgentTemplateError):
    """A state cache operation failed for a reason other than a bad argument."""

    code = "state_cache_error"


class CacheUnavailableError(StateCacheError):
    """The cache's store could not be reached or did not answer in time.

    Attributes:
        backend: the backend's name (``redis``, ``sqlite``...).
        target: where it was looked for (a URL without its password, or a path).
        detail: what went wrong.
    """

    code = "cache_unavailable"

    def __init__(self, backend: str, target: str, detail: str) -> None:
        self.backend = backend
        self.target = target
        self.detail = detail
        where = f"REDIS_URL={target}" if backend == "redis" else f"{backend} cache at {target}"
        super().__init__(
            f"State cache unavailable ({where}): {detail}. "
            "Check that the store is up and the setting is right, or use another cache backend."
        )


class StorageError(AgentTemplateError):
    """The database (``DATABASE_URL``) failed; a subclass says how."""

    code = "storage_error"


class StorageUnavailableError(StorageError):
    """The database could not be reached or refused the connection.

    Attributes:
        url: the database URL, without its password.
        detail: the driver's one-line account of the failure.
    """

    code = "storage_unavailable"

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(
            f"The database at DATABASE_URL={url} is unavailable: {detail}. Check that it is "
            "running and reachable and that the URL (user, host, port, database) is right."
        )


class StorageMigrationError(StorageError):
    """The database answered, but bringing its schema up to date failed.

    Attributes:
        url: the database URL, without its password.
        detail: the first line of the underlying error.
    """

    code = "storage_migration_failed"

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(
            f"Could not apply the schema migrations to the database at DATABASE_URL={url}: "
            f"{detail}. The full error is in the log; fix the schema or restore a backup, then "
            "start again."
        )


class StoragePermissionError(StorageError):
    """The SQLite database file, or its folder, cannot be created or written.

    Attributes:
        path: the database file.
        folder: the folder it lives in.
        detail: what the operating system or SQLite said.
    """

    code = "storage_permission_denied"

    def __init__(self, path: str, detail: str) -> None:
        from pathlib import Path

        self.path = path
        self.folder = str(Path(path).parent)
        self.detail = detail
        super().__init__(
            f"Cannot write the SQLite database {path}: {detail}. Check that the folder "
            f"{self.folder} exists and that this user may write to it, or point DATABASE_URL "
            "elsewhere."
        )
