"""FastAPI dependencies: the server state, the caller's identity, the rate limit."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from agent_template.api.errors import ApiError
from agent_template.api.state import ServerState

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "LOCAL_USER",
    "CurrentUser",
    "State",
    "authenticate",
    "bearer_token",
    "current_user",
    "is_loopback",
    "server_state",
]

LOCAL_USER = "default"  # who a loopback client is when auth is off (the CLI's user too)


def server_state(request: Request) -> ServerState:
    state: ServerState | None = getattr(request.app.state, "server", None)
    if state is None or not state.ready:
        raise ApiError(503, "not_ready", "The server is starting; retry in a moment.")
    return state


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer ...``, else of ``?token=``."""
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""  # present but not a bearer token: refused below
    token = query.get("token")
    return token or None


async def authenticate(
    state: ServerState, headers: Mapping[str, str], query: Mapping[str, str], host: str | None
) -> str:
    """The user a request or connection acts as.

    With ``AUTH_REQUIRED`` a valid token is needed. Without it, a valid token still names its
    user, and a client with none is the local user, which only loopback clients may be.

    Raises:
        ApiError: 401 for a missing or bad token, 403 for a remote client without auth.
    """
    token = bearer_token(headers, query)
    if token:
        user = await state.tokens.verify(token)
        if user is not None:
            return user
        raise ApiError(
            401,
            "invalid_token",
            "The token is unknown or revoked. Create one with "
            "'agent-template token create --user NAME' and send it as 'Authorization: Bearer'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if token == "":
        raise ApiError(
            401,
            "invalid_token",
            "The Authorization header must be 'Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if state.settings.auth_required:
        raise ApiError(
            401,
            "auth_required",
            "This server requires a token: send 'Authorization: Bearer <token>' (or ?token= "
            "on the WebSocket). Create one with 'agent-template token create --user NAME'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not is_loopback(host):
        raise ApiError(
            403,
            "loopback_only",
            "Without AUTH_REQUIRED=true this server answers clients on this machine only; "
            "turn auth on and use a token to reach it from elsewhere.",
        )
    return LOCAL_USER


async def current_user(request: Request) -> str:
    """The caller's user id, counted against their request rate limit."""
    state = server_state(request)
    client = request.client.host if request.client else None
    user = await authenticate(state, request.headers, request.query_params, client)
    request.state.user_id = user
    retry = await state.limits.hit(user)
    if retry is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests: the limit is {state.limits.per_minute} a minute per user. "
            f"Retry in {int(retry)} s.",
            {"limit_per_minute": state.limits.per_minute, "retry_after_s": int(retry)},
            headers={"Retry-After": str(int(retry))},
        )
    return user


State = Annotated[ServerState, Depends(server_state)]
CurrentUser = Annotated[str, Depends(current_user)]
