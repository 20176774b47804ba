"""Liveness, readiness and Prometheus metrics: ``/health``, ``/ready``, ``/metrics``.

None of the three needs a token, even with ``AUTH_REQUIRED``, so probes and scrapers work
without credentials. For the same reason none of them says anything about a user: no user,
session or task ids, no content, only server-wide figures.

* ``/health`` answers while the process runs, with no I/O (liveness).
* ``/ready`` checks the database (one cheap query), the state cache (one read) and the
  providers' circuit breakers (no network call), and answers 503 with the error body when
  the server should get no traffic: starting, shutting down, the database unreachable, the
  cache failing, or every provider's circuit open.
* ``/metrics`` is the Prometheus text format of the agent's :class:`~agent_template.core.
  metrics.Metrics`, the server's own gauges, and the process's (CPU, memory, GC).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from agent_template.api.errors import ApiError
from agent_template.api.schemas import ErrorBody

if TYPE_CHECKING:
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from agent_template.api.state import ServerState

__all__ = [
    "READY_CHECK_TIMEOUT_S",
    "CacheCheck",
    "DatabaseCheck",
    "ProviderState",
    "ProvidersCheck",
    "ReadyOut",
    "readiness",
    "router",
]

router = APIRouter(tags=["health"])
log = logging.getLogger("agent_template.server")

READY_CHECK_TIMEOUT_S = 2.0  # probes have short deadlines: a slower answer counts as failed
_PROBE_SESSION = "__ready_probe__"  # looked up, never created: one indexed read
_PROBE_KEY = "ready_probe"

CheckStatus = Literal["ready", "degraded", "not_ready"]


class DatabaseCheck(BaseModel):
    status: CheckStatus
    backend: str = Field(description="sqlite, postgresql, or the store's kind.")
    latency_ms: float | None = None
    error: str | None = Field(None, description="The failure's code; the log has the details.")


class CacheCheck(BaseModel):
    status: CheckStatus = Field(
        description="degraded: Redis is down and the local fallback serves."
    )
    backend: str
    primary_available: bool | None = Field(None, description="Redis answers (with REDIS_URL).")
    latency_ms: float | None = None
    error: str | None = None


class ProviderState(BaseModel):
    provider: str
    model: str
    role: str = Field(description="primary, or fallback N.")
    circuit: Literal["closed", "open", "half_open"]


class ProvidersCheck(BaseModel):
    status: CheckStatus = Field(
        description="degraded: some circuits are open; not_ready: every one is."
    )
    offline: bool = Field(description="No provider is configured: the offline model serves.")
    providers: list[ProviderState] = Field(default_factory=list)
    message: str | None = None


class ReadyChecks(BaseModel):
    database: DatabaseCheck
    cache: CacheCheck
    providers: ProvidersCheck


class ReadyOut(BaseModel):
    """What ``/ready`` answers; a 503 carries the same object as ``error.details``."""

    status: Literal["ready", "not_ready"]
    checks: ReadyChecks
    offline: bool
    model: str = Field(description="The model that answers chat turns.")
    version: str
    uptime_s: float
    sandbox: dict[str, Any] | None = Field(
        None,
        description="What the sandbox of the shell tool enforces on this machine "
        "(`agent-template sandbox check`); null when the built-in tools are off.",
    )


_READY_EXAMPLE = {
    "status": "ready",
    "checks": {
        "database": {"status": "ready", "backend": "sqlite", "latency_ms": 0.4, "error": None},
        "cache": {
            "status": "ready",
            "backend": "memory",
            "primary_available": None,
            "latency_ms": 0.0,
            "error": None,
        },
        "providers": {
            "status": "ready",
            "offline": False,
            "providers": [
                {"provider": "openai", "model": "gpt-4o", "role": "primary", "circuit": "closed"}
            ],
            "message": None,
        },
    },
    "offline": False,
    "model": "openai",
    "version": "0.1.0",
    "uptime_s": 42.0,
    "sandbox": {
        "filesystem_enforced": True,
        "landlock_abi": 6,
        "network_isolation": "enforced: a network namespace of its own",
        "environment_scrubbed": True,
    },
}


@router.get(
    "/health",
    summary="Liveness: the process answers (no I/O)",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def health(request: Request) -> dict[str, Any]:
    state = getattr(request.app.state, "server", None)
    status = "stopping" if state is not None and state.shutting_down else "ok"
    return {"status": status}


@router.get(
    "/ready",
    summary="Readiness: database, cache and providers (no token needed)",
    response_model=ReadyOut,
    responses={
        200: {"content": {"application/json": {"example": _READY_EXAMPLE}}},
        503: {
            "model": ErrorBody,
            "description": "Starting, shutting down, or a check failed (see details.checks).",
        },
    },
)
async def ready(request: Request) -> ReadyOut:
    """200 with each check when the server should get traffic, else 503 with the error body:
    ``not_ready`` (its ``details`` are this same report), or ``shutting_down``."""
    state: ServerState | None = getattr(request.app.state, "server", None)
    if state is not None and state.shutting_down:
        raise ApiError(
            503,
            "shutting_down",
            "The server is shutting down and takes no new work; send traffic elsewhere.",
            {"status": "shutting_down"},
            headers={"Retry-After": "5"},
        )
    if state is None or not state.ready:
        raise ApiError(
            503,
            "not_ready",
            "The server is starting; retry in a moment.",
            {"status": "starting"},
            headers={"Retry-After": "1"},
        )
    report = await readiness(state)
    if report.status != "ready":
        failing = [name for name, check in report.checks if check.status == "not_ready"]
        raise ApiError(
            503,
            "not_ready",
            f"Not ready: the {' and the '.join(failing)} check failed; see details.checks.",
            report.model_dump(),
            headers={"Retry-After": "5"},
        )
    return report


async def readiness(state: ServerState) -> ReadyOut:
    """Run the checks (the database and the cache at once, each within
    :data:`READY_CHECK_TIMEOUT_S`) and say whether the server is ready."""
    from agent_template import __version__
    from agent_template.api.lifecycle import describe_model

    database, cache = await asyncio.gather(_database(state), _cache(state))
    providers = _providers(state)
    checks = ReadyChecks(database=database, cache=cache, providers=providers)
    ok = all(check.status != "not_ready" for _, check in checks)
    return ReadyOut(
        status="ready" if ok else "not_ready",
        checks=checks,
        offline=state.offline,
        model=describe_model(state),
        version=__version__,
        uptime_s=round(state.uptime_s, 3),
        sandbox=_sandbox(state),
    )


def _sandbox(state: ServerState) -> dict[str, Any] | None:
    if not state.settings.builtin_tools:
        return None
    from agent_template.services.sandbox import sandbox_report

    return sandbox_report().as_dict()  # measured once, at start-up


async def _timed(
    name: str, probe: Callable[[], Awaitable[object]]
) -> tuple[float | None, str | None]:
    """Run the ``name`` check's ``probe``: (its milliseconds, None), or (None, the error's code).

    The code alone is answered (the endpoint has no auth, and messages name hosts and
    files); the full message goes to the log.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await probe()
    except TimeoutError:
        log.warning("readiness: the %s check got no answer in %g s", name, READY_CHECK_TIMEOUT_S)
        return None, "timeout"
    except Exception as exc:  # any failure is the answer this check gives
        log.warning("readiness: the %s check failed: %s: %s", name, type(exc).__name__, exc)
        return None, str(getattr(exc, "code", "") or type(exc).__name__)
    return round((time.perf_counter() - started) * 1000, 2), None


