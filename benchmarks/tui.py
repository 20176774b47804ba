"""Terminal client figures, one JSON object per line. Run: python benchmarks/tui.py

A real ``agent-server`` (the offline model, SQLite in a temporary folder) on a free loopback
port, in a process of its own as ``agent-client`` runs it, and the client app driven headless
by Textual's Pilot against it.

Workloads:
  switch   switching to a session and showing its last screen (latest page of history,
           rendered): milliseconds, for a session of 10 messages and one of 5,000 (median of 5).
  stream   a 2,000-delta answer (words, paragraphs, a code block) fed as ``stream_data``
           frames through the app's frame handler, the path live frames take: milliseconds
           per delta, from the first delta until the Markdown shows the whole answer (median
           of 5 answers, the session shown afresh for each), with the session at message 10,
           at message 5,000 (its latest page shown), and at message 5,000 with every page
           loaded (scrolled to the top and back to the end; pages far from the viewport are
           parked).
  long_live  200 answers (200 deltas each) arrive live in one session, nothing switched;
           then the figure of one more 2,000-delta answer (live answers far off screen are
           parked in boxes of a few turns).
  live     the same 2,000 deltas streamed by the server's offline model over the WebSocket
           into the 5,000-message session: milliseconds per delta end to end.
Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.tui_helpers import stored_conversation  # noqa: E402

from agent_template.api.app import create_app  # noqa: E402
from agent_template.api.protocol import parse_frame  # noqa: E402
from agent_template.config import Settings  # noqa: E402
from agent_template.frontend.app import AgentClientApp  # noqa: E402
from agent_template.frontend.connection import Connection  # noqa: E402
from agent_template.frontend.rest import Api  # noqa: E402
from agent_template.frontend.widgets.messages import AnswerView  # noqa: E402
from agent_template.services.providers.offline import TestProvider  # noqa: E402

DELTAS = 2000
RUNS = 5  # answers streamed per figure (the median is printed)
LIVE_TURNS = 200  # answers streamed into one session before the long_live figure
SIZE = (120, 40)


def answer_deltas(count: int = DELTAS) -> list[str]:
    """``count`` pieces of a plausible answer: words, a paragraph break every 40 words, one
    code block in the middle."""
    out: list[str] = []
    for i in range(count):
        if i == count // 2:
            out.append("\n\n```python\ndef f(x):\n    return x * 2\n```\n\n")
        elif i % 40 == 39:
            out.append(f"word{i}.\n\n")
        else:
            out.append(f"word{i} ")
    return out


def server_settings(folder: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{folder / 'server.db'}",
        data_dir=folder / "data",
        log_file=None,
        redis_url=None,
        default_model_provider="test",
        rate_limit_per_minute=0,
    )


async def serve(folder: Path, port: int) -> None:
    """The server process: seeds the two sessions, then serves until killed."""
    import uvicorn

    text = "".join(answer_deltas())
    app = create_app(server_settings(folder), model=TestProvider(lambda request: text))
    uv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    runner = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.01)
    await seed(app, "small", 10)
    await seed(app, "big", 5000)
    print("ready", flush=True)
    await runner


@contextlib.asynccontextmanager
async def server(folder: Path) -> AsyncIterator[str]:
    """``agent-server`` in a child process; yields its URL once the sessions are stored."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(folder), str(port)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError("the benchmark's server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def seed(app: Any, session_id: str, count: int) -> None:
    sessions = app.state.server.sessions
    await sessions.create_session("default", session_id=session_id)
    messages = stored_conversation(count)
    for start in range(0, count, 500):
        await sessions.add_messages(session_id, messages[start : start + 500])


async def settled(pilot: Any) -> None:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


async def switch_ms(app: AgentClientApp, pilot: Any, session_id: str) -> float:
    start = time.perf_counter()
    await app.switch_session(session_id)
    await settled(pilot)
    return (time.perf_counter() - start) * 1000


def frames(session_id: str, task_id: str, deltas: list[str]) -> list[Any]:
    return [
        parse_frame(
            json.dumps(
                {
                    "type": "stream_data",
                    "data": {"content": text},
                    "session_id": session_id,
                    "task_id": task_id,
                    "seq": seq,
                    "last_seq": seq,
                }
            )
        )
        for seq, text in enumerate(deltas, start=1)
    ]


async def stream_ms_per_delta(app: AgentClientApp, pilot: Any, task_id: str) -> dict[str, float]:
    session_id = app.session_id
    assert session_id is not None
    deltas = answer_deltas()
    batch = frames(session_id, task_id, deltas)
    handler: list[float] = []
    start = time.perf_counter()
    for frame in batch:
        t0 = time.perf_counter()
        await app.on_frame(frame)
        handler.append(time.perf_counter() - t0)
        await asyncio.sleep(0)  # as between frames read from the socket: the screen repaints
    answer = app.chat.turns[task_id].answer
    assert isinstance(answer, AnswerView)
    await answer.finish()  # drains what the stream still holds into the Markdown
    await settled(pilot)
    total = time.perf_counter() - start
    assert answer.entry.text == "".join(deltas)
    return {
        "ms_per_delta": round(total * 1000 / len(batch), 4),
        "handler_median_ms": round(statistics.median(handler) * 1000, 4),
        "handler_p99_ms": round(sorted(handler)[int(len(handler) * 0.99)] * 1000, 4),
    }


