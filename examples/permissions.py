"""Permissions: a policy that denies a tool, checked before every call.

Rules allow, ask about (a person approves) or deny calls by tool name, tool source or shell
command; deny beats ask beats allow. The first part asks the policy directly; the second runs
an agent whose ``PERMISSIONS_CONFIG`` denies a tool, and shows the model being told which
rule refused its call (the tool never runs).

Run: python examples/permissions.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from agent_template import AgentLoop, load_settings, tool
from agent_template.services.permissions import PermissionPolicy

RULES = {
    "default": "ask",
    "allow": ["@function", "read_file", "shell(git status *)", "shell(pytest *)"],
    "deny": ["delete_notes", "shell(git push *)"],
}

deleted: list[str] = []


@tool
def delete_notes(folder: str) -> str:
    """Delete every note in a folder.

    Args:
        folder: The folder to empty.
    """
    deleted.append(folder)
    return f"deleted the notes in {folder}"


def show_decisions() -> None:
    policy = PermissionPolicy(RULES)
    for tool_name, arguments in [
        ("read_file", {"path": "README.md"}),
        ("shell", {"command": "git status && pytest -q"}),
        ("shell", {"command": "pytest -q && git push origin main"}),
        ("shell", {"command": "npm test"}),
    ]:
        decision = policy.decide(tool_name, arguments, source="builtin")
        print(f"{decision.action:5} {tool_name} {arguments}: {decision.reason}")


async def run_agent() -> None:
    with tempfile.TemporaryDirectory() as folder:
        rules = Path(folder) / "permissions.json"
        rules.write_text(json.dumps(RULES))
        settings = load_settings(
            database_url=f"sqlite:///{Path(folder) / 'agent.db'}",
            default_model_provider="test",  # the offline model calls tools on "call NAME {...}"
            permissions_config=rules,
        )
        loop = AgentLoop(settings, tools=[delete_notes], builtin_tools=False, todo_tools=False)
        try:
            task = await loop.create_task(
                {"type": "chat", "message": 'call delete_notes {"folder": "notes"}'}
            )
            finished = await loop.wait(task.task_id)
            print("agent:", finished.result)
        finally:
            await loop.aclose()
    print("the tool ran:", bool(deleted))


if __name__ == "__main__":
    show_decisions()
    asyncio.run(run_agent())
