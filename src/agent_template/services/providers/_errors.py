"""Turn the SDKs' exceptions into ours, where they enter the package.

Each SDK gets one function; both share the status mapping. The SDKs are imported inside the
functions so that using one provider never imports the other's SDK.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from agent_template.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderTimeoutError,
    RateLimitError,
    StreamError,
)

__all__ = [
    "anthropic_error",
    "connection_error",
    "in_stream_error",
    "openai_error",
    "parse_retry_after",
    "status_error",
]

_OVERLOADED = frozenset({500, 502, 503, 504, 529})
_BAD_REQUEST = frozenset({400, 404, 422})
# An error sent inside a 200 stream has a type but no status; give each known type its status.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
    "server_error": 500,  # OpenAI's name for it
}


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass  # a malformed header is as good as none; fall through to retry-after
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass  # not seconds; try the HTTP-date form
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """The ``message`` and ``type`` of an error body in either provider's format."""
    if not isinstance(body, Mapping):
        return None, None
    error: Any = body.get("error", body)
    if not isinstance(error, Mapping):
        return None, None
    message, kind = error.get("message"), error.get("type")
    return (
        message if isinstance(message, str) and message else None,
        kind if isinstance(kind, str) else None,
    )


def status_error(
    provider: str,
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    error_type: str | None = None,
) -> ProviderError:
    """The error for an HTTP status."""
    if status in (401, 403):
        return AuthenticationError(provider, detail, status=status)
    if status == 429:
        return RateLimitError(provider, detail, retry_after=parse_retry_after(headers))
    if status in _OVERLOADED or error_type == "overloaded_error":
        return ProviderOverloadedError(provider, detail, status=status)
    if status in _BAD_REQUEST:
        return BadRequestError(provider, detail, status=status)
    error = ProviderError(provider, detail, status=status)
    error.retryable = status >= 500
    return error


def in_stream_error(provider: str, detail: str, error_type: str | None) -> ProviderError:
    """The error for an error object the server sent inside a successful stream."""
    status = _STATUS_OF_TYPE.get(error_type or "")
    if status is None:
        return StreamError(provider, f"the stream reported an error: {detail}")
    return status_error(provider, status, detail, error_type=error_type)


def connection_error(provider: str, base_url: str, base_url_var: str | None) -> ProviderError:
    """The host did not answer; the message names the address and the setting to check."""
    where = base_url_var or "the base URL setting"
    return ProviderConnectionError(
        provider,
        f"could not connect to {base_url}",
        hint=f"Check that the host is up and that {where} points at it.",
    )


def _api_error(
    provider: str,
    status: int | None,
    body: object,
    fallback: str,
    headers: Mapping[str, str] | None = None,
) -> ProviderError:
    message, kind = _error_fields(body)
    if status is None or status < 400:  # an error event inside a stream that had started fine
        return in_stream_error(provider, message or fallback, kind)
    return status_error(provider, status, message or fallback, headers=headers, error_type=kind)


def openai_error(
    exc: Exception, *, provider: str, base_url: str, base_url_var: str | None = None
) -> ProviderError:
    """Translate an exception of the ``openai`` SDK into ours."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeoutError(provider, f"{base_url} did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return connection_error(provider, base_url, base_url_var)
    if isinstance(exc, openai.APIStatusError):
        return _api_error(provider, exc.status_code, exc.body, exc.message, exc.response.headers)
    if isinstance(exc, openai.APIError):
        return _api_error(provider, None, exc.body, exc.message)
    return ProviderError(provider, f"{type(exc).__name__}: {exc}")


def anthropic_error(
    exc: Exception, *, provider: str, base_url: str, base_url_var: str | None = None
) -> ProviderError:
    """Translate an exception of the ``anthropic`` SDK into ours."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeoutError(provider, f"{base_url} did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return connection_error(provider, base_url, base_url_var)
    if isinstance(exc, anthropic.APIStatusError):
        return _api_error(provider, exc.status_code, exc.body, exc.message, exc.response.headers)
    if isinstance(exc, anthropic.APIError):
        return _api_error(provider, None, exc.body, exc.message)
    return ProviderError(provider, f"{type(exc).__name__}: {exc}")
