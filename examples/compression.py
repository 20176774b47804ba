"""Context compaction: a long conversation is summarised to fit the model's context window.

``ContextCompressor`` looks at every request before it is sent. Over ``threshold`` x
``max_context_length`` tokens it drops old tool outputs, then has the model summarise the older
turns into one message, then truncates if that is still too much. The caller's history is never
changed; only the request is. A tiny window here makes it happen at once; the offline model
writes a deterministic summary.

Run: python examples/compression.py
"""

from __future__ import annotations

import asyncio

from agent_template import Agent
from agent_template.models import AssistantMessage, Message, UserMessage
from agent_template.services.compressor import ContextCompressor
from agent_template.services.providers.offline import TestProvider

MAX_CONTEXT_TOKENS = 1000  # far below a real model's, so that a few turns overflow it
CITIES = ("Lisbon", "Porto", "Seville", "Granada", "Valencia", "Bilbao", "Madrid", "Toledo")


def long_history() -> list[Message]:
    history: list[Message] = []
    for city in CITIES:
        history.append(UserMessage(content=f"Tell me about {city}, please."))
        history.append(AssistantMessage(content=f"{city} is lovely in spring. " * 30))
    return history


async def main() -> None:
    model = TestProvider()  # the offline model, which also writes the summaries
    compressor = ContextCompressor(
        max_context_length=MAX_CONTEXT_TOKENS, threshold=0.8, model=model, keep_recent=2
    )
    history = long_history()
    async with Agent("You are a travel guide.", model=model, compressor=compressor) as agent:
        result = await agent.run("Which city did we start with?", history=history)

    compaction = compressor.compactions[-1]
    print(
        f"compacted with {compaction.strategy}: {compaction.tokens_before} -> "
        f"{compaction.tokens_after} tokens (limit {compaction.limit})"
    )
    print(f"summarised {compaction.summarized_messages} of {len(history)} earlier messages")
    print("summary:", compaction.summary)
    sent = model.requests[-1].messages  # what the model was finally asked with
    print(f"the request held {len(sent)} messages instead of {len(history) + 2}")
    print("answer:", result.output)


if __name__ == "__main__":
    asyncio.run(main())
