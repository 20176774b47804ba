"""Circuit breaker and health figures kept per provider instance."""

from __future__ import annotations

import time
from typing import Any, Literal

__all__ = ["CircuitBreaker", "ProviderHealth"]

_EWMA_WEIGHT = 0.2  # recent calls dominate, one slow call does not


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; lets one trial through after ``cooldown``.

    A successful trial closes it again, which is how traffic returns to a recovered primary; a
    failed trial opens it for another cooldown. While a trial runs, other callers keep away; a
    trial that never reports back (its caller was cancelled) is followed by another one after
    the next cooldown.
    """

    __slots__ = ("_failures", "_opened_at", "_trial", "cooldown", "threshold")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._trial or time.monotonic() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allows(self, now: float) -> bool:
        """Whether a call may be sent now (without claiming the trial)."""
        return self._opened_at is None or now - self._opened_at >= self.cooldown

    def acquire(self, now: float) -> bool:
        """Claim the right to send one call: always when closed, once per cooldown otherwise."""
        if self._opened_at is None:
            return True
        if now - self._opened_at < self.cooldown:
            return False
        self._opened_at = now  # others wait another cooldown while this trial runs
        self._trial = True
        return True

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.threshold:
            self._opened_at = now  # a failed trial re-opens for another cooldown
        self._trial = False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False


class ProviderHealth:
    """Request, error and latency figures for ``status`` and metrics."""

    __slots__ = (
        "errors",
        "first_event_ewma_s",
        "last_error",
        "last_error_at",
        "latency_ewma_s",
        "requests",
        "successes",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.successes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.latency_ewma_s: float | None = None
        self.first_event_ewma_s: float | None = None

    @staticmethod
    def _mix(old: float | None, new: float) -> float:
        return new if old is None else old + _EWMA_WEIGHT * (new - old)

    def record_first_event(self, seconds: float) -> None:
        self.first_event_ewma_s = self._mix(self.first_event_ewma_s, seconds)

    def record_success(self, seconds: float) -> None:
        self.successes += 1
        self.latency_ewma_s = self._mix(self.latency_ewma_s, seconds)

    def record_error(self, error: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self.last_error_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "latency_ms": round(self.latency_ewma_s * 1000, 1) if self.latency_ewma_s else None,
            "first_token_ms": (
                round(self.first_event_ewma_s * 1000, 1) if self.first_event_ewma_s else None
            ),
            "last_error": self.last_error,
        }
