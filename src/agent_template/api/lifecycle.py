"""Building the server's parts at start-up, and draining and closing them at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agent_template.api.state import ServerState

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.core.run_loop import ModelClient
    from agent_template.models.bus_events import BusEventBase
    from agent_template.services.tool_manager import ToolLike

__all__ = ["build_state", "close_state", "drain"]

log = logging.getLogger("agent_template.server")

_background: set[asyncio.Task[None]] = set()  # counter updates in flight

OFFLINE_NOTICE = (
    "No model provider is configured, so the offline test model answers. Set OPENAI_API_KEY "
    "or ANTHROPIC_API_KEY (or DEFAULT_MODEL_PROVIDER) to use a real model."
)


async def build_state(
    settings: Settings,
    *,
    model: ModelClient | str | None = None,
    tools: Iterable[ToolLike] = (),
    instructions: str | None = None,
) -> ServerState:
    """Open storage, build the agent loop and start it. Raises what opening the store raises."""
    from agent_template.api.auth import TokenStore
    from agent_template.api.limits import Limits
    from agent_template.core.metrics import Metrics
    from agent_template.runtime import DEFAULT_INSTRUCTIONS, AgentLoop, stream_store
    from agent_template.services.state_cache import create_state_cache

    metrics = Metrics()
    loop = AgentLoop(
        settings,
        model=model,
        tools=tools,
        instructions=instructions or DEFAULT_INSTRUCTIONS,
        streams=stream_store(settings),
        metrics=metrics,
    )
    cache = create_state_cache(settings)
    try:
        await loop.sessions.open()
        state = ServerState(
            settings=settings,
            loop=loop,
            cache=cache,
            tokens=TokenStore(loop.sessions.store),
            limits=Limits(
                cache,
                per_minute=settings.rate_limit_per_minute,
                max_tasks=settings.max_tasks_per_user,
            ),
            offline=bool(getattr(loop.agent.model, "is_offline", False)),
        )
        loop.bus.add_listener(_task_counter(state), types=("task_state",))
        await loop.start()
        if settings.builtin_tools:
            await _check_sandbox()
    except BaseException:
        await loop.aclose()
        await cache.aclose()
        raise
    state.ready = True
    if state.offline:
        log.warning(OFFLINE_NOTICE)
    log.info("agent-server ready (model: %s)", describe_model(state))
    return state


async def _check_sandbox() -> None:
    """Measure what the shell tool's sandbox enforces here (once: ``/ready`` shows it) and
    say plainly what it does not."""
    from agent_template.services.sandbox import sandbox_report

    report = await asyncio.to_thread(sandbox_report)
    for line in report.lines():
        if "NOT" in line:
            log.warning("sandbox: %s", line)


def describe_model(state: ServerState) -> str:
    model = state.loop.agent.model
    primary = getattr(model, "primary", None)
    if primary is not None:
        label = getattr(primary, "label", None) or getattr(primary, "name", "?")
        return f"{label} (offline test model)" if state.offline else str(label)
    return type(model).__name__


def _task_counter(state: ServerState) -> Any:
    """A bus listener that lowers a user's live-task count when one of their tasks ends."""

    def on_event(event: BusEventBase) -> None:
        task = event.task  # type: ignore[attr-defined]
        if task.done:
            user = state.counted_tasks.pop(task.task_id, None)
            if user is not None:
                pending = asyncio.get_running_loop().create_task(state.limits.task_ended(user))
                _background.add(pending)
                pending.add_done_callback(_background.discard)

    return on_event


async def drain(state: ServerState, grace: float | None = None) -> None:
    """Take no new work, give running tasks ``grace`` seconds (``SHUTDOWN_GRACE_S``), mark
    the rest interrupted (their partial answers are stored), then close every WebSocket with
    1012 so clients reconnect. Safe to call more than once."""
    if state.shutting_down:
        return
    state.shutting_down = True
    grace = state.settings.shutdown_grace_s if grace is None else grace
    running = state.loop.running_count
    if running:
        log.info("shutting down: %d running task(s) get %.0f s to finish", running, grace)
    await state.loop.stop(deadline=grace)
    connections = list(state.connections)
    results = await asyncio.gather(
        *(c.close(1012, "service restart") for c in connections), return_exceptions=True
    )
    for result in results:
        if isinstance(result, Exception):  # already gone
            log.debug("closing a WebSocket failed", exc_info=result)


async def close_state(state: ServerState) -> None:
    await drain(state)
    state.ready = False
    try:
        await state.loop.aclose()
    finally:
        await state.cache.aclose()
    log.info("agent-server stopped")
