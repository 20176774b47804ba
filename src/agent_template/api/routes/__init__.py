"""The REST API, one router per resource."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["include_routers"]


def include_routers(app: FastAPI) -> None:
    from agent_template.api.routes import (
        approvals,
        health,
        mcp,
        messages,
        sessions,
        stats,
        tasks,
        tools,
    )

    app.include_router(health.router)  # /health, /ready, /metrics
    app.include_router(stats.router, prefix="/api/v1", tags=["stats"])
    app.include_router(sessions.router, prefix="/api/v1", tags=["sessions"])
    app.include_router(messages.router, prefix="/api/v1", tags=["messages"])
    app.include_router(tasks.router, prefix="/api/v1", tags=["tasks"])
    app.include_router(tools.router, prefix="/api/v1", tags=["tools"])
    app.include_router(approvals.router, prefix="/api/v1", tags=["approvals"])
    app.include_router(mcp.router, prefix="/api/v1", tags=["mcp"])
