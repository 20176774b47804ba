"""Function tools with typed arguments.

``@tool`` builds each tool's JSON schema from its type hints and its Google-style docstring.
The offline model calls a tool when the prompt reads ``call NAME {json arguments}``, so this
runs without an API key; with a real model, ask in plain words instead.

Run: python examples/tools.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from agent_template import Agent, ToolContext, tool


@tool
def convert(value: float, unit: Literal["km", "mi"]) -> str:
    """Convert a distance between kilometres and miles.

    Args:
        value: The distance to convert.
        unit: The unit ``value`` is in.
    """
    if unit == "km":
        return f"{value} km = {value / 1.609344:.2f} mi"
    return f"{value} mi = {value * 1.609344:.2f} km"


@tool(timeout=5)
async def greet(name: str, ctx: ToolContext) -> str:
    """Greet someone by name.

    Args:
        name: Who to greet.
    """
    # A parameter typed ToolContext is filled in by the agent, not by the model: it carries
    # the call's id, session, task, user and the agent's ``deps``.
    return f"{ctx.deps['greeting']}, {name}!"


async def main() -> None:
    # model="test" is the offline model; leave it out to use the configured provider.
    agent = Agent(
        "You convert units.", tools=[convert, greet], model="test", deps={"greeting": "Hello"}
    )
    async with agent:
        # What the model is offered: a name, a description and a JSON schema per tool.
        for definition in agent.tools.definitions():
            print(f"{definition.name}: {json.dumps(definition.parameters['properties'])}")

        result = await agent.run('call convert {"value": 42.195, "unit": "km"}')
        print(result.output)

        result = await agent.run('call greet {"name": "Ada"}')
        print(result.output)

        # Arguments that do not match the schema go back to the model as an error result it
        # can correct, rather than raising here.
        result = await agent.run('call convert {"value": "far", "unit": "parsec"}')
        print(result.output)


if __name__ == "__main__":
    asyncio.run(main())
