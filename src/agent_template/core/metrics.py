"""Metrics kept cheaply in process: counters, gauges, bucketed histograms and pull collectors.

:meth:`Metrics.attach` turns bus events into metrics with one inline listener, so components
only publish events. :meth:`Metrics.snapshot` gives a JSON-friendly dict and
:meth:`Metrics.render_prometheus` the Prometheus text format (0.0.4), every name prefixed
``agent_template_``. Recording is O(1): a dict lookup by name, then by a tuple of sorted
label items. Not thread-safe; record from the event loop's thread.
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from agent_template.core.bus import EventBus
from agent_template.models.bus_events import (
    BusEventBase,
    ErrorOccurred,
    ModelCallFinished,
    StreamEnded,
    StreamStarted,
    TaskStateChanged,
    ToolExecFinished,
)

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "METRIC_PREFIX",
    "Collector",
    "Metrics",
    "default_metrics",
    "set_default_metrics",
]

METRIC_PREFIX = "agent_template_"
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
# Distinct values a label fed from outside (a tool name the model chose) may take in one
# metric; later ones are counted under OTHER_LABEL, so a model cannot grow the series unbounded.
MAX_LABEL_VALUES = 100
OTHER_LABEL = "_other"

Collector = Callable[[], dict[str, float]]
_LabelKey = tuple[tuple[str, str], ...]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_log = logging.getLogger(__name__)


def _key(labels: dict[str, str]) -> _LabelKey:
    if not labels:
        return ()
    if len(labels) == 1:
        return tuple(labels.items())
    return tuple(sorted(labels.items()))


def _check_labels(name: str, key: _LabelKey) -> None:
    for label, _ in key:
        if not _LABEL_RE.match(label) or label.startswith("__") or label == "le":
            raise ValueError(f"Metric '{name}': invalid label name {label!r}.")


class _Histogram:
    """One label set's observations: per-bucket counts (the last is +Inf), sum, min and max."""

    __slots__ = ("bounds", "count", "counts", "max", "min", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile by linear interpolation inside its bucket."""
        if not self.count:
            return None
        rank = q * self.count
        cumulative = 0
        for i, n in enumerate(self.counts):
            if n and cumulative + n >= rank:
                if i == len(self.bounds):  # +Inf bucket: the largest value seen is the best guess
                    return self.max
                lower = self.bounds[i - 1] if i else min(0.0, self.min)
                estimate = lower + (self.bounds[i] - lower) * (rank - cumulative) / n
                return min(max(estimate, self.min), self.max)
            cumulative += n
        return self.max


class Metrics:
    """A registry of counters, gauges, histograms and collectors.

    A name keeps the kind it was first used with; each distinct label set is its own series.
    Label values are strings (``str`` subclasses such as enums are fine).
    """

    def __init__(self) -> None:
        self._counters: dict[str, dict[_LabelKey, float]] = {}
        self._gauges: dict[str, dict[_LabelKey, float]] = {}
        self._histograms: dict[str, dict[_LabelKey, _Histogram]] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._collectors: list[Collector] = []
        self._failed_collectors: set[int] = set()
        self._attached: dict[int, Callable[[], None]] = {}  # bus id -> detach
        self._label_values: dict[tuple[str, str], set[str]] = {}

    # ------------------------------------------------------------------ recording

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` (not negative) to the counter ``name`` for these labels.

        Raises:
            ValueError: If ``value`` is negative, or the name or a label name is invalid or
                the name is already used by another kind of metric.
        """
        if value < 0:
            raise ValueError(f"Counter '{name}' can only go up; got {value}.")
        series = self._counters.get(name) or self._family(self._counters, name)
        key = _key(labels)
        current = series.get(key)
        if current is None:
            _check_labels(name, key)
            current = 0.0
        series[key] = current + value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set the gauge ``name`` for these labels to ``value``.

        Raises:
            ValueError: If the name or a label name is invalid, or the name is another kind.
        """
        series = self._gauges.get(name) or self._family(self._gauges, name)
        key = _key(labels)
        if key not in series:
            _check_labels(name, key)
        series[key] = value

    def add(self, name: str, delta: float, **labels: str) -> float:
        """Move the gauge ``name`` by ``delta`` (a missing series starts at 0).

        Returns:
            The gauge's new value.
        """
        series = self._gauges.get(name) or self._family(self._gauges, name)
        key = _key(labels)
        current = series.get(key)
        if current is None:
            _check_labels(name, key)
            current = 0.0
        series[key] = current = current + delta
        return current

    def histogram(self, name: str, buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        """Declare the histogram ``name`` with these bucket upper bounds (before observing).

        Raises:
            ValueError: If the buckets are empty, not increasing or not finite, or the name
                was already used.
        """
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"Histogram '{name}': buckets must be finite and not empty.")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"Histogram '{name}': buckets must be strictly increasing.")
        if name in self._histograms:
            raise ValueError(f"Histogram '{name}' is already declared.")
        self._family(self._histograms, name)
        self._buckets[name] = bounds

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record ``value`` in the histogram ``name`` (default latency buckets, in seconds).

        Raises:
            ValueError: If the name or a label name is invalid, or the name is another kind.
        """
        series = self._histograms.get(name)
        if series is None:
            self.histogram(name)
            series = self._histograms[name]
        key = _key(labels)
        hist = series.get(key)
        if hist is None:
            _check_labels(name, key)
            hist = series[key] = _Histogram(self._buckets[name])
        hist.counts[bisect_left(hist.bounds, value)] += 1
        hist.count += 1
        hist.sum += value
        if value < hist.min:
            hist.min = value
        if value > hist.max:
            hist.max = value

    def add_collector(self, fn: Collector) -> Callable[[], None]:
        """Call ``fn()`` at each snapshot or render; its ``{name: value}`` pairs become gauges.

        Names are made Prometheus-safe when rendered. A collector that raises is logged once
        and skipped.

        Returns:
            A function that removes the collector.
        """
        self._collectors.append(fn)

        def remove() -> None:
            if fn in self._collectors:
                self._collectors.remove(fn)

        return remove

    def bounded(self, metric: str, label: str, value: str) -> str:
        """``value``, or :data:`OTHER_LABEL` once ``label`` of ``metric`` has had
        :data:`MAX_LABEL_VALUES` distinct values: for labels whose values come from outside."""
        seen = self._label_values.setdefault((metric, label), set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER_LABEL
        seen.add(value)
        return value

    # ------------------------------------------------------------------ reading

    def get(self, name: str, **labels: str) -> float | None:
        """Return the current value of a counter or gauge series, or None if never recorded."""
        series = self._counters.get(name) or self._gauges.get(name) or {}
        return series.get(_key(labels))

    def collect(self) -> dict[str, float]:
        """Run the collectors and merge their values (a later collector wins on a clash)."""
        values: dict[str, float] = {}
        for fn in list(self._collectors):
            try:
                values.update(fn())
            except Exception:  # a broken collector must not break the metrics endpoint
                if id(fn) not in self._failed_collectors:
                    self._failed_collectors.add(id(fn))
                    _log.exception("Metrics collector %r failed; it is skipped.", fn)
        return values

    def snapshot(self) -> dict[str, Any]:
        """Return every metric as a JSON-friendly dict.

        Shape: ``{"counters": {name: [{"labels": {...}, "value": v}]}, "gauges": {...},
        "histograms": {name: [{"labels", "count", "sum", "p50", "p95", "p99"}]},
        "collected": {name: value}}``. Quantiles are estimates from the buckets (None when
        there are no observations).
        """

        def plain(family: dict[str, dict[_LabelKey, float]]) -> dict[str, list[dict[str, Any]]]:
            return {
                name: [{"labels": dict(k), "value": v} for k, v in series.items()]
                for name, series in family.items()
            }

        histograms = {
            name: [
                {
                    "labels": dict(k),
                    "count": h.count,
                    "sum": h.sum,
                    **{label: h.quantile(q) for label, q in QUANTILES},
                }
                for k, h in series.items()
            ]
            for name, series in self._histograms.items()
        }
        return {
            "counters": plain(self._counters),
            "gauges": plain(self._gauges),
            "histograms": histograms,
            "collected": self.collect(),
        }

    def render_prometheus(self) -> str:
        """Render every metric in the Prometheus text exposition format, version 0.0.4."""
        lines: list[str] = []
        for kind, family in (("counter", self._counters), ("gauge", self._gauges)):
            for name, series in family.items():
                full = METRIC_PREFIX + name
                lines.append(f"# TYPE {full} {kind}")
                lines.extend(f"{full}{_labels(k)} {_num(v)}" for k, v in series.items())
        for name, hseries in self._histograms.items():
            full = METRIC_PREFIX + name
            lines.append(f"# TYPE {full} histogram")
            for k, h in hseries.items():
                cumulative = 0
                for bound, n in zip((*h.bounds, math.inf), h.counts, strict=True):
                    cumulative += n
                    lines.append(f"{full}_bucket{_labels(k, ('le', _num(bound)))} {cumulative}")
                lines.append(f"{full}_sum{_labels(k)} {_num(h.sum)}")
                lines.append(f"{full}_count{_labels(k)} {h.count}")
        for raw, value in self.collect().items():
            full = METRIC_PREFIX + _INVALID_NAME_CHARS.sub("_", raw)
            lines += [f"# TYPE {full} gauge", f"{full} {_num(value)}"]
        return "\n".join(lines) + "\n" if lines else ""

    # ------------------------------------------------------------------ bus events

    def attach(self, bus: EventBus) -> Callable[[], None]:
        """Turn bus events into metrics with one inline listener.

        Records ``tasks_total{state}`` and ``tasks_current{state}``; ``model_latency_seconds``,
        ``tokens_total{provider,direction}`` and ``model_errors_total`` by provider;
        ``tool_latency_seconds`` and ``tool_errors_total`` by tool, and ``tool_vetoes_total``;
        ``streams_started_total``, ``streams_ended_total`` and ``streams_active``; and
        ``errors_total{code}``. ``tasks_current`` counts tasks by the state they last entered,
        so it is exact only for tasks whose every transition was seen.

        Attaching to a bus this object already listens to changes nothing.

        Returns:
            A function that detaches the listener.
        """
        attached = self._attached
        key = id(bus)
        if key not in attached:
            remove = bus.add_listener(self._on_event, types=_ATTACHED_TYPES)

            def detach() -> None:
                if attached.pop(key, None) is not None:
                    remove()

            attached[key] = detach
        return attached[key]

    def _on_event(self, event: BusEventBase) -> None:
        match event:
            case TaskStateChanged(task=task, previous=previous):
                state = task.state.value
                self.inc("tasks_total", state=state)
                if previous is not None and self.add("tasks_current", -1, state=previous.value) < 0:
                    self.set(
                        "tasks_current", 0, state=previous.value
                    )  # its entry came before attach
                self.add("tasks_current", 1, state=state)
            case ModelCallFinished(provider=provider, model=model, usage=usage, error=error):
                provider = provider or "unknown"
                self.observe("model_latency_seconds", event.latency_ms / 1000, provider=provider)
                self.inc("tokens_total", usage.input_tokens, provider=provider, direction="input")
                self.inc("tokens_total", usage.output_tokens, provider=provider, direction="output")
                if model:  # by the model that answered, for cost estimates
                    name = self.bounded("model_tokens_total", "model", model)
                    for direction, count in (
                        ("input", usage.input_tokens),
                        ("output", usage.output_tokens),
                    ):
                        self.inc(
                            "model_tokens_total",
                            count,
                            provider=provider,
                            model=name,
                            direction=direction,
                        )
                if error is not None:
                    self.inc("model_errors_total", provider=provider)
            case ToolExecFinished(vetoed=True):
                self.inc("tool_vetoes_total")
            case ToolExecFinished(name=name, is_error=is_error, duration_ms=duration_ms):
                tool = self.bounded("tool", "tool", name)  # the model chose the name
                self.observe("tool_latency_seconds", duration_ms / 1000, tool=tool)
                if is_error:
                    self.inc("tool_errors_total", tool=tool)
            case StreamStarted():
                self.inc("streams_started_total")
                self.add("streams_active", 1)
            case StreamEnded():
                self.inc("streams_ended_total")
                if self.add("streams_active", -1) < 0:
                    self.set("streams_active", 0)  # the stream started before attach
            case ErrorOccurred(code=code):
                self.inc("errors_total", code=self.bounded("errors_total", "code", code))
            case _:
                pass

    # ------------------------------------------------------------------ internals

    def _family(self, family: dict[str, dict[_LabelKey, Any]], name: str) -> dict[_LabelKey, Any]:
        series = family.get(name)
        if series is not None:
            return series
        if not _NAME_RE.match(name):
            raise ValueError(f"Invalid metric name {name!r}: use letters, digits, '_' and ':'.")
        for other in (self._counters, self._gauges, self._histograms):
            if other is not family and name in other:
                raise ValueError(f"Metric '{name}' is already used as another kind of metric.")
        series = family[name] = {}
        return series


_ATTACHED_TYPES = (
    "task_state", "model_call_finished", "tool_finished", "stream_started", "stream_ended",
    "error_occurred",
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: _LabelKey, extra: tuple[str, str] | None = None) -> str:
    items = (*key, extra) if extra is not None else key
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in items) + "}"


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


_default_metrics: Metrics | None = None


def default_metrics() -> Metrics:
    """Return the process-wide :class:`Metrics`, creating it on first use (not attached)."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = Metrics()
    return _default_metrics


def set_default_metrics(metrics: Metrics | None) -> None:
    """Replace the process-wide metrics (composition root, tests); None resets it."""
    global _default_metrics
    _default_metrics = metrics
