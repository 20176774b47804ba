"""The model-provider contract and the :class:`ModelManager` that picks, retries and fails over.

A provider turns our :class:`~agent_template.models.ModelRequest` into its wire format and its
answer back into :data:`~agent_template.models.ModelEvent` values. The manager adds what every
provider needs: retries with backoff, failover along ``FALLBACK_PROVIDERS``, a circuit breaker
per provider, optional load balancing among equivalent providers, and health figures.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agent_template.errors import (
    AllProvidersFailedError,
    BadRequestError,
    ConfigurationError,
    ProviderError,
    RateLimitError,
    StreamError,
)
from agent_template.models import (
    ModelEvent,
    ModelRequest,
    ModelResponse,
    ResponseFinished,
    Usage,
    UsageEvent,
)
from agent_template.services._health import CircuitBreaker, ProviderHealth

if TYPE_CHECKING:
    from agent_template.config import Settings

__all__ = ["ModelManager", "ModelProvider", "collect_response"]


class ModelProvider(ABC):
    """One model API. Subclasses implement :meth:`stream`; :meth:`complete` collects it.

    A stream yields text and tool-call events as they arrive, then usage (when reported), and
    ends with exactly one :class:`ResponseFinished`. Failures raise
    :class:`~agent_template.errors.ProviderError` subclasses.
    """

    # Usually a class attribute; the OpenAI-compatible provider sets it per instance, since one
    # class serves openai, deepseek, qwen, ollama and local.
    name: str

    def __init__(self, *, model: str, label: str | None = None) -> None:
        self.model = model
        self.label = label or self.name

    @abstractmethod
    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]: ...

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await collect_response(self.stream(request))

    async def aclose(self) -> None:  # noqa: B027 - providers without connections need nothing
        """Release connections."""


async def collect_response(events: AsyncIterator[ModelEvent]) -> ModelResponse:
    """Drain a provider stream into one :class:`ModelResponse`."""
    usage = Usage()
    try:
        async for event in events:
            if isinstance(event, UsageEvent):
                usage = usage + event.usage
            elif isinstance(event, ResponseFinished):
                return ModelResponse(event.message, usage, event.finish_reason)
    finally:
        # Close the stream here rather than whenever it is garbage-collected: it may hold a
        # connection.
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    raise ProviderError("unknown", "the stream ended without a finish event")


class _Member:
    """A provider instance in the manager, with its breaker and health figures."""

    __slots__ = ("breaker", "health", "provider")

    def __init__(self, provider: ModelProvider, threshold: int, cooldown: float) -> None:
        self.provider = provider
        self.breaker = CircuitBreaker(threshold, cooldown)
        self.health = ProviderHealth()


class ModelManager:
    """Streams from the primary provider, with retries, failover and circuit breakers.

    Args:
        settings: where the providers, fallbacks and retry policy come from. Defaults to the
            environment's settings.
        provider: use exactly this provider (and no fallbacks), for example a scripted
            :class:`~agent_template.services.providers.offline.TestProvider` in tests.
        providers: the failover chain in order; each item is a list of equivalent providers
            (load-balanced among themselves). Overrides what ``settings`` would build.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        provider: ModelProvider | str | None = None,
        model: str | None = None,
        providers: list[list[ModelProvider]] | None = None,
    ) -> None:
        if settings is None:
            from agent_template.config import load_settings

            settings = load_settings()
        self.settings = settings
        self.max_retries = settings.model_max_retries
        self.base_delay = settings.model_retry_base_delay
        self.max_delay = settings.model_retry_max_delay
        self.strategy = settings.load_balancing
        self.failovers = 0
        if providers is None:
            from agent_template.services.providers import build_chain

            if isinstance(provider, ModelProvider):
                providers = [[provider]]
            else:
                providers = build_chain(settings, provider=provider, model=model)
        if not providers or not all(providers):
            raise ConfigurationError("No model provider is configured.")
        t, c = settings.circuit_breaker_threshold, settings.circuit_breaker_cooldown
        self._pools = [[_Member(p, t, c) for p in pool] for pool in providers]
        self._rr = [0] * len(self._pools)  # round-robin position, one per pool

    # ------------------------------------------------------------------ information

    @property
    def primary(self) -> ModelProvider:
        return self._pools[0][0].provider

    @property
    def is_offline(self) -> bool:
        return self.primary.name == "test"

    def status(self) -> list[dict[str, Any]]:
        """Per-provider health: state of the breaker, requests, errors, latency."""
        rows = []
        for rank, pool in enumerate(self._pools):
            for m in pool:
                rows.append(
                    {
                        "provider": m.provider.label,
                        "model": m.provider.model,
                        "role": "primary" if rank == 0 else f"fallback {rank}",
                        "circuit": m.breaker.state,
                        **m.health.as_dict(),
                    }
                )
        return rows

    # ------------------------------------------------------------------ selection

    def _ordered(self, rank: int, pool: list[_Member]) -> list[_Member]:
        if len(pool) == 1 or self.strategy == "none":
            return pool
        if self.strategy == "round_robin":
            start = self._rr[rank] = (self._rr[rank] + 1) % len(pool)
            return pool[start:] + pool[:start]
        return sorted(pool, key=lambda m: m.health.latency_ewma_s or 0.0)

    def _candidates(self) -> list[_Member]:
        now = time.monotonic()
        ready: list[_Member] = []
        for rank, pool in enumerate(self._pools):
            ready.extend(m for m in self._ordered(rank, pool) if m.breaker.allows(now))
        return ready

    def _backoff(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before retrying ``error``, or None when retrying is not worth it."""
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            # The provider said when. Waiting longer than we would ever back off is worse
            # than failing over now.
            return error.retry_after if error.retry_after <= self.max_delay else None
        delay = min(self.max_delay, self.base_delay * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)  # jitter keeps clients from retrying in step

    # ------------------------------------------------------------------ calls

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one response, retrying and failing over until a provider succeeds.

        Failover also happens when a stream breaks before any event reached the caller. Once
        an event has been yielded, a failure is raised as it is: the caller keeps the partial
        answer and nothing is sent twice.

        Raises:
            AllProvidersFailedError: when every provider failed.
            BadRequestError: when the only provider refused the request as invalid.
            ProviderError: when a stream broke after it had started.
        """
        errors: list[ProviderError] = []
        candidates = self._candidates()
        forced = not candidates
        if forced:  # every breaker open: try the primary rather than refuse outright
            candidates = [self._pools[0][0]]
        for member in candidates:
            breaker = member.breaker
            attempt = 0
            # A half-open breaker lets one caller through per cooldown; the others move on.
            while (forced and attempt == 0) or breaker.acquire(time.monotonic()):
                if errors and attempt == 0:
                    self.failovers += 1
                started = False
                t0 = time.perf_counter()
                member.health.requests += 1
                events = member.provider.stream(request)
                try:
                    async for event in events:
                        if not started:
                            started = True
                            member.health.record_first_event(time.perf_counter() - t0)
                        if isinstance(event, ResponseFinished):
                            # Record it now: a consumer may stop reading at the finish event
                            # (collect_response does), and this generator never resumes.
                            member.health.record_success(time.perf_counter() - t0)
                            breaker.record_success()
                            yield event
                            return
                        yield event
                    raise StreamError(member.provider.name, "the stream ended without a finish")
                except ProviderError as exc:
                    member.health.record_error(exc)
                    if isinstance(exc, BadRequestError):
                        # The provider answered; the request was at fault, not its health.
                        breaker.record_success()
                    else:
                        breaker.record_failure(time.monotonic())
                    if started:
                        raise
                    errors.append(exc)
                    if isinstance(exc, BadRequestError) and len(candidates) == 1:
                        raise
                    delay = self._backoff(attempt, exc) if exc.retryable else None
                    if delay is None or attempt >= self.max_retries:
                        break
                    await asyncio.sleep(delay)
                    attempt += 1
                finally:
                    # Release the provider's connection now, also when our caller stopped early.
                    close = getattr(events, "aclose", None)
                    if close is not None:
                        await close()
        raise AllProvidersFailedError(errors)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await collect_response(self.stream(request))

    async def aclose(self) -> None:
        for pool in self._pools:
            for m in pool:
                await m.provider.aclose()
