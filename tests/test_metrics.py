"""Tests of Metrics: counters, gauges, histograms, collectors, bus events, Prometheus text."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import pytest

from agent_template.core.bus import InProcessEventBus
from agent_template.core.metrics import Metrics, default_metrics, set_default_metrics
from agent_template.models.bus_events import (
    ErrorOccurred,
    ModelCallFinished,
    SessionChanged,
    StreamEnded,
    StreamStarted,
    TaskStateChanged,
    ToolExecFinished,
)
from agent_template.models.messages import Usage
from agent_template.models.tasks import Task, TaskState

Sample = tuple[str, dict[str, str], float]

_TYPE_LINE = re.compile(r"# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)")
_SAMPLE_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"(,|\})')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 1
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"bad label set {text!r} at {pos}"
        name, raw, _ = match.groups()
        assert name not in labels, f"duplicate label {name}"
        labels[name] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], raw)
        pos = match.end()
    assert text.endswith("}")
    return labels


def parse_prometheus(text: str) -> tuple[dict[str, str], list[Sample]]:
    """A strict reader for the 0.0.4 text format as we emit it: TYPE lines and samples."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for line in text.splitlines():
        if line.startswith("#"):
            match = _TYPE_LINE.fullmatch(line)
            assert match, f"bad comment line {line!r}"
            assert match.group(1) not in types, f"family declared twice: {line!r}"
            types[match.group(1)] = match.group(2)
            continue
        match = _SAMPLE_LINE.fullmatch(line)
        assert match, f"bad sample line {line!r}"
        name, label_text, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        declared = types.get(name) or types.get(family)
        assert declared, f"sample before its TYPE line: {line!r}"
        if declared == "histogram":
            assert name != family, f"histogram sample without a suffix: {line!r}"
        assert name.startswith("agent_template_")
        number = float(value)  # accepts +Inf, -Inf and NaN too
        assert value == "+Inf" or math.isfinite(number) or value in ("-Inf", "NaN")
        samples.append((name, _parse_labels(label_text) if label_text else {}, number))
    return types, samples


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, lbl, v in samples if n == name and lbl == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def test_counters_and_gauges_by_label_set() -> None:
    m = Metrics()
    m.inc("requests_total")
    m.inc("requests_total", 2.5)
    m.inc("hits_total", route="/a", method="GET")
    m.inc("hits_total", method="GET", route="/a")  # same labels, other order: same series
    m.inc("hits_total", method="POST", route="/a")
    m.set("queue_depth", 7, queue="main")
    m.set("queue_depth", 3, queue="main")
    assert m.add("inflight", 2) == 2
    assert m.add("inflight", -1) == 1
    assert m.get("requests_total") == 3.5
    assert m.get("hits_total", route="/a", method="GET") == 2
    assert m.get("hits_total", route="/a", method="POST") == 1
    assert m.get("hits_total", route="/b", method="GET") is None
    assert m.get("queue_depth", queue="main") == 3
    assert m.get("inflight") == 1
    snap = m.snapshot()
    assert snap["counters"]["hits_total"] == [
        {"labels": {"method": "GET", "route": "/a"}, "value": 2.0},
        {"labels": {"method": "POST", "route": "/a"}, "value": 1.0},
    ]
    assert snap["gauges"]["queue_depth"] == [{"labels": {"queue": "main"}, "value": 3}]


