"""Soak: does a long-running AgentLoop keep its memory flat? Run: python benchmarks/soak.py

10,000 short chat tasks (a model streaming 20 one-token deltas) go through one AgentLoop, ten at
a time, while 50 stream consumers keep joining recent tasks' streams and leaving: half read to
the end, half leave after a few chunks. Prints the resident set size after the first 1,000
tasks and after all of them (collected garbage first), one JSON object.

A second line does the same with every task in one of 100 sessions stored in a SQLite file (so
session lines, run leases and task records are soaked too): 3,000 tasks, measured after the
first 300. Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agent_template import AgentLoop, SessionManager  # noqa: E402
from agent_template.config import Settings  # noqa: E402
from agent_template.core.bus import InProcessEventBus  # noqa: E402
from agent_template.errors import StreamNotFoundError  # noqa: E402
from agent_template.models import (  # noqa: E402
    AssistantMessage,
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    TextDelta,
)
from agent_template.runtime import stream_store  # noqa: E402
from agent_template.services.model_provider import ModelProvider  # noqa: E402
from agent_template.services.storage import MemorySessionStore, SQLStore  # noqa: E402

TASKS = 10_000
CHECKPOINT = 1_000
CONSUMERS = 50
IN_FLIGHT = 10
TOKENS = 20
JOIN_PAUSE_S = 0.01


class ShortModel(ModelProvider):
    """Streams TOKENS one-token deltas, yielding to the loop between them like a network."""

    name = "soak"

    def __init__(self) -> None:
        super().__init__(model="short")

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        for i in range(TOKENS):
            yield TextDelta(text=f"t{i} ")
            if i % 5 == 4:
                await asyncio.sleep(0)
        yield ResponseFinished(finish_reason="stop", message=AssistantMessage(content="done"))


def rss_mb() -> float:
    """The current resident set size (Linux), else the peak."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def soak(
    tasks: int = TASKS, checkpoint: int = CHECKPOINT, sessions: int = 0
) -> dict[str, float]:
    settings = Settings(_env_file=None, context_compression=False)  # type: ignore[call-arg]
    folder = tempfile.mkdtemp(prefix="soak-")
    if sessions:
        manager = SessionManager(store=SQLStore(f"sqlite:///{folder}/soak.db"))
        for i in range(sessions):
            await manager.create_session("soak", session_id=f"s{i}")
    else:
        manager = SessionManager(store=MemorySessionStore())
    loop = AgentLoop(
        settings,
        model=ShortModel(),
        session_manager=manager,
        bus=InProcessEventBus(),
        streams=stream_store(settings),
        todo_tools=False,
        max_concurrent_tasks=IN_FLIGHT,
    )
    recent: deque[str] = deque(maxlen=200)
    finished = False
    joins = 0
    rng = random.Random(7)

    async def consumer(index: int) -> None:
        nonlocal joins
        while not finished:
            if not recent:
                await asyncio.sleep(0.001)
                continue
            try:
                reader = loop.subscribe(rng.choice(recent))
            except StreamNotFoundError:  # released already: pick another
                await asyncio.sleep(0)
                continue
            joins += 1
            leave_after = 3 if index % 2 else None
            seen = 0
            async for _ in reader:
                seen += 1
                if leave_after is not None and seen >= leave_after:
                    break
            reader.close()
            # A pause between joins, as a client has: re-reading a finished stream costs no
            # wait at all, so without one a few consumers would keep the loop to themselves.
            await asyncio.sleep(JOIN_PAUSE_S)

    readers = [asyncio.create_task(consumer(i)) for i in range(CONSUMERS)]
    at_checkpoint = 0.0
    t0 = time.perf_counter()
    in_flight: deque[str] = deque()
    for n in range(1, tasks + 1):
        spec = {"type": "chat", "message": "hi"}
        if sessions:
            spec |= {"session_id": f"s{n % sessions}", "user_id": "soak"}
        task = await loop.create_task(spec)
        recent.append(task.task_id)
        in_flight.append(task.task_id)
        if len(in_flight) >= IN_FLIGHT:
            await loop.wait(in_flight.popleft())
        if n == checkpoint:
            await loop.run()
            gc.collect()
            at_checkpoint = rss_mb()
    await loop.run()
    elapsed = time.perf_counter() - t0
    finished = True
    await asyncio.gather(*readers)
    await loop.stop()
    await manager.close()
    shutil.rmtree(folder, ignore_errors=True)
    gc.collect()
    after = rss_mb()
    return {
        f"rss_after_first_{checkpoint}_mb": round(at_checkpoint, 1),
        "rss_after_soak_mb": round(after, 1),
        "growth_mb": round(after - at_checkpoint, 1),
        "tasks": tasks,
        "sessions": sessions,
        "consumer_joins": joins,
        "tasks_per_s": round(tasks / elapsed),
        "streams_kept": loop.streams.stats()["streams"],
    }


def main() -> None:
    print(json.dumps({"workload": "soak", **asyncio.run(soak())}), flush=True)
    stored = asyncio.run(soak(3_000, 300, sessions=100))
    print(json.dumps({"workload": "soak_sessions", **stored}), flush=True)


if __name__ == "__main__":
    main()
