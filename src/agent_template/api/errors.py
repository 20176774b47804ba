"""The one error body of the API, and the handlers that turn every failure into it.

Every error answers ``{"error": {"code", "message", "details"}}``: a stable machine-readable
``code``, a ``message`` that names the problem and what to do, and optional ``details``.
Nothing answers with a traceback; an unexpected failure is logged with its request id and
answered 500 in the same shape.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent_template.errors import (
    AgentTemplateError,
    CacheUnavailableError,
    ConfigurationError,
    SessionNotFoundError,
    StorageError,
    StreamNotFoundError,
    TaskNotFoundError,
    ToolArgumentsError,
    ToolNotFoundError,
)

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_body", "install_error_handlers", "status_of"]

log = logging.getLogger("agent_template.api")

# Reason phrases as codes, for errors raised by the framework itself (unknown route...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "not_ready",
}


class ApiError(Exception):
    """An error answered with ``status`` and the error body.

    Args:
        status: the HTTP status.
        code: a stable identifier clients can branch on (``session_busy``...).
        message: what went wrong and what to do, in a sentence or two.
        details: anything structured that helps (the field at fault, a limit...).
        headers: extra response headers (``Retry-After``...).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def status_of(exc: BaseException) -> ApiError:
    """The API error for an exception of the core (500 ``internal_error`` for the unknown)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SessionNotFoundError | TaskNotFoundError | StreamNotFoundError):
        return ApiError(404, exc.code, str(exc))
    if isinstance(exc, ToolNotFoundError):
        return ApiError(404, exc.code, str(exc))
    if isinstance(exc, ToolArgumentsError):
        return ApiError(422, exc.code, str(exc))
    code = getattr(exc, "code", "")
    if code == "approval_not_found":
        return ApiError(404, code, str(exc))
    if code == "approval_answered":
        return ApiError(409, code, str(exc))
    if isinstance(exc, CacheUnavailableError):
        return ApiError(503, exc.code, str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, StorageError):
        return ApiError(503, exc.code, str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, ConfigurationError) and "shutting down" in str(exc):
        return ApiError(
            503, "shutting_down", str(exc) + " Retry on another replica or after the restart."
        )
    if isinstance(exc, AgentTemplateError):
        return ApiError(400, exc.code, str(exc))
    return ApiError(
        500,
        "internal_error",
        "The server failed on this request; the failure is in its log. Retry, or report it "
        "with the request id.",
    )


def _response(error: ApiError, request_id: str | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    body = error.body()
    if request_id:
        body["error"]["details"].setdefault("request_id", request_id)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` with the error body."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    def request_id(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        error = status_of(exc)
        if error.status >= 500 and error.code == "internal_error":
            log.error(
                "request %s %s failed",
                request.method,
                request.url.path,
                exc_info=exc,
                extra={"request_id": request_id(request)},
            )
        return _response(error, request_id(request))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"No endpoint {request.method} {request.url.path}; see /docs for the API."
        elif message == "There was an error parsing the body":
            message = (
                "The request body could not be read; send UTF-8 JSON with "
                "'Content-Type: application/json'."
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs."
        headers = dict(exc.headers) if exc.headers else None
        return _response(ApiError(exc.status_code, code, message, headers=headers))

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body",
                "problem": err.get("msg", "invalid"),
                "type": err.get("type", "invalid"),
            }
            for err in exc.errors()
        ]
        first = problems[0] if problems else {"field": "body", "problem": "invalid"}
        message = f"Invalid request: {first['field']}: {first['problem']}."
        if any(p["type"] == "json_invalid" for p in problems):
            message = "The request body is not valid JSON; send a JSON object."
        return _response(ApiError(422, "invalid_request", message, {"errors": problems}))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(AgentTemplateError, on_api_error)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_api_error)