def test_misuse_is_refused_with_a_reason() -> None:
    m = Metrics()
    m.inc("calls_total")
    with pytest.raises(ValueError, match="only go up"):
        m.inc("calls_total", -1)
    with pytest.raises(ValueError, match="another kind"):
        m.set("calls_total", 1)
    with pytest.raises(ValueError, match="another kind"):
        m.observe("calls_total", 1)
    with pytest.raises(ValueError, match="Invalid metric name"):
        m.inc("bad-name")
    with pytest.raises(ValueError, match="invalid label name"):
        m.inc("calls_total", le="1")
    with pytest.raises(ValueError, match="invalid label name"):
        m.set("g", 1, __x="1")
    with pytest.raises(ValueError, match="strictly increasing"):
        m.histogram("h", [1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        m.histogram("h", [1.0, math.inf])
    assert m.get("calls_total") == 1


def test_histogram_counts_sum_and_quantiles() -> None:
    m = Metrics()
    for _ in range(90):
        m.observe("latency_seconds", 0.003, op="read")
    for _ in range(10):
        m.observe("latency_seconds", 2.0, op="read")
    for i in range(1, 1001):
        m.observe("latency_seconds", i / 1000, op="scan")
    m.observe("latency_seconds", 120.0, op="slow")  # beyond the last bucket
    stats = {h["labels"]["op"]: h for h in m.snapshot()["histograms"]["latency_seconds"]}

    read = stats["read"]
    assert read["count"] == 100
    assert read["sum"] == pytest.approx(90 * 0.003 + 20.0)
    assert read["p50"] == pytest.approx(0.003)  # clamped to the smallest value seen
    assert read["p95"] == pytest.approx(1.75)  # halfway through the (1, 2.5] bucket
    assert read["p99"] == pytest.approx(2.0)  # clamped to the largest value seen

    scan = stats["scan"]
    assert scan["count"] == 1000
    assert scan["p50"] == pytest.approx(0.5, abs=0.01)
    assert scan["p95"] == pytest.approx(0.95, abs=0.01)
    assert scan["p99"] == pytest.approx(0.99, abs=0.01)

    assert stats["slow"]["p50"] == stats["slow"]["p99"] == 120.0


def test_custom_buckets_and_empty_histogram() -> None:
    m = Metrics()
    m.histogram("size_bytes", [100, 1000])
    assert m.snapshot()["histograms"]["size_bytes"] == []
    for value in (50, 100, 101, 5000):
        m.observe("size_bytes", value)
    _, samples = parse_prometheus(m.render_prometheus())
    buckets = [(lbl["le"], v) for n, lbl, v in samples if n == "agent_template_size_bytes_bucket"]
    assert buckets == [("100", 2), ("1000", 3), ("+Inf", 4)]  # le is inclusive
    assert value_of(samples, "agent_template_size_bytes_sum") == 5251
    assert value_of(samples, "agent_template_size_bytes_count") == 4


def test_collectors_are_read_at_snapshot_time(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    depth = {"value": 1.0}
    remove = m.add_collector(lambda: {"queue_depth": depth["value"], "provider.failovers": 2})

    def broken() -> dict[str, float]:
        raise RuntimeError("collector bug")

    m.add_collector(broken)
    with caplog.at_level(logging.ERROR, logger="agent_template.core.metrics"):
        assert m.snapshot()["collected"] == {"queue_depth": 1.0, "provider.failovers": 2}
        depth["value"] = 5.0
        assert m.snapshot()["collected"]["queue_depth"] == 5.0
        types, samples = parse_prometheus(m.render_prometheus())
    assert types["agent_template_provider_failovers"] == "gauge"
    assert value_of(samples, "agent_template_queue_depth") == 5.0
    assert len([r for r in caplog.records if "collector" in r.getMessage()]) == 1
    remove()
    assert m.snapshot()["collected"] == {}


def _transition(task: Task, state: TaskState) -> TaskStateChanged:
    previous = None if state is TaskState.PENDING else task.state
    task.state = state
    return TaskStateChanged(task=task.model_copy(), previous=previous, task_id=task.task_id)


async def test_attach_turns_bus_events_into_metrics() -> None:
    bus = InProcessEventBus()
    m = Metrics()
    detach = m.attach(bus)
    first, second = Task(), Task()
    events = [
        _transition(first, TaskState.PENDING),
        _transition(second, TaskState.PENDING),
        _transition(first, TaskState.RUNNING),
        _transition(second, TaskState.RUNNING),
        _transition(first, TaskState.COMPLETED),
        ModelCallFinished(
            provider="openai", latency_ms=250, usage=Usage(input_tokens=100, output_tokens=20)
        ),
        ModelCallFinished(
            provider="openai", latency_ms=750, usage=Usage(input_tokens=50, output_tokens=5)
        ),
        ModelCallFinished(provider="anthropic", latency_ms=40_000, error="overloaded"),
        ToolExecFinished(call_id="1", name="search", duration_ms=20),
        ToolExecFinished(call_id="2", name="search", duration_ms=30, is_error=True),
        ToolExecFinished(call_id="3", name="shell", is_error=True, vetoed=True),
        StreamStarted(stream_id="a"),
        StreamStarted(stream_id="b"),
        StreamEnded(stream_id="a", chunks=3),
        ErrorOccurred(code="provider_error", message="x"),
        ErrorOccurred(code="provider_error", message="y"),
        SessionChanged(action="created"),
    ]
    for event in events:
        bus.publish(event)

    assert m.get("tasks_total", state="pending") == 2
    assert m.get("tasks_total", state="running") == 2
    assert m.get("tasks_total", state="completed") == 1
    assert m.get("tasks_current", state="pending") == 0
    assert m.get("tasks_current", state="running") == 1
    assert m.get("tasks_current", state="completed") == 1
    assert m.get("tokens_total", provider="openai", direction="input") == 150
    assert m.get("tokens_total", provider="openai", direction="output") == 25
    assert m.get("model_errors_total", provider="anthropic") == 1
    assert m.get("model_errors_total", provider="openai") is None
    assert m.get("tool_errors_total", tool="search") == 1
    assert m.get("tool_errors_total", tool="shell") is None
    assert m.get("tool_vetoes_total") == 1
    assert m.get("streams_started_total") == 2
    assert m.get("streams_ended_total") == 1
    assert m.get("streams_active") == 1
    assert m.get("errors_total", code="provider_error") == 2

    hists = m.snapshot()["histograms"]
    model = {h["labels"]["provider"]: h for h in hists["model_latency_seconds"]}
    assert model["openai"]["count"] == 2
    assert model["openai"]["sum"] == pytest.approx(1.0)
    assert model["anthropic"]["p50"] == 40.0
    tool = hists["tool_latency_seconds"]
    assert tool == [
        {
            "labels": {"tool": "search"},
            "count": 2,
            "sum": pytest.approx(0.05),
            "p50": pytest.approx(0.025),  # the top of the (0.01, 0.025] bucket
            "p95": pytest.approx(0.03),
            "p99": pytest.approx(0.03),
        }
    ]
    assert bus.listener_errors == 0

    detach()
    bus.publish(ErrorOccurred(code="provider_error", message="z"))
    assert m.get("errors_total", code="provider_error") == 2


async def test_attach_mid_run_never_shows_negative_gauges() -> None:
    bus = InProcessEventBus()
    m = Metrics()
    m.attach(bus)
    task = Task(state=TaskState.RUNNING)
    bus.publish(_transition(task, TaskState.FAILED))  # its start happened before attach
    bus.publish(StreamEnded(stream_id="old"))
    assert m.get("tasks_current", state="running") == 0
    assert m.get("tasks_current", state="failed") == 1
    assert m.get("streams_active") == 0


async def test_prometheus_text_is_well_formed() -> None:
    bus = InProcessEventBus()
    m = Metrics()
    m.attach(bus)
    bus.publish(_transition(Task(), TaskState.PENDING))
    bus.publish(ModelCallFinished(provider="openai", latency_ms=12, usage=Usage(input_tokens=3)))
    bus.publish(ToolExecFinished(call_id="1", name="search", duration_ms=0.5))
    m.set("temperature", -1.5)
    m.set("ratio", math.inf)
    text = m.render_prometheus()
    types, samples = parse_prometheus(text)

    assert types == {
        "agent_template_tasks_total": "counter",
        "agent_template_tokens_total": "counter",
        "agent_template_tasks_current": "gauge",
        "agent_template_temperature": "gauge",
        "agent_template_ratio": "gauge",
        "agent_template_model_latency_seconds": "histogram",
        "agent_template_tool_latency_seconds": "histogram",
    }
    assert value_of(samples, "agent_template_tasks_total", state="pending") == 1
    assert value_of(samples, "agent_template_temperature") == -1.5
    assert value_of(samples, "agent_template_ratio") == math.inf
    assert "agent_template_ratio +Inf\n" in text
    for family in ("model_latency_seconds", "tool_latency_seconds"):
        name = f"agent_template_{family}"
        buckets = [(lbl, v) for n, lbl, v in samples if n == f"{name}_bucket"]
        assert [lbl["le"] for lbl, _ in buckets][-1] == "+Inf"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "buckets must be cumulative"
        assert counts[-1] == 1
        bounds = [float(lbl["le"]) for lbl, _ in buckets]
        assert bounds == sorted(bounds)
        labels = {k: v for k, v in buckets[0][0].items() if k != "le"}
        assert value_of(samples, f"{name}_count", **labels) == 1
    assert value_of(samples, "agent_template_model_latency_seconds_sum", provider="openai") == 0.012
    assert 'agent_template_model_latency_seconds_bucket{provider="openai",le="0.025"} 1' in text
    assert 'agent_template_model_latency_seconds_bucket{provider="openai",le="0.01"} 0' in text


def test_label_values_are_escaped() -> None:
    m = Metrics()
    nasty = 'C:\\tmp "quoted"\nnext line'
    m.inc("files_total", path=nasty)
    m.inc("files_total", path="plain")
    text = m.render_prometheus()
    assert 'agent_template_files_total{path="C:\\\\tmp \\"quoted\\"\\nnext line"} 1\n' in text
    assert len(text.splitlines()) == 3  # the newline in the value did not split the sample
    _, samples = parse_prometheus(text)
    assert value_of(samples, "agent_template_files_total", path=nasty) == 1


def test_snapshot_is_json_friendly_and_empty_render_is_empty() -> None:
    m = Metrics()
    assert m.render_prometheus() == ""
    m.observe("latency_seconds", 0.2)
    m.histogram("unused_seconds")
    m.inc("x_total", kind="a")
    snap = json.loads(json.dumps(m.snapshot()))
    assert snap["histograms"]["latency_seconds"][0]["count"] == 1
    assert snap["histograms"]["unused_seconds"] == []
    assert snap["counters"]["x_total"] == [{"labels": {"kind": "a"}, "value": 1.0}]


def test_default_metrics_is_one_lazy_instance() -> None:
    set_default_metrics(None)
    try:
        metrics = default_metrics()
        assert default_metrics() is metrics
        replacement = Metrics()
        set_default_metrics(replacement)
        assert default_metrics() is replacement
    finally:
        set_default_metrics(None)


async def test_agent_loop_reports_tasks_tokens_and_queue_figures(tmp_path: Any) -> None:
    from agent_template import AgentLoop
    from agent_template.config import Settings
    from agent_template.core.bus import InProcessEventBus
    from agent_template.services.providers.offline import TestProvider

    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'm.db'}")  # type: ignore[call-arg]
    metrics = Metrics()
    loop = AgentLoop(settings, model=TestProvider(), bus=InProcessEventBus(), metrics=metrics)
    for _ in range(3):
        await loop.create_task({"message": "hello"})
    await loop.run()
    snap = metrics.snapshot()
    assert metrics.get("tasks_total", state="completed") == 3
    assert metrics.get("tokens_total", provider="test", direction="output")
    assert snap["collected"]["tasks_pending"] == 0
    assert snap["collected"]["stream_chunks_dropped_total"] == 0
    assert "agent_template_model_latency_seconds_bucket" in metrics.render_prometheus()


async def test_tool_names_the_model_invents_cannot_grow_the_series_without_bound() -> None:
    from agent_template.core.metrics import MAX_LABEL_VALUES, OTHER_LABEL

    bus = InProcessEventBus()
    metrics = Metrics()
    metrics.attach(bus)
    for i in range(MAX_LABEL_VALUES + 50):
        bus.publish(ToolExecFinished(call_id=str(i), name=f"made_up_{i}", is_error=True))
    series = metrics.snapshot()["counters"]["tool_errors_total"]
    assert len(series) == MAX_LABEL_VALUES + 1
    assert metrics.get("tool_errors_total", tool=OTHER_LABEL) == 50
    assert metrics.get("tool_errors_total", tool="made_up_0") == 1


async def test_a_stopped_loop_leaves_no_collector_behind(tmp_path: Any) -> None:
    from agent_template import AgentLoop
    from agent_template.config import Settings
    from agent_template.services.providers.offline import TestProvider

    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'm.db'}")  # type: ignore[call-arg]
    metrics = Metrics()
    loop = AgentLoop(settings, model=TestProvider(), bus=InProcessEventBus(), metrics=metrics)
    assert "tasks_pending" in metrics.collect()
    await loop.stop()
    assert metrics.collect() == {}
    await loop.sessions.close()
