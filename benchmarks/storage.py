"""Storage figures, one JSON object per line. Run: python benchmarks/storage.py

  commit    messages committed per second, one transaction per message (SQLite, PostgreSQL)
  open      time to open a 10,000-message session and load its recent context window
  lz4       compression ratio and throughput on realistic transcripts with tool output
PostgreSQL is used when TEST_DATABASE_URL (or the local default) is reachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agent_template.models import (  # noqa: E402
    AssistantMessage,
    Session,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agent_template.services.session_manager import SessionManager  # noqa: E402
from agent_template.services.storage import SQLStore  # noqa: E402
from agent_template.services.storage.codec import decode, encode  # noqa: E402

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
COMMITS = 500
SESSION_SIZE = 10_000


def emit(**figures: Any) -> None:
    print(json.dumps(figures), flush=True)


def transcript() -> list[Any]:
    """A coding-agent transcript: questions, source files and test logs as tool output."""
    sources = sorted((ROOT / "src" / "agent_template").rglob("*.py"))
    messages: list[Any] = []
    for i, path in enumerate(sources):
        call = ToolCall(id=f"c{i}", name="read_file", arguments=json.dumps({"path": str(path)}))
        messages.append(UserMessage(content=f"What does {path.name} do? Check its tests."))
        messages.append(AssistantMessage(content="Let me read it.", tool_calls=[call]))
        messages.append(
            ToolResultMessage(tool_call_id=call.id, name="read_file", content=path.read_text())
        )
        log = "\n".join(
            f"tests/test_{path.stem}.py::test_case_{n} PASSED [{n}%]" for n in range(40)
        )
        messages.append(AssistantMessage(content=f"{path.name} is covered:\n{log}"))
    return messages


async def bench_commit(store: SQLStore) -> float:
    session = Session(user_id="bench")
    await store.save_session(session)
    message = UserMessage(content="a typical short user message of a few words")
    t0 = time.perf_counter()
    for _ in range(COMMITS):
        await store.append_messages(session.session_id, [message])
    return COMMITS / (time.perf_counter() - t0)


async def bench_open(make_store: Any) -> tuple[float, float]:
    store = make_store()
    session = Session(user_id="bench")
    await store.save_session(session)
    source = transcript()
    batch: list[Any] = []
    for i in range(SESSION_SIZE):
        batch.append(source[i % len(source)])
        if len(batch) == 500:
            await store.append_messages(session.session_id, batch)
            batch = []
    await store.close()
    cold = []
    for _ in range(3):
        t0 = time.perf_counter()
        manager = SessionManager(store=make_store())
        await manager.get_session(session.session_id)
        context = await manager.get_context(session.session_id)
        cold.append(time.perf_counter() - t0)
        assert context
        warm_t0 = time.perf_counter()
        await manager.get_context(session.session_id)
        warm = time.perf_counter() - warm_t0
        await manager.close()
    return statistics.median(cold), warm


def bench_lz4() -> dict[str, Any]:
    messages = transcript()
    raw = sum(len(encode(m, threshold=1 << 60)[1]) for m in messages)
    t0 = time.perf_counter()
    encoded = [encode(m) for m in messages]
    enc_s = time.perf_counter() - t0
    stored = sum(len(body) for _, body in encoded)
    t0 = time.perf_counter()
    for encoding, body in encoded:
        decode(encoding, body)
    dec_s = time.perf_counter() - t0
    packed = [e for e in encoded if e[0] == 1]
    return {
        "messages": len(messages),
        "compressed_messages": len(packed),
        "raw_mb": round(raw / 1e6, 2),
        "stored_mb": round(stored / 1e6, 2),
        "ratio": round(raw / stored, 2),
        "encode_mb_s": round(raw / 1e6 / enc_s, 1),
        "decode_mb_s": round(raw / 1e6 / dec_s, 1),
    }


async def pg_store_factory() -> tuple[Any, Any] | None:
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""), timeout=3)
    except Exception as exc:
        emit(workload="commit", backend="postgresql", skipped=f"unreachable: {exc}")
        return None
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    args = {"server_settings": {"search_path": schema}}

    async def drop() -> None:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()

    return (lambda: SQLStore(PG_URL, connect_args=args)), drop


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        store = SQLStore(url)
        emit(workload="commit", backend="sqlite", messages_per_s=round(await bench_commit(store)))
        await store.close()
        cold, warm = await bench_open(lambda: SQLStore(f"sqlite:///{tmp}/open.db"))
        emit(
            workload="open",
            backend="sqlite",
            messages=SESSION_SIZE,
            cold_s=round(cold, 4),
            warm_s=round(warm, 4),
        )
    pg = await pg_store_factory()
    if pg is not None:
        make, drop = pg
        try:
            store = make()
            emit(
                workload="commit",
                backend="postgresql",
                messages_per_s=round(await bench_commit(store)),
            )
            await store.close()
            cold, warm = await bench_open(make)
            emit(
                workload="open",
                backend="postgresql",
                messages=SESSION_SIZE,
                cold_s=round(cold, 4),
                warm_s=round(warm, 4),
            )
        finally:
            await drop()
    emit(workload="lz4", **bench_lz4())


if __name__ == "__main__":
    asyncio.run(main())
