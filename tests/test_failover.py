"""ModelManager over real providers and real HTTP: retries, failover, circuit breaker, balancing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from agent_template.config import Settings
from agent_template.errors import (
    AllProvidersFailedError,
    BadRequestError,
    ProviderOverloadedError,
    ProviderTimeoutError,
    StreamError,
)
from agent_template.models import (
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    TextDelta,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.model_provider import ModelManager, ModelProvider
from agent_template.services.providers.anthropic import AnthropicProvider
from agent_template.services.providers.openai_compat import OpenAICompatProvider
from tests.wire_server import Drop, Fault, Reply, Stall, WireServer

CHAT = "/v1/chat/completions"  # the OpenAI-compatible providers
MESSAGES = "/v1/messages"  # the Anthropic provider


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_retry_base_delay": 0.01,
        "model_max_retries": 1,
        "circuit_breaker_threshold": 2,
        "circuit_breaker_cooldown": 0.2,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def openai_compat(
    server: WireServer, name: str = "openai", model: str = "gpt-wire"
) -> ModelProvider:
    return OpenAICompatProvider(
        name=name, api_key="k", base_url=server.openai_base_url, model=model, timeout=2
    )


def anthropic(server: WireServer) -> ModelProvider:
    return AnthropicProvider(
        api_key="k", base_url=server.anthropic_base_url, model="claude-wire", timeout=2
    )


@pytest.fixture
async def manager(wire_server: WireServer) -> AsyncIterator[ModelManager]:
    """Primary: OpenAI-compatible; fallback: Anthropic; both on the wire server."""
    m = ModelManager(settings(), providers=[[openai_compat(wire_server)], [anthropic(wire_server)]])
    yield m
    await m.aclose()


def ask(text: str = "hi") -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=text)])


async def test_primary_failure_completes_on_the_fallback(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(500), Fault(500), Reply("from the fallback"))
    response = await manager.complete(ask())
    assert response.message.content == "from the fallback"
    assert response.message.provider == "anthropic"
    assert wire_server.paths() == [CHAT, CHAT, MESSAGES]
    assert manager.failovers == 1


async def test_fallbacks_are_tried_in_order(wire_server: WireServer) -> None:
    chain = [
        [openai_compat(wire_server)],
        [anthropic(wire_server)],
        [openai_compat(wire_server, name="deepseek", model="deepseek-chat")],
    ]
    manager = ModelManager(settings(), providers=chain)
    wire_server.script(Fault(503), Fault(503), Fault(529), Fault(529), Reply("third time lucky"))
    response = await manager.complete(ask())
    await manager.aclose()
    assert (response.message.provider, response.message.content) == ("deepseek", "third time lucky")
    assert wire_server.paths() == [CHAT, CHAT, MESSAGES, MESSAGES, CHAT]
    assert wire_server.requests[-1].body["model"] == "deepseek-chat"


async def test_retryable_error_is_retried_on_the_same_provider_first(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(503), Reply("second try"))
    response = await manager.complete(ask())
    assert (response.message.provider, response.message.content) == ("openai", "second try")
    assert wire_server.paths() == [CHAT, CHAT]
    assert manager.failovers == 0


async def test_authentication_error_fails_over_without_retrying(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(401), Reply("fallback"))
    response = await manager.complete(ask())
    assert response.message.provider == "anthropic"
    assert wire_server.paths() == [CHAT, MESSAGES]


async def test_retry_after_is_honoured(manager: ModelManager, wire_server: WireServer) -> None:
    wire_server.script(Fault(429, retry_after=0.2), Reply("after the pause"))
    t0 = time.perf_counter()
    response = await manager.complete(ask())
    assert time.perf_counter() - t0 >= 0.2
    assert response.message.content == "after the pause"
    assert wire_server.paths() == [CHAT, CHAT]


async def test_retry_after_longer_than_the_max_delay_fails_over_at_once(
    wire_server: WireServer,
) -> None:
    manager = ModelManager(
        settings(model_retry_max_delay=1.0),
        providers=[[openai_compat(wire_server)], [anthropic(wire_server)]],
    )
    wire_server.script(Fault(429, retry_after=30), Reply("fallback"))
    t0 = time.perf_counter()
    response = await manager.complete(ask())
    await manager.aclose()
    assert time.perf_counter() - t0 < 1.0
    assert response.message.provider == "anthropic"
    assert wire_server.paths() == [CHAT, MESSAGES]


async def test_drop_before_any_event_fails_over(
    manager: ModelManager, wire_server: WireServer
) -> None:
    # Drop(1) sends only the role chunk, which yields no event
    wire_server.script(Drop(1), Drop(1), Reply("fallback answer"))
    events = [event async for event in manager.stream(ask())]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "fallback answer"
    assert wire_server.paths() == [CHAT, CHAT, MESSAGES]


async def test_drop_after_text_was_yielded_raises_without_repeating_it(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Drop(3, Reply("partial answer", text_chunk=4)), Reply("must not be used"))
    events: list[ModelEvent] = []
    with pytest.raises(StreamError):
        async for event in manager.stream(ask()):
            events.append(event)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["part", "ial "]
    assert not any(isinstance(e, ResponseFinished) for e in events)
    assert wire_server.paths() == [CHAT]
    assert wire_server.pending == 1


async def test_circuit_breaker_opens_and_traffic_returns_after_the_cooldown(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(500), Fault(500), Reply("fallback 1"))
    await manager.complete(ask())
    assert manager.status()[0]["circuit"] == "open"

    wire_server.clear()
    wire_server.script(Reply("fallback 2"))
    response = await manager.complete(ask())
    assert response.message.provider == "anthropic"
    assert wire_server.paths() == [MESSAGES]  # the primary was not called

    await asyncio.sleep(0.25)  # the cooldown is a span of time; nothing to wait on instead
    wire_server.clear()
    wire_server.script(Reply("primary is back"))
    response = await manager.complete(ask())
    assert (response.message.provider, response.message.content) == ("openai", "primary is back")
    assert wire_server.paths() == [CHAT]
    assert manager.status()[0]["circuit"] == "closed"


async def test_half_open_breaker_lets_a_single_trial_through(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(500), Fault(500), Reply("fallback"))
    await manager.complete(ask())
    await asyncio.sleep(0.25)
    wire_server.clear()
    wire_server.script(Stall(0.3, then=Reply("trial ok")), Reply("meanwhile"))

    trial = asyncio.create_task(manager.complete(ask()))
    for _ in range(200):  # until the trial request has reached the server
        if wire_server.requests:
            break
        await asyncio.sleep(0.01)
    other = await manager.complete(ask())
    first = await trial

    assert (first.message.provider, first.message.content) == ("openai", "trial ok")
    assert (other.message.provider, other.message.content) == ("anthropic", "meanwhile")
    assert wire_server.paths() == [CHAT, MESSAGES]


async def test_all_providers_failing_raises_with_every_error(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(500), Fault(502), Fault(529), Fault(529))
    with pytest.raises(AllProvidersFailedError) as caught:
        await manager.complete(ask())
    errors = caught.value.errors
    assert [e.provider for e in errors] == ["openai", "openai", "anthropic", "anthropic"]
    assert all(isinstance(e, ProviderOverloadedError) for e in errors)
    assert caught.value.retryable
    assert "FALLBACK_PROVIDERS" in str(caught.value)


async def test_bad_request_from_the_only_provider_is_raised_as_is(wire_server: WireServer) -> None:
    manager = ModelManager(settings(), providers=[[openai_compat(wire_server)]])
    broken = ModelRequest(
        messages=[
            UserMessage(content="hi"),
            ToolResultMessage(tool_call_id="call_ghost", name="x", content="?"),
        ]
    )
    for _ in range(3):  # more than the breaker threshold: a bad request says nothing of health
        with pytest.raises(BadRequestError):
            await manager.complete(broken)
    await manager.aclose()
    assert wire_server.paths() == [CHAT] * 3
    assert manager.status()[0]["circuit"] == "closed"


async def test_status_shows_requests_and_errors_per_provider(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(Fault(500), Reply("ok"))
    await manager.complete(ask())
    primary, fallback = manager.status()
    assert (primary["provider"], primary["role"]) == ("openai", "primary")
    assert (primary["requests"], primary["errors"], primary["successes"]) == (2, 1, 1)
    assert "ProviderOverloadedError" in primary["last_error"]
    assert primary["circuit"] == "closed"
    assert (fallback["provider"], fallback["role"]) == ("anthropic", "fallback 1")
    assert (fallback["requests"], fallback["errors"]) == (0, 0)


async def test_round_robin_alternates_between_equivalent_providers(
    wire_server: WireServer,
) -> None:
    first = openai_compat(wire_server, model="model-a")
    second = openai_compat(wire_server, model="model-b")
    first.label, second.label = "openai#1", "openai#2"
    manager = ModelManager(settings(load_balancing="round_robin"), providers=[[first, second]])
    for _ in range(4):
        await manager.complete(ask())
    await manager.aclose()
    models = [r.body["model"] for r in wire_server.requests]
    assert sorted(models) == ["model-a", "model-a", "model-b", "model-b"]
    assert all(a != b for a, b in itertools.pairwise(models))
    assert [row["requests"] for row in manager.status()] == [2, 2]


async def test_round_robin_alternates_in_each_pool_of_a_chain(wire_server: WireServer) -> None:
    # Each pool keeps its own position: a shared counter advanced once per pool per request
    # would start the primary pool at the same member every time.
    pools = [
        [
            openai_compat(wire_server, model="primary-a"),
            openai_compat(wire_server, model="primary-b"),
        ],
        [
            openai_compat(wire_server, model="backup-a"),
            openai_compat(wire_server, model="backup-b"),
        ],
    ]
    manager = ModelManager(settings(load_balancing="round_robin"), providers=pools)
    for _ in range(4):
        await manager.complete(ask())
    await manager.aclose()
    models = [r.body["model"] for r in wire_server.requests]
    assert sorted(models) == ["primary-a", "primary-a", "primary-b", "primary-b"]
    assert all(a != b for a, b in itertools.pairwise(models))


# --------------------------------------------------------------------------- deadlines


async def test_a_stalled_provider_fails_over_without_being_retried(wire_server: WireServer) -> None:
    stalling = OpenAICompatProvider(
        name="openai", api_key="k", base_url=wire_server.openai_base_url, model="m", timeout=0.3
    )
    manager = ModelManager(
        settings(model_max_retries=3), providers=[[stalling], [anthropic(wire_server)]]
    )
    wire_server.script(Stall(2.0), Reply("from the fallback"))
    response = await manager.complete(ask())
    await manager.aclose()
    assert response.message.provider == "anthropic"
    assert wire_server.paths() == [CHAT, MESSAGES]  # not CHAT four times


async def test_a_slow_start_past_the_attempt_deadline_fails_over(wire_server: WireServer) -> None:
    # Each chunk comes well within the read timeout, but the first text only after 0.6 s.
    manager = ModelManager(
        settings(model_attempt_timeout=0.2),
        providers=[[openai_compat(wire_server)], [anthropic(wire_server)]],
    )
    wire_server.script(Reply("trickle", text_chunk=1, delay=0.3), Reply("prompt answer"))
    response = await manager.complete(ask())
    await manager.aclose()
    assert (response.message.provider, response.message.text) == ("anthropic", "prompt answer")
    [first] = [e for e in manager.status() if e["provider"] == "openai"]
    assert "MODEL_ATTEMPT_TIMEOUT" in first["last_error"]


async def test_a_trickling_stream_is_cut_at_the_attempt_deadline(
    manager: ModelManager, wire_server: WireServer
) -> None:
    manager.attempt_timeout = 1.0  # the first text comes at 0.2 s, the whole answer at 2.7 s
    wire_server.script(Reply("a slow answer that goes on", text_chunk=1, delay=0.1))
    events: list[ModelEvent] = []
    with pytest.raises(ProviderTimeoutError) as caught:
        async for event in manager.stream(ask()):
            events.append(event)
    assert caught.value.setting == "MODEL_ATTEMPT_TIMEOUT" and caught.value.timeout == 1.0
    assert "MODEL_ATTEMPT_TIMEOUT=1s" in str(caught.value)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text and "a slow answer that goes on".startswith(text) and len(text) < 26
    assert wire_server.paths() == [CHAT]  # text was shown: raised, not sent elsewhere


async def test_a_stream_that_only_keeps_alive_is_cut_at_the_attempt_deadline(
    wire_server: WireServer,
) -> None:
    # Comments every 0.1 s keep the 60 s read timeout from ever firing, and bring no event.
    manager = ModelManager(
        settings(model_attempt_timeout=0.5),
        providers=[[openai_compat(wire_server)], [anthropic(wire_server)]],
    )
    wire_server.script(Reply("late", keepalive=100, delay=0.1), Reply("prompt answer"))
    async with asyncio.timeout(5):  # not the ten seconds the keep-alives would take
        response = await manager.complete(ask())
    await manager.aclose()
    assert (response.message.provider, response.message.text) == ("anthropic", "prompt answer")
    [first] = [e for e in manager.status() if e["provider"] == "openai"]
    assert "MODEL_ATTEMPT_TIMEOUT" in first["last_error"]


async def test_the_call_deadline_caps_retries_and_backoff(wire_server: WireServer) -> None:
    manager = ModelManager(
        settings(
            model_max_retries=20,
            model_retry_base_delay=0.2,
            model_retry_max_delay=0.2,
            model_call_timeout=0.5,
            circuit_breaker_threshold=100,
        ),
        providers=[[openai_compat(wire_server)]],
    )
    wire_server.script(*[Fault(503)] * 21)
    with pytest.raises(AllProvidersFailedError) as caught:
        await manager.complete(ask())
    await manager.aclose()
    last = caught.value.errors[-1]
    assert isinstance(last, ProviderTimeoutError) and last.setting == "MODEL_CALL_TIMEOUT"
    assert "MODEL_CALL_TIMEOUT=0.5s" in str(caught.value)
    assert wire_server.pending > 0  # the retries stopped when the time was up


def test_deadline_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        settings(model_attempt_timeout=0)
    with pytest.raises(ValidationError):
        settings(model_call_timeout=-1)


# --------------------------------------------------------------------------- visibility


async def test_a_failover_is_logged_and_counted(
    manager: ModelManager, wire_server: WireServer, caplog: pytest.LogCaptureFixture
) -> None:
    wire_server.script(
        Fault(500, message="primary down"), Fault(500, message="primary down"), Reply("ok")
    )
    with caplog.at_level(logging.WARNING, logger="agent_template.providers"):
        response = await manager.complete(ask())
    assert response.message.provider == "anthropic"
    [record] = [r for r in caplog.records if r.name == "agent_template.providers"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "model call failed over: openai failed (provider_unavailable, HTTP 500: primary down); "
        "anthropic answered"
    )
    assert manager.failovers == 1
    assert manager.failover_counts == {"openai -> anthropic": 1}
    primary, fallback = manager.status()
    assert (primary["failed_over_to"], fallback["failed_over_to"]) == ({"anthropic": 1}, {})


async def test_a_retry_that_succeeds_is_not_logged_as_a_failover(
    manager: ModelManager, wire_server: WireServer, caplog: pytest.LogCaptureFixture
) -> None:
    wire_server.script(Fault(503), Reply("second try"))
    with caplog.at_level(logging.WARNING, logger="agent_template.providers"):
        await manager.complete(ask())
    assert not [r for r in caplog.records if r.name == "agent_template.providers"]
    assert manager.failover_counts == {}


async def test_all_failed_states_each_providers_cause_once(
    manager: ModelManager, wire_server: WireServer
) -> None:
    wire_server.script(
        Fault(500, message="primary down"),
        Fault(503, message="primary still down"),
        Fault(529, message="fallback overloaded"),
        Fault(529, message="fallback overloaded"),
    )
    with pytest.raises(AllProvidersFailedError) as caught:
        await manager.complete(ask())
    assert str(caught.value) == (
        "Every provider failed: 1. openai (HTTP 503): primary still down; "
        "2. anthropic (HTTP 529): fallback overloaded. "
        "Retry later, or add providers to FALLBACK_PROVIDERS."
    )
    assert [e.provider for e in caught.value.causes] == ["openai", "anthropic"]
