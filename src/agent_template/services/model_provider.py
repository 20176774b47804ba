"""The model-provider contract and the :class:`ModelManager` that picks, retries and fails over.

A provider turns our :class:`~agent_template.models.ModelRequest` into its wire format and its
answer back into :data:`~agent_template.models.ModelEvent` values. The manager adds what every
provider needs: retries with backoff, failover along ``FALLBACK_PROVIDERS``, deadlines for each
attempt (``MODEL_ATTEMPT_TIMEOUT``) and each call (``MODEL_CALL_TIMEOUT``), a circuit breaker
per provider, optional load balancing among equivalent providers, and health figures. Each
failover is logged at WARNING on ``agent_template.providers`` and counted.
"""

from __future__ import annotations

import asyncio
import logging
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
    ProviderTimeoutError,
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

log = logging.getLogger("agent_template.providers")


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


WATCHDOG_PERIOD_S = 0.25  # how often attempts in flight are checked against their deadlines


class _Attempt:
    """One attempt's deadline, enforced while the provider is awaited (never while the caller
    holds an event): a stalled or trickling stream is cut at the deadline, whatever its reads
    (SSE keep-alive comments reset a read timeout without bringing an event)."""

    __slots__ = ("awaiting", "deadline", "fired", "task")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self.awaiting = False
        self.task = asyncio.current_task()

    def expire(self) -> None:
        self.fired = True
        if self.awaiting and self.task is not None:
            self.task.cancel()

    def timed_out(self) -> bool:
        """After a CancelledError while awaiting: whether it was ours (a timeout)."""
        return self.fired and self.task is not None and self.task.uncancel() == 0


