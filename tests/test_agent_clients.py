"""One Agent used again and again: its providers' SDK clients are closed and rebuilt, over HTTP."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from agent_template import Agent
from agent_template.services.model_provider import ModelProvider
from agent_template.services.providers.anthropic import AnthropicProvider
from agent_template.services.providers.openai_compat import OpenAICompatProvider
from tests.wire_server import Reply, WireServer


def openai_provider(server: WireServer) -> ModelProvider:
    return OpenAICompatProvider(api_key="k", base_url=server.openai_base_url, model="gpt-wire")


def anthropic_provider(server: WireServer) -> ModelProvider:
    return AnthropicProvider(api_key="k", base_url=server.anthropic_base_url, model="claude-wire")


PROVIDERS = pytest.mark.parametrize(
    "make", [openai_provider, anthropic_provider], ids=["openai", "anthropic"]
)


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ``__del__`` methods raised (a ResourceWarning turned into an error lands here)."""
    seen: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()  # what earlier tests left behind is not this test's doing

    def hook(info: Any) -> None:
        seen.append(f"{info.exc_type.__name__}: {info.exc_value}")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


@PROVIDERS
def test_one_agent_answers_run_sync_again_and_again(
    wire_server: WireServer, make: Callable[[WireServer], ModelProvider], unraisable: list[str]
) -> None:
    agent = Agent("Be brief.", model=make(wire_server))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        outputs = [agent.run_sync(f"call {i}").output for i in range(4)]
        gc.collect()
    assert outputs == [f"echo: call {i}" for i in range(4)]
    assert unraisable == []  # every client was closed on the loop it belonged to


@PROVIDERS
async def test_async_with_closes_the_clients(
    wire_server: WireServer, make: Callable[[WireServer], ModelProvider], unraisable: list[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        async with Agent("Be brief.", model=make(wire_server)) as agent:
            first = await agent.run("one")
        async with agent:  # still usable after closing: new connections are opened
            second = await agent.run("two")
        del agent
        gc.collect()
    assert (first.output, second.output) == ("echo: one", "echo: two")
    assert unraisable == []


def test_a_client_made_on_an_ended_loop_is_rebuilt(wire_server: WireServer) -> None:
    """Code that runs each call in its own ``asyncio.run`` and never closes the agent."""
    agent = Agent("Be brief.", model=openai_provider(wire_server))
    outputs = [asyncio.run(agent.run(f"call {i}")).output for i in range(3)]
    assert outputs == ["echo: call 0", "echo: call 1", "echo: call 2"]


async def test_run_sync_inside_an_event_loop_says_to_await_run(wire_server: WireServer) -> None:
    agent = Agent("Be brief.", model=openai_provider(wire_server))
    with pytest.raises(RuntimeError, match=r"await agent\.run\(\.\.\.\)"):
        agent.run_sync("hi")
    assert wire_server.requests == []


async def test_an_agents_model_settings_reach_every_request(wire_server: WireServer) -> None:
    from agent_template.config import Settings
    from agent_template.errors import ConfigurationError

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, openai_base_url=wire_server.openai_base_url, openai_api_key="k"
    )
    wire_server.script(Reply("one"), Reply("two"))
    async with Agent(
        model="openai", settings=settings, model_settings={"seed": 7, "temperature": 0.1}
    ) as agent:
        await agent.run("first")
        await agent.run("second")
    bodies = [r.body for r in wire_server.requests]
    assert [(b["seed"], b["temperature"]) for b in bodies] == [(7, 0.1), (7, 0.1)]
    with pytest.raises(ConfigurationError, match="Unknown model setting"):
        Agent(model_settings={"sed": 7})
