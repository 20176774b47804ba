"""Observability of the server over real HTTP: ``/health``, ``/ready``, ``/metrics``,
``/api/v1/stats``, and the optional OpenTelemetry spans of runs, model and tool calls.

Chat turns are started in-process through ``api.chat.start_chat`` (what ``POST
/api/v1/messages`` does), then observed through the HTTP endpoints.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from agent_template.api.app import create_app
from agent_template.api.chat import start_chat
from agent_template.api.deps import LOCAL_USER
from agent_template.api.lifecycle import drain
from agent_template.api.routes.stats import estimate_cost, price_of
from agent_template.api.state import ServerState
from agent_template.api.telemetry import install_telemetry, telemetry_available
from agent_template.models import Task
from tests.conftest import DEFAULT_TEST_DATABASE_URL, service_missing
from tests.helpers.tcp_proxy import TcpProxy
from tests.server_helpers import serve, server_settings
from tests.wire_server import Fault, Reply, WireServer

TURN_TIMEOUT_S = 30.0


async def _turn(state: ServerState, content: str = "hello", user: str = LOCAL_USER) -> Task:
    """One chat turn of ``user``, to its end."""
    started = await start_chat(state, user, content)
    async with asyncio.timeout(TURN_TIMEOUT_S):
        return await state.loop.wait(started.task.task_id)


def _wire_settings(tmp_path: Path, wire: WireServer, **overrides: Any) -> Any:
    return server_settings(
        tmp_path,
        default_model_provider="openai",
        openai_base_url=wire.openai_base_url,
        **overrides,
    )


# --------------------------------------------------------------------------- /health, /ready


async def test_health_and_ready_report_each_check(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["offline"] is True
    assert "offline" in body["model"]
    checks = body["checks"]
    assert checks["database"]["status"] == "ready"
    assert checks["database"]["backend"] == "sqlite"
    assert checks["database"]["error"] is None
    assert checks["cache"]["status"] == "ready"
    assert checks["cache"]["backend"] == "memory"
    providers = checks["providers"]
    assert providers["status"] == "ready"
    assert providers["offline"] is True
    assert "offline test model" in providers["message"]
    assert [(p["provider"], p["circuit"]) for p in providers["providers"]] == [("test", "closed")]


async def test_ready_answers_503_shutting_down_while_the_server_drains(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/ready")).status_code == 200
        await drain(app.state.server, grace=0)
        ready = await client.get("/ready")
        health = await client.get("/health")

    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "shutting_down"
    assert ready.headers["retry-after"]
    assert health.status_code == 200  # alive, though it takes no traffic
    assert health.json() == {"status": "stopping"}


async def test_ready_is_503_when_every_provider_circuit_is_open(
    tmp_path: Path, wire_server: WireServer
) -> None:
    settings = _wire_settings(
        tmp_path,
        wire_server,
        circuit_breaker_threshold=1,
        circuit_breaker_cooldown=600,
        model_max_retries=0,
    )
    wire_server.script(Fault(500))
    app = create_app(settings)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/ready")).status_code == 200
        task = await _turn(app.state.server)
        ready = await client.get("/ready")

    assert task.state.value == "failed"
    assert ready.status_code == 503
    error = ready.json()["error"]
    assert error["code"] == "not_ready"
    assert "providers" in error["message"]
    checks = error["details"]["checks"]
    assert checks["providers"]["status"] == "not_ready"
    assert [p["circuit"] for p in checks["providers"]["providers"]] == ["open"]
    assert checks["database"]["status"] == "ready"
    assert error["details"]["offline"] is False


async def test_ready_reports_a_degraded_cache_when_redis_is_down(tmp_path: Path) -> None:
    # Nothing listens on port 1: Redis refuses, and the local fallback serves the cache.
    settings = server_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/ready")

    assert ready.status_code == 200  # the fallback keeps the server working
    cache = ready.json()["checks"]["cache"]
    assert cache["status"] == "degraded"
    assert cache["primary_available"] is False
    assert cache["backend"] == "redis"


@pytest.fixture
async def pg_database() -> AsyncIterator[tuple[str, str]]:
    """A fresh PostgreSQL database, dropped afterwards: (server URL, database name)."""
    import asyncpg

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(plain, timeout=5)
    except Exception as exc:
        service_missing(f"PostgreSQL at {url}", exc)
    name = f"obs_{uuid.uuid4().hex[:12]}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url, name
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_ready_reports_an_unreachable_database_and_its_return(
    tmp_path: Path, pg_database: tuple[str, str]
) -> None:
    url, name = pg_database
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        port = proxy.port
        settings = server_settings(
            tmp_path, database_url=f"postgresql+asyncpg://{userinfo}@127.0.0.1:{port}/{name}"
        )
        app = create_app(settings)
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/ready")).status_code == 200
            proxy.drop()
            down = await client.get("/ready")
            alive = await client.get("/health")
            proxy.restore()
            for _ in range(100):  # the pool reconnects on the next probe or the one after
                back = await client.get("/ready")
                if back.status_code == 200:
                    break
                await asyncio.sleep(0.05)

    assert down.status_code == 503
    error = down.json()["error"]
    assert error["code"] == "not_ready"
    assert "database" in error["message"]
    database = error["details"]["checks"]["database"]
    assert database["status"] == "not_ready"
    assert database["backend"] == "postgresql"
    assert database["error"] == "storage_unavailable"  # the code only: no host is named
    assert f":{port}" not in down.text
    assert error["details"]["checks"]["cache"]["status"] == "ready"
    assert alive.json() == {"status": "ok"}  # liveness does no I/O
    assert back.status_code == 200


# --------------------------------------------------------------------------- /api/v1/stats


async def test_stats_after_one_chat_turn(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        task = await _turn(app.state.server)
        response = await client.get("/api/v1/stats")

    assert task.state.value == "completed"
    assert response.status_code == 200
    stats = response.json()
    assert stats["offline"] is True
    assert "offline" in stats["model"]
    assert stats["uptime_s"] > 0
    assert stats["shutting_down"] is False
    assert stats["websocket_connections"] == 0
    assert stats["tasks"]["by_state"] == {"completed": 1}
    assert stats["tasks"]["entered_by_state"] == {"pending": 1, "running": 1, "completed": 1}
    assert stats["tasks"]["pending"] == stats["tasks"]["running"] == 0
    assert stats["user"] == {
        "user_id": LOCAL_USER,
        "sessions": 1,
        "sessions_truncated": False,
        "tasks_by_state": {"completed": 1},
    }
    usage = stats["usage"]
    [row] = usage["by_model"]
    assert row["provider"] == "test"
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    assert row["cost_usd"] == 0.0  # the offline model is free
    assert usage["input_tokens"] == row["input_tokens"]
    assert usage["cost_complete"] is True
    assert stats["queues"]["tasks_pending"] == 0
    assert stats["streams"]["chunks_dropped"] == 0
    assert stats["failovers"] == {"total": 0, "by_pair": {}}
    assert [(p["provider"], p["requests"]) for p in stats["providers"]] == [("test", 1)]
    assert stats["cache"]["backend"] == "memory"


async def test_stats_price_the_tokens_of_a_known_model(
    tmp_path: Path, wire_server: WireServer
) -> None:
    settings = _wire_settings(tmp_path, wire_server, default_model="gpt-4o-mini")
    wire_server.script(Reply("Hi.", usage=(1000, 500), model="gpt-4o-mini"))
    app = create_app(settings)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        await _turn(app.state.server)
        stats = (await client.get("/api/v1/stats")).json()

    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens
    assert stats["usage"]["by_model"] == [
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1000,
            "output_tokens": 500,
            "cost_usd": 0.00045,
        }
    ]
    assert stats["usage"]["cost_usd"] == 0.00045
    assert stats["offline"] is False


def test_prices_match_dated_variants_and_unknown_models_cost_null() -> None:
    assert price_of("openai", "gpt-4o-2024-08-06") == price_of("openai", "gpt-4o")
    assert price_of("openai", "gpt-4o-mini-2024-07-18") == price_of("openai", "gpt-4o-mini")
    assert price_of("anthropic", "claude-3-5-sonnet-20241022") == (3.0, 15.0)
    assert price_of("anthropic", "claude-3-5-sonnet-latest") == (3.0, 15.0)
    assert price_of("openai", "openai/gpt-4o") == price_of("openai", "gpt-4o")
    assert price_of("openai", "gpt-4.5-preview") is None  # not gpt-4
    assert price_of("ollama", "llama3.1:8b") is None
    assert price_of("test", None) == (0.0, 0.0)
    assert estimate_cost("openai", "gpt-4o", 1_000_000, 1_000_000) == 12.5
    assert estimate_cost("local", "my-model", 10, 10) is None


async def test_with_auth_required_probes_need_no_token_and_stats_are_per_user(
    tmp_path: Path,
) -> None:
    app = create_app(server_settings(tmp_path, auth_required=True))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        state = app.state.server
        _, alice = await state.tokens.create("alice")
        _, bob = await state.tokens.create("bob")
        task = await _turn(state, user="alice")
        anonymous = await client.get("/api/v1/stats")
        probes = [await client.get(path) for path in ("/health", "/ready", "/metrics")]
        as_alice = await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {alice}"})
        as_bob = await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {bob}"})

    assert anonymous.status_code == 401
    assert [p.status_code for p in probes] == [200, 200, 200]
    assert as_alice.json()["user"]["sessions"] == 1
    assert as_alice.json()["user"]["tasks_by_state"] == {"completed": 1}
    assert as_bob.json()["user"] == {
        "user_id": "bob",
        "sessions": 0,
        "sessions_truncated": False,
        "tasks_by_state": {},
    }
    exposed = probes[1].text + probes[2].text
    for private in ("alice", str(task.session_id), task.task_id):
        assert private not in exposed


# --------------------------------------------------------------------------- /metrics


async def test_metrics_are_prometheus_text_with_the_agent_and_server_figures(
    tmp_path: Path,
) -> None:
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        task = await _turn(app.state.server)
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    def value(name: str, **labels: str) -> float:
        return next(
            s.value
            for f in families.values()
            for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert families["agent_template_tasks"].type == "counter"
    assert value("agent_template_tasks_total", state="completed") == 1
    assert value("agent_template_tokens_total", provider="test", direction="output") > 0
    assert families["agent_template_model_latency_seconds"].type == "histogram"
    assert value("agent_template_model_latency_seconds_count", provider="test") == 1
    assert value("agent_template_model_latency_seconds_bucket", provider="test", le="+Inf") == 1
    assert families["agent_template_model_failovers"].type == "counter"
    assert value("agent_template_websocket_connections") == 0
    assert value("agent_template_uptime_seconds") > 0
    assert value("agent_template_ready") == 1
    assert value("agent_template_offline") == 1
    assert value("agent_template_provider_circuit", provider="test", state="closed") == 1
    assert "process_cpu_seconds" in families
    for private in (LOCAL_USER, str(task.session_id), task.task_id):
        assert private not in response.text


# --------------------------------------------------------------------------- OpenTelemetry


def test_the_telemetry_module_imports_no_opentelemetry() -> None:
    code = (
        "import sys, agent_template, agent_template.api.telemetry; "
        "print([m for m in sys.modules if m.startswith('opentelemetry')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_without_the_otel_extra_nothing_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if not installed
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        assert telemetry_available() is False
        assert install_telemetry(app, app.state.server) is None
        assert getattr(app.state, "telemetry", None) is None
        assert (await _turn(app.state.server)).state.value == "completed"
        assert (await client.get("/health")).status_code == 200


async def test_without_a_tracer_provider_nothing_is_installed(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path))
    async with serve(app):
        assert install_telemetry(app, app.state.server) is None
        assert getattr(app.state, "telemetry", None) is None


def _sdk_provider() -> tuple[Any, Any]:
    pytest.importorskip(
        "opentelemetry.sdk.trace", reason="the otel extra (opentelemetry-sdk) is not installed"
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_runs_model_calls_and_tool_calls_become_genai_spans(tmp_path: Path) -> None:
    provider, exporter = _sdk_provider()
    from opentelemetry.trace import SpanKind

    app = create_app(server_settings(tmp_path))
    async with serve(app):
        state = app.state.server
        uninstall = install_telemetry(app, state, tracer_provider=provider)
        assert uninstall is not None
        with provider.get_tracer("test").start_as_current_span("POST /api/v1/messages") as req:
            task = await _turn(state, "call todo_read {}")
        uninstall()
        await _turn(state)  # not traced any more
    spans = exporter.get_finished_spans()

    assert task.state.value == "completed"
    [run] = [s for s in spans if s.name == "invoke_agent agent-template"]
    assert run.parent is not None
    assert run.parent.span_id == req.get_span_context().span_id  # the request that made it
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.conversation.id"] == task.session_id
    assert run.attributes["agent_template.task.state"] == "completed"
    chats = sorted((s for s in spans if s.name.startswith("chat")), key=lambda s: s.start_time)
    assert [s.name for s in chats] == ["chat offline", "chat offline"]  # tool call, answer
    for chat in chats:
        assert chat.kind is SpanKind.CLIENT
        assert chat.parent is not None
        assert chat.parent.span_id == run.context.span_id
        assert chat.attributes["gen_ai.system"] == "test"
        assert chat.attributes["gen_ai.request.model"] == "offline"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert "gen_ai.usage.output_tokens" in chat.attributes
    [tool] = [s for s in spans if s.name == "execute_tool todo_read"]
    assert tool.parent is not None
    assert tool.parent.span_id == run.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "todo_read"
    assert tool.attributes["gen_ai.tool.call.id"]
    assert run.start_time <= chats[0].start_time <= tool.start_time <= chats[1].start_time
    assert chats[1].end_time <= run.end_time
    assert len([s for s in spans if s.name.startswith("invoke_agent")]) == 1


async def test_a_failed_model_call_marks_its_span_and_run_as_errors(
    tmp_path: Path, wire_server: WireServer
) -> None:
    provider, exporter = _sdk_provider()
    from opentelemetry.trace import StatusCode

    wire_server.script(Fault(400, message="bad request"))
    app = create_app(_wire_settings(tmp_path, wire_server, model_max_retries=0))
    async with serve(app):
        state = app.state.server
        uninstall = install_telemetry(app, state, tracer_provider=provider)
        assert uninstall is not None
        task = await _turn(state)
        uninstall()
    spans = exporter.get_finished_spans()

    assert task.state.value == "failed"
    [chat] = [s for s in spans if s.name.startswith("chat")]
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes["error.type"]
    [run] = [s for s in spans if s.name.startswith("invoke_agent")]
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["agent_template.task.state"] == "failed"