class _Watchdog:
    """One timer for all of a manager's attempts in flight (a timer per attempt would cost
    more than the rest of a short call), checking every :data:`WATCHDOG_PERIOD_S`."""

    __slots__ = ("_attempts", "_handle", "_loop")

    def __init__(self) -> None:
        self._attempts: set[_Attempt] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, attempt: _Attempt) -> None:
        self._attempts.add(attempt)
        loop = asyncio.get_running_loop()
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._handle = loop.call_later(WATCHDOG_PERIOD_S, self._sweep)

    def forget(self, attempt: _Attempt) -> None:
        self._attempts.discard(attempt)

    def _sweep(self) -> None:
        now = time.monotonic()
        for attempt in [a for a in self._attempts if now >= a.deadline]:
            self._attempts.discard(attempt)
            attempt.expire()
        if self._attempts and self._loop is not None and not self._loop.is_closed():
            self._handle = self._loop.call_later(WATCHDOG_PERIOD_S, self._sweep)
        else:
            self._handle = None


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

    Attributes:
        failovers: how often a call moved from a failed provider to the next one.
        failover_counts: the same by pair, keyed ``"from -> to"`` (provider labels).
        attempt_timeout: seconds one attempt may take (``MODEL_ATTEMPT_TIMEOUT``).
        call_timeout: seconds one call may take, retries and failover included
            (``MODEL_CALL_TIMEOUT``).
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
        self.attempt_timeout = settings.model_attempt_timeout
        self.call_timeout = settings.model_call_timeout
        # Switches from a failed provider to the next one: in total, and by "from -> to".
        self.failovers = 0
        self._watchdog = _Watchdog()
        self.failover_counts: dict[str, int] = {}
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
        """Per-provider health: state of the breaker, requests, errors, latency, and
        ``failed_over_to``: how often a call moved from this provider to each other one."""
        rows = []
        for rank, pool in enumerate(self._pools):
            for m in pool:
                prefix = f"{m.provider.label} -> "
                moved = {
                    pair.removeprefix(prefix): n
                    for pair, n in self.failover_counts.items()
                    if pair.startswith(prefix)
                }
                rows.append(
                    {
                        "provider": m.provider.label,
                        "model": m.provider.model,
                        "role": "primary" if rank == 0 else f"fallback {rank}",
                        "circuit": m.breaker.state,
                        **m.health.as_dict(),
                        "failed_over_to": moved,
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
        answer and nothing is sent twice. A stalled provider (a timeout) is not retried when
        another provider can take over.

        Each attempt must finish within ``MODEL_ATTEMPT_TIMEOUT`` and the whole call, retries
        and failover included, within ``MODEL_CALL_TIMEOUT``. The deadlines are checked as
        events arrive (a stream that stops sending altogether is ended by the provider's
        ``MODEL_TIMEOUT``); a finish event that comes late is still accepted.

        Raises:
            AllProvidersFailedError: when every provider failed, or the call ran out of time
                before one answered.
            BadRequestError: when the only provider refused the request as invalid.
            ProviderError: when a stream broke after it had started
                (:class:`~agent_template.errors.ProviderTimeoutError` when it overran a
                deadline).
        """
        clock = time.monotonic
        call_deadline = clock() + self.call_timeout
        errors: list[ProviderError] = []
        failed: dict[str, ProviderError] = {}  # the last error of each provider that failed
        candidates = self._candidates()
        forced = not candidates
        if forced:  # every breaker open: try the primary rather than refuse outright
            candidates = [self._pools[0][0]]
        previous: _Member | None = None
        last = len(candidates) - 1
        for position, member in enumerate(candidates):
            breaker = member.breaker
            attempt = 0
            while True:
                begun = clock()
                # A half-open breaker lets one caller through per cooldown; others move on.
                if not ((forced and attempt == 0) or breaker.acquire(begun)):
                    break
                if begun >= call_deadline:
                    errors.append(self._out_of_time(member))
                    raise AllProvidersFailedError(errors)
                if previous is not member:
                    if previous is not None:
                        self._count_failover(previous, member)
                    previous = member
                deadline = min(begun + self.attempt_timeout, call_deadline)
                started = False
                t0 = time.perf_counter()
                member.health.requests += 1
                events = member.provider.stream(request)
                watch = _Attempt(deadline)
                self._watchdog.watch(watch)
                next_event = events.__anext__
                try:
                    while True:
                        watch.awaiting = True
                        try:
                            event = await next_event()
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            if watch.timed_out():  # our watchdog's, not the caller's
                                raise self._overran(member, begun, call_deadline) from None
                            raise
                        finally:
                            watch.awaiting = False
                        if type(event) is ResponseFinished:
                            # Record it now: a consumer may stop reading at the finish event
                            # (collect_response does), and this generator never resumes.
                            elapsed = time.perf_counter() - t0
                            if not started:
                                member.health.record_first_event(elapsed)
                            member.health.record_success(elapsed)
                            breaker.record_success()
                            if failed:
                                self._log_failover(failed, member.provider.label)
                            yield event
                            return
                        if watch.fired:  # it overran while the caller held an event
                            raise self._overran(member, begun, call_deadline)
                        if not started:
                            started = True
                            member.health.record_first_event(time.perf_counter() - t0)
                        yield event
                    raise StreamError(member.provider.name, "the stream ended without a finish")
                except ProviderError as exc:
                    member.health.record_error(exc)
                    if isinstance(exc, BadRequestError):
                        # The provider answered; the request was at fault, not its health.
                        breaker.record_success()
                    else:
                        breaker.record_failure(clock())
                    if started:
                        raise
                    errors.append(exc)
                    label = member.provider.label
                    failed.pop(label, None)
                    failed[label] = exc  # re-inserted: the log lists them as they failed
                    if isinstance(exc, BadRequestError) and len(candidates) == 1:
                        raise
                    if isinstance(exc, ProviderTimeoutError):
                        if exc.setting == "MODEL_CALL_TIMEOUT":
                            raise AllProvidersFailedError(errors) from None
                        if position < last:
                            break  # a stalled provider is likely to stall again: move on now
                    delay = self._backoff(attempt, exc) if exc.retryable else None
                    if delay is None or attempt >= self.max_retries:
                        break
                    await asyncio.sleep(min(delay, max(call_deadline - clock(), 0.0)))
                    attempt += 1
                finally:
                    watch.awaiting = False
                    self._watchdog.forget(watch)
                    # Release the provider's connection now, also when our caller stopped early.
                    close = getattr(events, "aclose", None)
                    if close is not None:
                        await close()
        raise AllProvidersFailedError(errors)

    def _overran(self, member: _Member, begun: float, call_deadline: float) -> ProviderTimeoutError:
        """The error of an attempt begun at ``begun`` that ran past its deadline."""
        if begun + self.attempt_timeout < call_deadline:
            setting, limit = "MODEL_ATTEMPT_TIMEOUT", self.attempt_timeout
        else:
            setting, limit = "MODEL_CALL_TIMEOUT", self.call_timeout
        return ProviderTimeoutError(
            member.provider.name,
            f"the answer was not finished within {setting}={limit:g}s",
            setting=setting,
            timeout=limit,
        )

    def _out_of_time(self, member: _Member) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            member.provider.name,
            "no time was left for another attempt within "
            f"MODEL_CALL_TIMEOUT={self.call_timeout:g}s",
            setting="MODEL_CALL_TIMEOUT",
            timeout=self.call_timeout,
        )

    def _count_failover(self, source: _Member, target: _Member) -> None:
        self.failovers += 1
        pair = f"{source.provider.label} -> {target.provider.label}"
        self.failover_counts[pair] = self.failover_counts.get(pair, 0) + 1

    @staticmethod
    def _log_failover(failed: dict[str, ProviderError], answered: str) -> None:
        """Say which providers failed (their code and detail) and which one answered."""
        causes = "; ".join(
            f"{label} failed ({error.code}"
            f"{f', HTTP {error.status}' if error.status else ''}: {error.detail})"
            for label, error in failed.items()
            if label != answered
        )
        if causes:
            log.warning("model call failed over: %s; %s answered", causes, answered)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await collect_response(self.stream(request))

    async def aclose(self) -> None:
        """Close every provider's connections; the manager stays usable (they reopen)."""
        for pool in self._pools:
            for m in pool:
                await m.provider.aclose()