async def _database(state: ServerState) -> DatabaseCheck:
    store = state.sessions.store
    backend = str(getattr(store, "dialect", None) or type(store).__name__)
    latency, error = await _timed("database", lambda: store.load_session(_PROBE_SESSION))
    return DatabaseCheck(
        status="ready" if error is None else "not_ready",
        backend=backend,
        latency_ms=latency,
        error=error,
    )


async def _cache(state: ServerState) -> CacheCheck:
    cache = state.cache
    latency, error = await _timed("cache", lambda: cache.get(_PROBE_KEY))
    stats = cache.stats()
    primary = stats.get("primary_available")
    status: CheckStatus = "ready"
    if error is not None:
        status = "not_ready"
    elif primary is False:
        status = "degraded"
    return CacheCheck(
        status=status,
        backend=str(stats.get("primary") or stats.get("backend") or type(cache).__name__),
        primary_available=primary if isinstance(primary, bool) else None,
        latency_ms=latency,
        error=error,
    )


def _providers(state: ServerState) -> ProvidersCheck:
    model = state.loop.agent.model
    status_of = getattr(model, "status", None)
    rows: list[dict[str, Any]] = status_of() if callable(status_of) else []
    providers = [
        ProviderState(
            provider=str(r["provider"]),
            model=str(r["model"]),
            role=str(r["role"]),
            circuit=r["circuit"],
        )
        for r in rows
    ]
    open_circuits = sum(1 for p in providers if p.circuit == "open")
    status: CheckStatus = "ready"
    message = None
    if state.offline:
        message = "No model provider is configured: the offline test model answers."
    elif not providers:
        message = "The model was given to the app; its health is not tracked."
    elif open_circuits == len(providers):
        status = "not_ready"
        message = "Every provider's circuit is open after repeated failures; see /metrics."
    elif open_circuits:
        status = "degraded"
        message = f"{open_circuits} of {len(providers)} providers' circuits are open."
    return ProvidersCheck(
        status=status, offline=state.offline, providers=providers, message=message
    )


