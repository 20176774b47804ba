"""``GET /api/v1/stats``: what the server is doing, and what its model calls have cost.

Most figures are server-wide aggregates with no ids or content in them: tasks by state,
queue depths, WebSocket clients, tokens and their estimated cost by provider and model,
failovers, stream drops, the cache, uptime. The caller's own figures (their sessions and
tasks) are under ``user``: nobody sees the count of anyone else's sessions.

Costs are estimates from :data:`MODEL_PRICES`, list prices in US dollars per million tokens;
a model missing from it has a null cost (and ``cost_complete`` is false). The offline test
model costs nothing.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from agent_template.api.deps import CurrentUser, State
from agent_template.api.schemas import error_responses

__all__ = ["FREE_PROVIDERS", "MODEL_PRICES", "StatsOut", "estimate_cost", "price_of", "router"]

router = APIRouter()

# USD per million (input, output) tokens: list prices of 2025, for estimates only. A dated or
# "-latest" variant of a model (gpt-4o-2024-08-06, claude-3-5-sonnet-20241022) costs the same.
MODEL_PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4-0125-preview": (10.00, 30.00),
    "gpt-4-1106-preview": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-sonnet": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "qwen-max": (1.60, 6.40),
    "qwen-plus": (0.40, 1.20),
    "qwen-turbo": (0.05, 0.20),
}
FREE_PROVIDERS = frozenset({"test"})  # the offline model
_VARIANT = re.compile(r"(?:\d+|latest|preview)(?:-(?:\d+|latest|preview))*")
_SESSION_COUNT_CAP = 1000  # sessions counted per stats call; past it, "sessions_truncated"
_PER_MILLION = 1_000_000


def price_of(provider: str, model: str | None) -> tuple[float, float] | None:
    """USD per million (input, output) tokens of ``model``, or None when it is not known.

    A name with a date, version or ``latest``/``preview`` after a known model's name costs
    what that model does; a ``vendor/`` prefix is ignored.
    """
    if provider in FREE_PROVIDERS:
        return 0.0, 0.0
    if not model:
        return None
    name = model.rsplit("/", 1)[-1].lower()
    exact = MODEL_PRICES.get(name)
    if exact is not None:
        return exact
    best: str | None = None
    for known in MODEL_PRICES:
        if (
            name.startswith(known + "-")
            and _VARIANT.fullmatch(name[len(known) + 1 :])
            and (best is None or len(known) > len(best))
        ):
            best = known
    return MODEL_PRICES[best] if best is not None else None


def estimate_cost(
    provider: str, model: str | None, input_tokens: float, output_tokens: float
) -> float | None:
    """Estimated USD cost of the tokens, or None for a model of unknown price."""
    price = price_of(provider, model)
    if price is None:
        return None
    return round((input_tokens * price[0] + output_tokens * price[1]) / _PER_MILLION, 6)


class TaskStats(BaseModel):
    pending: int = Field(description="Waiting for a slot or for their session.")
    running: int
    peak_running: int
    max_concurrent_tasks: int
    sessions_busy: int = Field(description="Sessions with a turn running or waiting.")
    by_state: dict[str, int] = Field(
        description="Tasks this process holds (live ones and the last finished), by state."
    )
    entered_by_state: dict[str, int] = Field(
        description="Tasks that entered each state since the server started."
    )


class UserStats(BaseModel):
    user_id: str
    sessions: int = Field(description="The caller's sessions (counted up to 1000).")
    sessions_truncated: bool = Field(description="The caller has more than were counted.")
    tasks_by_state: dict[str, int]


class ModelUsage(BaseModel):
    provider: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="Estimate; null when the price is unknown.")


class UsageStats(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(description="Estimated cost of the models whose price is known.")
    cost_complete: bool = Field(description="Every model's price was known.")
    by_model: list[ModelUsage]


class QueueStats(BaseModel):
    tasks_pending: int
    sessions_busy: int
    stream_consumers: int
    stream_retained_bytes: int


class StreamStats(BaseModel):
    chunks_dropped: int = Field(description="Chunks slow consumers missed, in finished streams.")
    open: int
    consumers: int


class ProviderStats(BaseModel):
    provider: str
    model: str
    role: str
    circuit: str
    requests: int
    errors: int
    latency_ms: float | None


class FailoverStats(BaseModel):
    total: int
    by_pair: dict[str, int] = Field(description='"from -> to" provider labels.')


class StatsOut(BaseModel):
    version: str
    uptime_s: float
    started_at: float
    offline: bool
    model: str
    shutting_down: bool
    websocket_connections: int
    tasks: TaskStats
    user: UserStats
    usage: UsageStats
    queues: QueueStats
    streams: StreamStats
    failovers: FailoverStats
    providers: list[ProviderStats]
    cache: dict[str, Any]
    requests_refused: int = Field(description="Requests and tasks refused by the user limits.")


@router.get(
    "/stats",
    summary="Server statistics: tasks, sessions, connections, tokens and cost, queues",
    response_model=StatsOut,
    responses=error_responses(),
)
async def stats(state: State, user: CurrentUser) -> StatsOut:
    from agent_template import __version__
    from agent_template.api.lifecycle import describe_model

    loop = state.loop
    scheduler = loop.stats()
    snapshot = state.metrics.snapshot()
    counters: dict[str, list[dict[str, Any]]] = snapshot["counters"]
    streams = loop.streams.stats()
    model = loop.agent.model
    status_of = getattr(model, "status", None)
    providers: list[dict[str, Any]] = status_of() if callable(status_of) else []
    sessions = await state.sessions.list_sessions(user, limit=_SESSION_COUNT_CAP + 1)
    mine: dict[str, int] = {}
    for task in loop.list_tasks(user_id=user):
        mine[task.state.value] = mine.get(task.state.value, 0) + 1
    return StatsOut(
        version=__version__,
        uptime_s=round(state.uptime_s, 3),
        started_at=state.started_at,
        offline=state.offline,
        model=describe_model(state),
        shutting_down=state.shutting_down,
        websocket_connections=len(state.connections),
        tasks=TaskStats(
            pending=scheduler["pending"],
            running=scheduler["running"],
            peak_running=scheduler["peak_running"],
            max_concurrent_tasks=scheduler["max_concurrent_tasks"],
            sessions_busy=scheduler["sessions_busy"],
            by_state=scheduler["tasks_by_state"],
            entered_by_state={
                s["labels"].get("state", ""): int(s["value"])
                for s in counters.get("tasks_total", [])
            },
        ),
        user=UserStats(
            user_id=user,
            sessions=min(len(sessions), _SESSION_COUNT_CAP),
            sessions_truncated=len(sessions) > _SESSION_COUNT_CAP,
            tasks_by_state=mine,
        ),
        usage=_usage(counters, providers),
        queues=QueueStats(
            tasks_pending=scheduler["pending"],
            sessions_busy=scheduler["sessions_busy"],
            stream_consumers=streams.get("consumers", 0),
            stream_retained_bytes=streams.get("retained_bytes", 0),
        ),
        streams=StreamStats(
            chunks_dropped=loop.chunks_dropped,
            open=streams.get("open", 0),
            consumers=streams.get("consumers", 0),
        ),
        failovers=FailoverStats(
            total=getattr(model, "failovers", 0),
            by_pair=dict(getattr(model, "failover_counts", {})),
        ),
        providers=[ProviderStats.model_validate(row) for row in providers],
        cache=state.cache.stats(),
        requests_refused=state.limits.refused,
    )


def _usage(
    counters: dict[str, list[dict[str, Any]]], providers: list[dict[str, Any]]
) -> UsageStats:
    """Tokens by provider and model from the metrics, priced.

    ``model_tokens_total{provider,model,direction}`` gives the model that answered; without
    it, ``tokens_total{provider,direction}`` is attributed to each provider's configured model.
    """
    tokens: dict[tuple[str, str | None], list[float]] = {}
    series = counters.get("model_tokens_total")
    if series is None:
        configured: dict[str, str] = {}
        for row in providers:  # labels are "name" or "name#2" for extra keys
            configured.setdefault(str(row["provider"]).partition("#")[0], str(row["model"]))
        series = [
            {**s, "labels": {**s["labels"], "model": configured.get(s["labels"].get("provider"))}}
            for s in counters.get("tokens_total", [])
        ]
    for s in series:
        labels = s["labels"]
        key = (str(labels.get("provider") or "unknown"), labels.get("model"))
        pair = tokens.setdefault(key, [0.0, 0.0])
        pair[0 if labels.get("direction") == "input" else 1] += s["value"]
    rows = [
        ModelUsage(
            provider=provider,
            model=model,
            input_tokens=int(n_in),
            output_tokens=int(n_out),
            cost_usd=estimate_cost(provider, model, n_in, n_out),
        )
        for (provider, model), (n_in, n_out) in sorted(tokens.items(), key=lambda kv: str(kv[0]))
    ]
    return UsageStats(
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=round(sum(r.cost_usd or 0.0 for r in rows), 6),
        cost_complete=all(r.cost_usd is not None for r in rows),
        by_model=rows,
    )
