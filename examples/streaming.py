"""Stream the events of a run: text as it arrives, tool calls and results, usage, the end.

Every consumer (this loop, the server's WebSocket and SSE, the terminal client) reads the same
typed events. Breaking out of the loop, or cancelling the task that runs it, cancels the run.

Run: python examples/streaming.py
"""

from __future__ import annotations

import asyncio

from agent_template import Agent, tool
from agent_template.models import (
    DoneEvent,
    TextDelta,
    ToolCallStarted,
    ToolResultEvent,
    UsageEvent,
)


@tool
def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: The text to count.
    """
    return len(text.split())


async def main() -> None:
    # model="test" is the offline model; leave it out to use the configured provider.
    async with Agent("Be brief.", tools=[word_count], model="test") as agent:
        deltas = 0
        async for event in agent.run_stream("Name three rivers."):
            if isinstance(event, TextDelta):
                deltas += 1
                print(event.text, end="", flush=True)
        print(f"\n({deltas} text deltas)")

        run = agent.run_stream('call word_count {"text": "the Nile, the Amazon and the Danube"}')
        async for event in run:
            match event:
                case ToolCallStarted():
                    print(f"-> calling {event.name}")
                case ToolResultEvent():
                    print(f"<- {event.name} returned {event.content} in {event.duration_ms:.1f} ms")
                case TextDelta():
                    print(event.text, end="", flush=True)
                case UsageEvent():
                    pass  # one per model call; the done event carries the total
                case DoneEvent():
                    print(f"\ndone: {event.status}, {event.turns} model turns, {event.usage}")
        # After the stream, the run's result holds the same outcome.
        print("result:", run.result.status, repr(run.result.output))


if __name__ == "__main__":
    asyncio.run(main())
