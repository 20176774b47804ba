"""Optional OpenTelemetry traces of the agent: a span per run, model call and tool call.

Tracing is on when the ``otel`` extra is installed (``pip install 'agent-template[otel]'``)
and the process has a tracer provider: one that FastAPI sets up from ``OTEL_EXPORTER_OTLP_*``
with ``FASTAPI_OTEL_AUTO_CONFIGURE=true`` (and the OTLP exporter installed), one made by
``opentelemetry-instrument agent-server``, or one a launcher sets before start-up. Otherwise
:func:`install_telemetry` returns None: no listener, and nothing of OpenTelemetry is imported
by this module.

HTTP requests are traced by FastAPI itself (its native telemetry, with the same global
provider): ``GET /api/v1/stats`` server spans with ``http.route`` and the status, joined to
the caller's trace by a ``traceparent`` header. This module adds, following the semantic
conventions for generative AI:

* a run (a task, from its start to its end): ``invoke_agent agent-template``, a child of the
  span that created the task (the request, usually) or of its parent task's run, with
  ``gen_ai.operation.name``, ``gen_ai.agent.name`` and ``gen_ai.conversation.id`` (the
  session), and ``error.type`` when it failed;
* a model call: ``chat MODEL`` (client kind), a child of its run, with ``gen_ai.system`` and
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens`` and ``error.type``;
* a tool call: ``execute_tool NAME``, a child of its run, with ``gen_ai.tool.name`` and
  ``gen_ai.tool.call.id``.

They are built from bus events (``TaskStateChanged``, ``ModelCallStarted``/``Finished``,
``ToolExecStarted``/``Finished``) with the events' timestamps, so nothing on the streaming path
knows about tracing. No message content, and no user id, is recorded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent_template.models.bus_events import (
    ModelCallFinished,
    ModelCallStarted,
    TaskStateChanged,
    ToolExecFinished,
    ToolExecStarted,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

    from agent_template.api.state import ServerState
    from agent_template.models.bus_events import BusEventBase

__all__ = ["AGENT_NAME", "TRACER_NAME", "install_telemetry", "telemetry_available"]

log = logging.getLogger("agent_template.server")

TRACER_NAME = "agent_template"
AGENT_NAME = "agent-template"
_EVENT_TYPES = (
    "task_state",
    "model_call_started",
    "model_call_finished",
    "tool_started",
    "tool_finished",
)
# OpenTelemetry's own variables (read by its SDK and by FastAPI, not settings of ours) that say
# the user wants traces exported.
_TRACING_VARIABLES = (
    "FASTAPI_OTEL_AUTO_CONFIGURE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def telemetry_available() -> bool:
    """Whether the ``otel`` extra (OpenTelemetry's API and SDK) is installed; imports nothing."""
    try:
        return (
            importlib.util.find_spec("opentelemetry.trace") is not None
            and importlib.util.find_spec("opentelemetry.sdk") is not None
        )
    except (ImportError, ValueError):  # a broken or half-removed installation
        return False


def install_telemetry(
    app: FastAPI, state: ServerState, *, tracer_provider: TracerProvider | None = None
) -> Callable[[], None] | None:
    """Trace the agent's runs, model calls and tool calls.

    Call it in the lifespan once the state is built; call what it returns after the state
    is closed, so the runs that the drain ends are recorded too.

    Args:
        app: the application; it remembers that tracing is installed.
        state: whose bus the runs, model calls and tool calls come from.
        tracer_provider: where spans go; by default the process's global provider.

    Returns:
        A function that removes the tracing (ending spans still open), or None when the
        ``otel`` extra is not installed or no tracer provider is configured.

    Raises:
        RuntimeError: tracing is installed on this app already.
    """
    if tracer_provider is None and not telemetry_available():
        _warn_if_tracing_requested()
        return None
    from opentelemetry import trace

    provider = tracer_provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # nobody configured tracing: spans would go nowhere
    if getattr(app.state, "telemetry", None) is not None:
        raise RuntimeError("Telemetry is installed on this app already; install it once.")
    from agent_template import __version__

    spans = _BusSpans(provider.get_tracer(TRACER_NAME, __version__), state)
    remove_listener = state.bus.add_listener(spans.on_event, types=_EVENT_TYPES)
    app.state.telemetry = spans

    def uninstall() -> None:
        remove_listener()
        spans.end_all()
        if getattr(app.state, "telemetry", None) is spans:
            app.state.telemetry = None

    return uninstall


def _warn_if_tracing_requested() -> None:
    """Say how to get traces when the environment asks for them but the extra is missing."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    named = [
        name
        for name in _TRACING_VARIABLES
        if os.environ.get(name, "").strip().lower() not in ("", "false")
    ]
    if named:
        log.warning(
            "%s set, but the otel extra is not installed, so no traces are recorded. "
            "Install it with: pip install 'agent-template[otel]' (and an exporter, such as "
            "opentelemetry-exporter-otlp-proto-http for OTLP).",
            " and ".join(named) + (" is" if len(named) == 1 else " are"),
        )


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class _BusSpans:
    """Spans for runs, model calls and tool calls, opened and closed by bus events."""

    def __init__(self, tracer: Tracer, state: ServerState) -> None:
        from opentelemetry import trace

        self.trace = trace  # imported once the extra is known to be there
        self.tracer = tracer
        self.state = state
        self.runs: dict[str, Span] = {}
        self.calls: dict[tuple[str, str], Span] = {}  # (task id, turn or call id)
        self.creators: dict[str, SpanContext] = {}  # task id -> the span that created it
        self.requested: dict[str, str | None] = {}  # task id -> the model asked for

    def on_event(self, event: BusEventBase) -> None:
        match event:
            case TaskStateChanged():
                self._task(event)
            case ModelCallStarted():
                self._model_started(event)
            case ModelCallFinished():
                self._model_finished(event)
            case ToolExecStarted():
                self._tool_started(event)
            case ToolExecFinished():
                self._tool_finished(event)
            case _:
                pass

    # ------------------------------------------------------------------ runs

    def _task(self, event: Any) -> None:
        trace = self.trace
        task = event.task
        task_id: str = task.task_id
        if event.previous is None:
            # Published in the creator's context: the request (or run) that made the task.
            current = trace.get_current_span().get_span_context()
            if current.is_valid:
                self.creators[task_id] = current
            return
        if task.state.value == "running" and task_id not in self.runs:
            parent_span = self.runs.get(task.parent_id) if task.parent_id else None
            creator = self.creators.pop(task_id, None)
            if parent_span is not None:
                context = trace.set_span_in_context(parent_span)
            elif creator is not None:
                context = trace.set_span_in_context(trace.NonRecordingSpan(creator))
            else:
                context = None
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": AGENT_NAME,
                "agent_template.task.id": task_id,
                "agent_template.task.type": task.type,
            }
            if task.session_id:
                attributes["gen_ai.conversation.id"] = task.session_id
            started = task.started_at or event.ts
            attributes["agent_template.task.queued_ms"] = round(
                max(0.0, started - task.created_at) * 1000, 1
            )
            self.runs[task_id] = self.tracer.start_span(
                f"invoke_agent {AGENT_NAME}",
                context=context,
                kind=trace.SpanKind.INTERNAL,
                attributes=attributes,
                start_time=_ns(started),
            )
            model = task.payload.get("model") if isinstance(task.payload, dict) else None
            self.requested[task_id] = str(model) if model else self._default_model()
            return
        if task.done:
            self.creators.pop(task_id, None)
            self.requested.pop(task_id, None)
            end = _ns(task.finished_at or event.ts)
            for key in [k for k in self.calls if k[0] == task_id]:
                self.calls.pop(key).end(end_time=end)  # cut short: no finished event came
            span = self.runs.pop(task_id, None)
            if span is None:
                return
            span.set_attribute("agent_template.task.state", task.state.value)
            if task.state.value == "failed":
                span.set_attribute("error.type", task.error or "failed")
                span.set_status(trace.Status(trace.StatusCode.ERROR, task.error or None))
            span.end(end_time=end)

    def _default_model(self) -> str | None:
        primary = getattr(self.state.loop.agent.model, "primary", None)
        model = getattr(primary, "model", None)
        return str(model) if model else None

    def _child_context(self, task_id: str | None) -> Any:
        trace = self.trace
        run = self.runs.get(task_id) if task_id else None
        return trace.set_span_in_context(run) if run is not None else None

    # ------------------------------------------------------------------ model calls

    def _model_started(self, event: Any) -> None:
        trace = self.trace
        task_id = event.task_id or ""
        model = self.requested.get(task_id)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat"}
        if model:
            attributes["gen_ai.request.model"] = model
        if event.session_id:
            attributes["gen_ai.conversation.id"] = event.session_id
        self.calls[(task_id, f"turn:{event.turn}")] = self.tracer.start_span(
            f"chat {model}" if model else "chat",
            context=self._child_context(event.task_id),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(event.ts),
        )

    def _model_finished(self, event: Any) -> None:
        trace = self.trace
        span = self.calls.pop((event.task_id or "", f"turn:{event.turn}"), None)
        if span is None:
            return
        if event.provider:
            span.set_attribute("gen_ai.system", event.provider)
            span.set_attribute("gen_ai.provider.name", event.provider)
        if event.model:
            span.set_attribute("gen_ai.response.model", event.model)
            if self.requested.get(event.task_id or "") is None:
                span.set_attribute("gen_ai.request.model", event.model)
                span.update_name(f"chat {event.model}")
        span.set_attribute("gen_ai.usage.input_tokens", event.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.usage.output_tokens)
        if event.error:
            span.set_attribute("error.type", event.error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.error))
        span.end(end_time=_ns(event.ts))

    # ------------------------------------------------------------------ tool calls

    def _tool_started(self, event: Any) -> None:
        trace = self.trace
        self.calls[(event.task_id or "", f"tool:{event.call_id}")] = self.tracer.start_span(
            f"execute_tool {event.name}",
            context=self._child_context(event.task_id),
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.name,
                "gen_ai.tool.call.id": event.call_id,
            },
            start_time=_ns(event.ts),
        )

    def _tool_finished(self, event: Any) -> None:
        trace = self.trace
        span = self.calls.pop((event.task_id or "", f"tool:{event.call_id}"), None)
        if span is None:
            return
        if event.vetoed:
            span.set_attribute("agent_template.tool.vetoed", True)
        if event.is_error:
            span.set_attribute("error.type", "tool_error")
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end(end_time=_ns(event.ts))

    def end_all(self) -> None:
        """End every span still open (the tracing is being removed)."""
        for span in [*self.calls.values(), *self.runs.values()]:
            span.end()
        self.calls.clear()
        self.runs.clear()
        self.creators.clear()
        self.requested.clear()
