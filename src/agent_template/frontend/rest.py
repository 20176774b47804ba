"""The client's REST calls to an ``agent-server`` (``/api/v1``, ``/ready``), over httpx.

Every failure is a :class:`~agent_template.frontend.connection.ClientError`: the server's
error body (``{"error": {"code", "message", "details"}}``) keeps its code and message; a
server that cannot be reached is ``server_unreachable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import ValidationError

from agent_template.frontend.connection import TOKEN_HINT, UNREACHABLE_HINT, ClientError
from agent_template.models import Message
from agent_template.models.messages import message_adapter

__all__ = ["Api", "HistoryPage", "SessionInfo"]

TIMEOUT_S: Final = 30.0
_HINTS: Final = {
    "unauthorized": TOKEN_HINT,
    "auth_required": TOKEN_HINT,
    "invalid_token": TOKEN_HINT,
    "not_found": "It may have been deleted; list the sessions to find the right one.",
    "session_busy": "Wait for the turn to end, or cancel it, then try again.",
    "rate_limited": "Wait a little, then try again.",
}


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the session list shows it."""

    session_id: str
    title: str | None
    updated_at: float | None
    message_count: int

    @classmethod
    def of(cls, data: dict[str, Any]) -> SessionInfo:
        """From the API's session object."""
        return cls(
            session_id=str(data["session_id"]),
            title=data.get("title"),
            updated_at=data.get("last_active_at", data.get("updated_at")),
            message_count=int(data.get("message_count", 0)),
        )


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a session's history, oldest to newest within the page."""

    items: list[tuple[int, Message]]
    older: int | None  # pass as ``before`` for the page before this one; None: start reached


def _message(data: dict[str, Any]) -> Message:
    fields = {k: v for k, v in data.items() if k != "seq" and v is not None}
    return message_adapter.validate_python(fields)


class Api:
    """REST calls to one server (see the module's docstring), with the same token as the
    WebSocket link."""

    def __init__(self, base_url: str, *, token: str | None = None) -> None:
        base = base_url.strip().rstrip("/")
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if base.startswith(ws):
                base = http + base[len(ws) :].removesuffix("/ws")
        self.base_url = base
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base, headers=headers, timeout=TIMEOUT_S)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """The JSON answer of one request (None for 204). Raises ClientError."""
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            response = await self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise ClientError(
                "server_unreachable",
                f"Cannot reach the agent server at {self.base_url}: {exc or type(exc).__name__}.",
                UNREACHABLE_HINT,
            ) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or f"http_{response.status_code}")
            message = str(error.get("message") or response.reason_phrase)
        else:
            code = f"http_{response.status_code}"
            message = f"The server answered {response.status_code} {response.reason_phrase}."
        status = response.status_code
        if status == 401:
            code = "unauthorized"
        elif status == 404 and code.endswith("not_found"):  # session_not_found, task_...
            code = "not_found"
        raise ClientError(code, message, _HINTS.get(code, ""))

    async def ready(self) -> dict[str, Any]:
        """``GET /ready``: the server's readiness report."""
        result: dict[str, Any] = await self._call("GET", "/ready")
        return result

    async def stats(self) -> dict[str, Any]:
        """``GET /api/v1/stats``: tasks, usage, providers..."""
        result: dict[str, Any] = await self._call("GET", "/api/v1/stats")
        return result

    async def sessions(self, query: str | None = None, limit: int = 50) -> list[SessionInfo]:
        """Your sessions, most recently active first (``query``: a title or id part)."""
        page = await self._call("GET", "/api/v1/sessions", params={"q": query, "limit": limit})
        return [SessionInfo.of(item) for item in page["items"]]

    async def create_session(self, title: str | None = None) -> SessionInfo:
        """Create a session."""
        body = {"title": title} if title else {}
        return SessionInfo.of(await self._call("POST", "/api/v1/sessions", json=body))

    async def rename_session(self, session_id: str, title: str) -> SessionInfo:
        """Rename a session."""
        path = f"/api/v1/sessions/{session_id}"
        return SessionInfo.of(await self._call("PATCH", path, json={"title": title}))

    async def delete_session(self, session_id: str) -> None:
        """Delete a session (its running turn is cancelled first)."""
        await self._call("DELETE", f"/api/v1/sessions/{session_id}")

    async def history(
        self, session_id: str, *, before: int | None = None, limit: int = 50
    ) -> HistoryPage:
        """The newest ``limit`` messages before message ``before`` (the newest of all without
        it), oldest first."""
        params: dict[str, Any] = {"limit": limit, "before": before if before is not None else 0}
        page = await self._call("GET", f"/api/v1/sessions/{session_id}/messages", params=params)
        items: list[tuple[int, Message]] = []
        for item in page["items"]:
            try:
                items.append((int(item["seq"]), _message(item)))
            except (ValidationError, KeyError, TypeError, ValueError):
                continue  # a message this client cannot show
        older = page.get("older")
        return HistoryPage(items=items, older=int(older) if older is not None else None)

    async def tasks(
        self, *, session_id: str | None = None, live_only: bool = False
    ) -> list[dict[str, Any]]:
        """Your tasks, oldest first (``live_only``: pending and running ones)."""
        params: dict[str, Any] = {"session_id": session_id, "limit": 200}
        if live_only:
            params["state"] = ["pending", "running", "waiting"]
        page = await self._call("GET", "/api/v1/tasks", params=params)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def cancel_task(self, task_id: str) -> None:
        """Cancel a task."""
        await self._call("DELETE", f"/api/v1/tasks/{task_id}")

    async def todos(self, session_id: str) -> list[dict[str, Any]]:
        """A session's todo list, in order."""
        params = {"limit": 200}
        page = await self._call("GET", f"/api/v1/sessions/{session_id}/todos", params=params)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def approvals(self) -> list[dict[str, Any]]:
        """Your pending approval requests, oldest first."""
        page = await self._call("GET", "/api/v1/approvals")
        items: list[dict[str, Any]] = page["items"]
        return items

    async def compact(self, session_id: str) -> dict[str, Any]:
        """Compact a session's context now: tokens before and after, whether it changed."""
        result: dict[str, Any] = await self._call("POST", f"/api/v1/sessions/{session_id}/compact")
        return result

    async def models(self) -> dict[str, Any]:
        """The model in use: ``provider``, ``model``, ``chain`` (the configured providers in
        failover order, each ``{"provider", "model", "role", "circuit"}``), ``offline`` and
        ``context_limit`` (None when the server does not say)."""
        stats = await self.stats()
        try:
            ready = await self.ready()
        except ClientError as exc:
            if not exc.code.startswith("not_ready"):
                raise
            ready = {}
        checks = ready.get("checks") or {}
        chain = list((checks.get("providers") or {}).get("providers") or [])
        primary = next((p for p in chain if p.get("role") == "primary"), chain[0] if chain else {})
        return {
            "provider": primary.get("provider") or ready.get("model"),
            "model": primary.get("model") or stats.get("model"),
            "label": stats.get("model"),
            "chain": chain,
            "offline": bool(stats.get("offline", ready.get("offline", False))),
            "context_limit": stats.get("context_limit"),
        }

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()
