"""Failover: the primary provider is down, so the fallback answers.

The primary here is the OpenAI-compatible ``local`` provider pointed at a port where nothing
listens: a real connection error, the kind a provider outage produces. ``FALLBACK_PROVIDERS``
names the next provider to try; here it is the offline ``test`` model. In ``.env`` the same
chain reads::

    DEFAULT_MODEL_PROVIDER=local
    LOCAL_BASE_URL=http://127.0.0.1:PORT/v1
    FALLBACK_PROVIDERS=test

Run: python examples/failover.py
"""

from __future__ import annotations

import asyncio
import logging
import socket

from agent_template import Agent, ModelManager, load_settings


def closed_port() -> int:
    """A loopback port with no server behind it (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def main() -> None:
    # Each failover is logged at WARNING with the provider's error.
    logging.basicConfig(level=logging.WARNING, format="log: %(message)s")
    settings = load_settings(
        default_model_provider="local",
        local_base_url=f"http://127.0.0.1:{closed_port()}/v1",
        fallback_providers="test",
        model_max_retries=1,  # one retry of the primary before moving on
        model_retry_base_delay=0.05,
    )
    manager = ModelManager(settings)
    async with Agent("Be brief.", model=manager) as agent:
        result = await agent.run("Are you there?")
    print("answer:", result.output)
    print("failovers:", manager.failover_counts)


if __name__ == "__main__":
    asyncio.run(main())
