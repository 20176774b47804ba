"""Subagents: the agent hands a self-contained task to a typed helper agent.

The ``subagent`` tool starts a child run with its own instructions and a subset of the
parent's tools, in a fresh context; only its final answer comes back as the tool's result, and
its events arrive nested in the parent's stream. The types come from ``SUBAGENTS_CONFIG``; the
offline model calls a tool when the message reads ``call NAME {json arguments}``: here the
parent calls ``subagent``, and the child, given that text as its task, calls ``word_count``.

Run: python examples/subagents.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from agent_template import AgentLoop, StreamGenerator, load_settings, tool
from agent_template.models import SubagentEvent, TextDelta, ToolResultEvent

SUBAGENT_TYPES = {
    "subagents": {
        "counter": {
            "description": "Counts words in texts it is given and reports the numbers.",
            "instructions": "Count the words of the text in the task with word_count; reply "
            "with the number only.",
            "tools": ["word_count"],  # of the parent's tools; never more
        }
    }
}


@tool
def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: The text to count.
    """
    return len(text.split())


@tool
def publish(text: str) -> str:
    """Publish a text (the subagent is not given this tool).

    Args:
        text: What to publish.
    """
    return "published"


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "subagents.json"
        config.write_text(json.dumps(SUBAGENT_TYPES))
        settings = load_settings(
            database_url=f"sqlite:///{Path(folder) / 'agent.db'}",
            default_model_provider="test",  # the offline model, for parent and child alike
            subagents_config=config,
        )
        loop = AgentLoop(
            settings, tools=[word_count, publish], builtin_tools=False, todo_tools=False
        )
        streams = StreamGenerator()
        try:
            child_task = 'call word_count {"text": "the quick brown fox"}'
            delegation = {"type": "counter", "task": child_task}
            task = await loop.create_task(
                {"type": "chat", "message": f"call subagent {json.dumps(delegation)}"}
            )
            async for chunk in streams.process_stream(task.task_id, task):
                event = chunk.event
                if isinstance(event, SubagentEvent):
                    # The child's own events, as JSON; a grandchild's would be nested again.
                    nested = event.event
                    if nested["type"] == "tool_result":
                        print(f"  [{event.agent}] {nested['name']} returned {nested['content']}")
                    elif nested["type"] == "done":
                        print(f"  [{event.agent}] {nested['status']}: {nested['output']}")
                elif isinstance(event, ToolResultEvent):
                    print(f"<- {event.name}: {event.content}")
                elif isinstance(event, TextDelta):
                    print(event.text, end="", flush=True)
            print()
            (child,) = loop.list_tasks(parent_id=task.task_id)
            print(f"child task {child.type}: {child.state.value}")
        finally:
            await loop.aclose()


if __name__ == "__main__":
    asyncio.run(main())
