"""``create_app(settings)``: the server's one composition root.

Everything the server uses (storage, the state cache, providers, tools, the agent loop with
its event bus and stream store, tokens and limits) is built in the FastAPI lifespan from the
settings, and closed there in reverse order. Nothing is built at import time, so tests and
several apps in one process never share state by accident.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from agent_template.api.errors import ApiError, error_body, install_error_handlers

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.core.run_loop import ModelClient
    from agent_template.services.tool_manager import ToolLike

__all__ = ["API_DESCRIPTION", "create_app"]

log = logging.getLogger("agent_template.server")
access_log = logging.getLogger("agent_template.access")

API_DESCRIPTION = (
    "REST, Server-Sent Events and WebSocket API of agent-template. Every error answers "
    '`{"error": {"code", "message", "details"}}`. Send `Authorization: Bearer <token>` when '
    "the server requires auth (`/health`, `/ready` and `/metrics` need none). The WebSocket "
    "protocol is at `/ws` (see docs/protocol.md)."
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app(
    settings: Settings | None = None,
    *,
    model: ModelClient | str | None = None,
    tools: Iterable[ToolLike] = (),
    instructions: str | None = None,
) -> FastAPI:
    """The FastAPI application of ``agent-server``.

    Args:
        settings: configuration (read from the environment and ``.env`` when omitted).
        model: the model for chat turns instead of the configured providers.
        tools: tools the agent may call, besides the built-in ones.
        instructions: the agent's system prompt.
    """
    if settings is None:
        from agent_template.config import load_settings

        settings = load_settings()
    config = settings
    tool_list = list(tools)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from agent_template.api.lifecycle import build_state, close_state
        from agent_template.api.telemetry import install_telemetry

        state = await build_state(config, model=model, tools=tool_list, instructions=instructions)
        app.state.server = state
        uninstall_telemetry = install_telemetry(app, state)
        try:
            yield
        finally:
            try:
                await close_state(state)
            finally:
                if uninstall_telemetry is not None:
                    uninstall_telemetry()

    from agent_template import __version__

    app = FastAPI(
        title="agent-template",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=False,
        )
    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes)

    from agent_template.api import websocket
    from agent_template.api.routes import include_routers

    include_routers(app)
    app.include_router(websocket.router)
    return app


class RequestGuard:
    """Gives each HTTP request an id (``X-Request-ID``), refuses bodies larger than
    ``max_bytes`` with 413 before reading them whole, and logs one line per request."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        request_id = (headers.get(b"x-request-id") or b"").decode("latin-1")[:64] or (
            uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.max_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(send, _too_large(limit), request_id)
            return
        received = 0
        started = time.perf_counter()
        status = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", []).append(
                    (b"x-request-id", request_id.encode("latin-1"))
                )
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not response_started:
                status = 413
                await _send_error(send, _too_large(limit), request_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                access_log.info(
                    "%s %s %s",
                    scope.get("method"),
                    scope.get("path"),
                    status,
                    extra={
                        "request_id": request_id,
                        "user_id": state.get("user_id"),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"The request body is larger than MAX_REQUEST_BYTES ({limit} bytes); send less.",
        {"limit_bytes": limit},
    )


async def _send_error(send: Send, error: ApiError, request_id: str) -> None:
    import json

    body = error_body(error.code, error.message, {**error.details, "request_id": request_id})
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"x-request-id", request_id.encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
