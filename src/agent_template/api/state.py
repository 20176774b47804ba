"""What the server built at start-up, shared by every route and connection."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_template.api.auth import TokenStore
    from agent_template.api.limits import Limits
    from agent_template.config import Settings
    from agent_template.runtime import AgentLoop
    from agent_template.services.state_cache import StateCache

__all__ = ["ServerState"]


@dataclass(eq=False)
class ServerState:
    """The composition root's parts: settings, the agent loop (with its sessions, bus, streams
    and metrics), the state cache, tokens and limits, and the live WebSocket connections."""

    settings: Settings
    loop: AgentLoop
    cache: StateCache
    tokens: TokenStore
    limits: Limits
    offline: bool
    started_at: float = field(default_factory=time.time)
    # Live WebSocket connections (``api.websocket.Connection``), closed 1012 at shutdown.
    connections: set[Any] = field(default_factory=set)
    shutting_down: bool = False
    ready: bool = False
    # A finished task's user for the live-task counters, kept until it ends.
    counted_tasks: dict[str, str] = field(default_factory=dict)

    @property
    def sessions(self) -> Any:
        return self.loop.sessions

    @property
    def bus(self) -> Any:
        return self.loop.bus

    @property
    def metrics(self) -> Any:
        return self.loop.metrics

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started_at
