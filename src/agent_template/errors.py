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

    Attributes:
        provider: the provider's name (``openai``, ``anthropic``...).
        status: the HTTP status, when the provider answered with one.
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
        status_part = f" (HTTP {status})" if status else ""
        super().__init__(f"Provider '{provider}'{status_part}: {detail}. {self.hint}")

    def default_hint(self) -> str:
        return "Try again, or choose another provider with --provider."


class AuthenticationError(ProviderError):
    """The provider rejected the credentials (401/403) or none are configured."""

    code = "provider_authentication"

    def default_hint(self) -> str:
        var = _KEY_VARS.get(self.provider)
        where = f"Check {var}" if var else "Check the provider's API key"
        return f"{where}, or choose another provider with --provider."


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
    """The provider did not answer within the configured timeout."""

    code = "provider_timeout"
    retryable = True

    def default_hint(self) -> str:
        return "Raise MODEL_TIMEOUT, check the network, or configure FALLBACK_PROVIDERS."


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
    """Every provider in the failover chain failed for one request."""

    code = "all_providers_failed"

    def __init__(self, errors: list[ProviderError]) -> None:
        self.errors = errors
        tried = "; ".join(str(e) for e in errors) or "no provider available"
        last = errors[-1] if errors else None
        self.retryable = bool(last and last.retryable)
        super().__init__(
            last.provider if last else "none",
            f"every provider failed: {tried}",
            status=last.status if last else None,
            hint="Fix the first error above, or add providers to FALLBACK_PROVIDERS.",
        )


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
    code = "tool_timeout"

    def __init__(self, tool: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(tool, f"did not finish within {timeout:g}s and was stopped")


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


class StorageUnavailableError(AgentTemplateError):
    """The database could not be reached or refused the connection."""

    code = "storage_unavailable"

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(
            f"The database at DATABASE_URL={url} is unavailable: {detail}. Check that it is "
            "running and reachable and that the URL (user, host, port, database) is right."
        )
