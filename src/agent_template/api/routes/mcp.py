"""MCP: ``/api/v1/mcp``: the configured MCP servers, their resources and their prompts.

Their tools are in ``GET /api/v1/tools`` (named ``server__tool``, ``source`` ``mcp``). A
server that failed to start says why in its ``error``; the others work regardless.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agent_template.api.deps import CurrentUser, State
from agent_template.api.schemas import error_responses

__all__ = ["router"]

router = APIRouter()

_SERVER_EXAMPLE: dict[str, Any] = {
    "name": "time",
    "transport": "stdio",
    "state": "ready",
    "target": "python -m mcp_server_time",
    "tools": 2,
    "error": None,
    "protocol_version": "2025-11-25",
    "server_name": "mcp-time",
    "server_version": "1.0.0",
    "capabilities": ["tools"],
    "instructions": None,
}


class McpServers(BaseModel):
    """Every server of the MCP config (``MCP_CONFIG``), in its order."""

    model_config = ConfigDict(json_schema_extra={"example": {"items": [_SERVER_EXAMPLE]}})

    items: list[dict[str, Any]] = Field(
        description="Each server: name, transport, state (stopped, starting, ready, failed, "
        "restarting), its tool count, and the error that stopped it."
    )


class McpItems(BaseModel):
    items: list[dict[str, Any]]


@router.get(
    "/mcp/servers", summary="List the MCP servers and their states", responses=error_responses()
)
async def list_servers(state: State, user: CurrentUser) -> McpServers:
    return McpServers(items=[s.as_dict() for s in state.loop.mcp.status()])


@router.get(
    "/mcp/resources",
    summary="List the resources the MCP servers offer",
    responses=error_responses(),
)
async def list_resources(state: State, user: CurrentUser) -> McpItems:
    return McpItems(items=[asdict(r) for r in await state.loop.mcp.list_resources()])


@router.get(
    "/mcp/prompts",
    summary="List the prompt templates the MCP servers offer",
    responses=error_responses(),
)
async def list_prompts(state: State, user: CurrentUser) -> McpItems:
    return McpItems(items=[asdict(p) for p in await state.loop.mcp.list_prompts()])
