"""Child process of the crash test: append messages forever, acknowledging each commit.

Usage: python -m tests.helpers.append_forever DATABASE_URL SESSION_ID START
Prints the sequence number of every message after its transaction committed.
"""

from __future__ import annotations

import asyncio
import sys

from agent_template.models import AssistantMessage, UserMessage
from agent_template.services.storage import SQLStore


async def main(url: str, session_id: str, start: int) -> None:
    store = SQLStore(url, migrate=False)  # the parent created the schema
    await store.open()
    n = start
    while True:
        # alternate small and large (compressed) bodies, and single and batched appends
        body = f"message {n} " + ("x" * 3000 if n % 3 == 0 else "")
        batch = [UserMessage(content=body)]
        if n % 4 == 0:
            batch.append(AssistantMessage(content=f"answer {n}"))
        seqs = await store.append_messages(session_id, batch)
        for seq in seqs:
            sys.stdout.write(f"{seq}\n")
        sys.stdout.flush()
        n += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