# ----------------------------------------------------------------------------- /metrics


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format; no token needed)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": "agent_template_uptime_seconds 42"}}}},
)
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    # Rendered here, on the event loop's thread: the metrics registry is not thread-safe.
    body = generate_latest(_registry(request.app))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _registry(app: FastAPI) -> CollectorRegistry:
    """The app's own registry, made at the first scrape: the agent's metrics, the server's
    gauges, and the process, platform and GC collectors of ``prometheus_client``."""
    registry: CollectorRegistry | None = getattr(app.state, "prometheus_registry", None)
    if registry is None:
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ServerCollector(app))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        app.state.prometheus_registry = registry
    return registry


_PREFIX = "agent_template_"
_HELP = {
    "tasks_total": "Tasks that entered each state.",
    "tasks_current": "Tasks by the state they are in now.",
    "tasks_pending": "Tasks waiting for a slot or for their session.",
    "tasks_running": "Tasks running now.",
    "model_latency_seconds": "Duration of one model call, by provider.",
    "tokens_total": "Tokens sent to (input) and received from (output) models, by provider.",
    "model_tokens_total": "Tokens by provider, model and direction.",
    "model_errors_total": "Model calls that failed, by provider.",
    "model_failovers_total": "Calls moved from a failed provider to the next one.",
    "tool_latency_seconds": "Duration of one tool call, by tool.",
    "tool_errors_total": "Tool calls that returned an error, by tool.",
    "tool_vetoes_total": "Tool calls refused by a hook.",
    "streams_started_total": "Task streams opened.",
    "streams_ended_total": "Task streams closed.",
    "streams_active": "Task streams open now.",
    "stream_chunks_dropped_total": "Chunks slow consumers missed (finished tasks' streams).",
    "events_published_total": "Events published on the bus.",
    "errors_total": "Errors reported on the bus, by code.",
    "cache_fallbacks_total": "Cache operations served by the fallback while Redis was down.",
}


class _ServerCollector:
    """Yields the agent's :class:`Metrics` and the server's gauges at each scrape.

    The agent's metrics come from :meth:`Metrics.render_prometheus`, the registry's own
    exposition, parsed back into families (histogram buckets included); collected values
    named ``*_total`` are monotonic and are exposed as counters.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.parser import text_string_to_metric_families

        state: ServerState | None = getattr(self.app.state, "server", None)
        yield GaugeMetricFamily(
            _PREFIX + "ready",
            "1 when the server takes traffic (started, not shutting down).",
            value=float(bool(state and state.ready and not state.shutting_down)),
        )
        if state is None:
            return
        for family in text_string_to_metric_families(state.metrics.render_prometheus()):
            short = family.name.removeprefix(_PREFIX)
            family.documentation = _HELP.get(short) or _HELP.get(short + "_total", "")
            if family.type == "gauge" and family.name.endswith("_total"):
                labels = list(family.samples[0].labels) if family.samples else []
                counter = CounterMetricFamily(family.name, family.documentation, labels=labels)
                for sample in family.samples:
                    counter.add_metric(list(sample.labels.values()), sample.value)
                yield counter
            else:
                yield family
        yield from _server_gauges(state)


def _server_gauges(state: ServerState) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

    from agent_template import __version__

    yield GaugeMetricFamily(
        _PREFIX + "uptime_seconds", "Seconds since the server started.", value=state.uptime_s
    )
    yield GaugeMetricFamily(
        _PREFIX + "websocket_connections",
        "WebSocket clients connected now.",
        value=len(state.connections),
    )
    yield GaugeMetricFamily(
        _PREFIX + "offline",
        "1 when no provider is configured and the offline test model answers.",
        value=float(state.offline),
    )
    yield InfoMetricFamily(_PREFIX + "build", "The running version.", {"version": __version__})
    status_of = getattr(state.loop.agent.model, "status", None)
    if callable(status_of):
        circuit = GaugeMetricFamily(
            _PREFIX + "provider_circuit",
            "Each provider's circuit breaker: 1 for its current state.",
            labels=["provider", "state"],
        )
        for row in status_of():
            for name in ("closed", "half_open", "open"):
                circuit.add_metric([str(row["provider"]), name], float(row["circuit"] == name))
        yield circuit
    streams = state.loop.streams.stats()
    yield GaugeMetricFamily(
        _PREFIX + "stream_consumers",
        "Consumers reading task streams.",
        value=streams.get("consumers", 0),
    )
    yield GaugeMetricFamily(
        _PREFIX + "stream_retained_bytes",
        "Bytes of chunks kept for late and resuming consumers.",
        value=streams.get("retained_bytes", 0),
    )
