"""A conversation that survives a restart: two runs in two processes on one SQLite file.

The first run stores a turn in the file and the process ends; a new process opens the same
file, loads the history and goes on with it. The offline model counts the earlier messages it
was given, which shows the history came back. PostgreSQL works the same way, with
``DATABASE_URL=postgresql+asyncpg://...``.

Run: python examples/sessions.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from agent_template import Agent, SessionManager, load_settings
from agent_template.models import Message

SESSION_ID = "trip-planning"


async def chat(database: Path, prompt: str) -> str:
    """One turn of the stored conversation."""
    settings = load_settings(database_url=f"sqlite:///{database}", default_model_provider="test")
    sessions = SessionManager(settings)  # does no I/O until first used
    try:
        await sessions.get_or_create(SESSION_ID, user_id="local")
        history = await sessions.get_context(SESSION_ID)  # the recent messages, oldest first

        async def store(messages: list[Message]) -> None:
            # Called with the prompt first, then with each answer, before any event shows
            # them: a crash mid-run loses nothing that was seen.
            await sessions.add_messages(SESSION_ID, messages)

        async with Agent("You plan trips.", settings=settings) as agent:
            result = await agent.run(prompt, history=history, on_messages=store)
        return result.output
    finally:
        await sessions.close()


async def count_stored(database: Path) -> str:
    sessions = SessionManager(load_settings(database_url=f"sqlite:///{database}"))
    try:
        stored = await sessions.get_messages(SESSION_ID)
    finally:
        await sessions.close()
    return f"{len(stored)} ({', '.join(m.role for m in stored)})"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "sessions.db"
        answer = asyncio.run(chat(database, "I want to visit Lisbon in May."))
        print("first process: ", answer, flush=True)
        # The restart: a new interpreter that knows only the file.
        subprocess.run([sys.executable, __file__, "--resume", str(database)], check=True)
        print("stored messages:", asyncio.run(count_stored(database)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--resume"]:
        print("second process:", asyncio.run(chat(Path(sys.argv[2]), "What did I tell you?")))
    else:
        main()