async def load_everything(app: AgentClientApp, pilot: Any) -> int:
    while app.chat.older is not None:
        assert app.session_id is not None
        page = await app.api.history(app.session_id, before=app.chat.older, limit=200)
        await app.chat.load_page(page.items, page.older)
        await pilot.pause()
    app.chat.scroll_end(animate=False)  # back to the end, where the new answer appears
    await pilot.pause(0.3)  # the pages far from the end are parked, those near it rebuilt
    await settled(pilot)
    return len(app.chat.query(".message"))


async def median_run(
    app: AgentClientApp, pilot: Any, session_id: str, label: str, *, everything: bool = False
) -> dict[str, float]:
    """The median of RUNS answers streamed into ``session_id``, shown afresh for each."""
    results = []
    for run in range(RUNS):
        await switch_ms(app, pilot, session_id)
        mounted = await load_everything(app, pilot) if everything else None
        result = await stream_ms_per_delta(app, pilot, f"{label}-{run}")
        if mounted is not None:
            result["messages_mounted"] = mounted
        results.append(result)
    results.sort(key=lambda r: r["ms_per_delta"])
    return results[len(results) // 2]


async def after_live_turns(app: AgentClientApp, pilot: Any, turns: int) -> dict[str, float]:
    """``turns`` answers of 200 deltas arrive live into one session (nothing switched), then
    the figure of one more 2,000-delta answer, the view at the end."""
    await switch_ms(app, pilot, "small")
    session_id = app.session_id
    assert session_id is not None
    deltas = answer_deltas(200)
    for turn in range(turns):
        app.chat.add_user(f"question {turn}")
        for frame in frames(session_id, f"long-{turn}", deltas):
            await app.on_frame(frame)
        answer = app.chat.turns[f"long-{turn}"].answer
        assert answer is not None
        await answer.finish()
        app.chat.turns[f"long-{turn}"].done = True
        app.chat.turns[f"long-{turn}"].page.open -= 1
        await pilot.pause()
    app.chat.scroll_end(animate=False)
    await pilot.pause(0.3)
    await settled(pilot)
    return await stream_ms_per_delta(app, pilot, "long-last")


async def live_ms_per_delta(app: AgentClientApp, pilot: Any) -> float:
    before = set(app.chat.turns)
    start = time.perf_counter()
    await app.send("Stream the long answer.")
    while True:
        new = [t for k, t in app.chat.turns.items() if k not in before]
        if new and new[0].done:
            break
        await asyncio.sleep(0.005)
    await settled(pilot)
    return (time.perf_counter() - start) * 1000 / DELTAS


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with server(Path(folder)) as url:
            app = AgentClientApp(Connection(url), Api(url))
            async with app.run_test(size=SIZE) as pilot:
                while app.status.status.link != "connected":
                    await pilot.pause(0.01)
                switch: dict[str, float] = {}
                for session_id in ("small", "big"):
                    runs = [await switch_ms(app, pilot, session_id) for _ in range(5)]
                    switch[session_id] = round(statistics.median(runs), 1)
                print(json.dumps({"workload": "switch", "ms": switch}), flush=True)

                at_10 = await median_run(app, pilot, "small", "bench-10")
                at_5000 = await median_run(app, pilot, "big", "bench-5000")
                at_5000_all = await median_run(app, pilot, "big", "bench-all", everything=True)
                ratio = at_5000["ms_per_delta"] / at_10["ms_per_delta"]
                ratio_all = at_5000_all["ms_per_delta"] / at_10["ms_per_delta"]
                print(
                    json.dumps(
                        {
                            "workload": "stream",
                            "deltas": DELTAS,
                            "at_message_10": at_10,
                            "at_message_5000": at_5000,
                            "at_message_5000_all_loaded": at_5000_all,
                            "ratio_5000_to_10": round(ratio, 3),
                            "ratio_5000_all_loaded_to_10": round(ratio_all, 3),
                        }
                    ),
                    flush=True,
                )
                long_run = await after_live_turns(app, pilot, LIVE_TURNS)
                print(
                    json.dumps(
                        {
                            "workload": "long_live",
                            "turns": LIVE_TURNS,
                            "after_turns": long_run,
                            "ratio_to_message_10": round(
                                long_run["ms_per_delta"] / at_10["ms_per_delta"], 3
                            ),
                        }
                    ),
                    flush=True,
                )
                await switch_ms(app, pilot, "big")
                live = await live_ms_per_delta(app, pilot)
                print(json.dumps({"workload": "live", "ms_per_delta": round(live, 4)}), flush=True)
                await app.connection.close()
            await app.api.aclose()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve(Path(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(main())
