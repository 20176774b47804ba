"""Framework overhead figures, one JSON object per line. Run: python benchmarks/overhead.py

Workloads:
  run      an agent with one tool add(a, b) and an instant in-process model that first calls
           add(2, 3) and then answers "5": microseconds per run (median of 5 batches of 300).
  stream   a model streaming 5,000 one-token deltas through the run loop, AgentLoop and
           StreamGenerator to one counting consumer: microseconds per delta (median of 5),
           beside a bare async generator of the same strings (the floor).
  concurrent  1,000 concurrent `run` workloads whose model waits 50 ms per call, through
           AgentLoop with the limit at 1,000: wall seconds and peak RSS growth in MB, with the
           collector settings the CLI and server use (and, for comparison, Python's defaults).
           In a fresh process, so that the RSS growth does not depend on what ran before
           (the peak of an earlier workload would hide it).
  fanout   one stream to 100 consumers, one of them stalled: deltas per second delivered to
           the other 99, beside the same 99 without a stalled one.
  import   cold `import agent_template` and `agent-template --help` (median of 7 processes).
Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agent_template import Agent, AgentLoop, StreamGenerator, tool  # noqa: E402
from agent_template.core.bus import InProcessEventBus  # noqa: E402
from agent_template.core.stream_gen import ChunkStream  # noqa: E402
from agent_template.core.stream_store import MemoryStreamStore  # noqa: E402
from agent_template.models import (  # noqa: E402
    AssistantMessage,
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolCallStarted,
)
from agent_template.services.model_provider import ModelProvider  # noqa: E402
from agent_template.services.tool_manager import FunctionTool  # noqa: E402

BATCHES = 5
RUNS = 300
WARMUP = 20
PROCESSES = 7


class InstantModel(ModelProvider):
    """Calls add(2, 3) until it sees a tool result, then answers "5". No I/O, no sleep."""

    name = "bench"

    def __init__(self) -> None:
        super().__init__(model="instant")
        self._call = ToolCall(id="call_1", name="add", arguments='{"a": 2, "b": 3}')

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        if request.messages[-1].role == "tool":
            yield TextDelta(text="5")
            yield ResponseFinished(finish_reason="stop", message=AssistantMessage(content="5"))
            return
        yield ToolCallStarted(index=0, id=self._call.id, name="add")
        yield ToolCallReady(index=0, call=self._call)
        yield ResponseFinished(
            finish_reason="tool_calls", message=AssistantMessage(tool_calls=[self._call])
        )


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _add_sync(a: int, b: int) -> int:
    """Add two integers (a sync tool: runs in a worker thread)."""
    return a + b


add_sync = FunctionTool(_add_sync, name="add")


def bench_run(tool_fn: FunctionTool) -> float:
    from agent_template.config import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    agent = Agent("You add numbers.", tools=[tool_fn], model=InstantModel(), settings=settings)

    async def batch(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            result = await agent.run("What is 2 + 3?")
            assert result.output == "5", result
        return (time.perf_counter() - t0) / n * 1e6

    async def main() -> float:
        await batch(WARMUP)
        return statistics.median([await batch(RUNS) for _ in range(BATCHES)])

    return asyncio.run(main())


DELTAS = 5_000


class StreamingModel(ModelProvider):
    """Streams DELTAS one-token text deltas, then finishes. No I/O, no sleep."""

    name = "bench-stream"

    def __init__(self) -> None:
        super().__init__(model="stream")
        self.tokens = [f"t{i % 10} " for i in range(DELTAS)]

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        for token in self.tokens:
            yield TextDelta(text=token)
        yield ResponseFinished(finish_reason="stop", message=AssistantMessage(content="..."))


class SleepyModel(InstantModel):
    """The `run` workload's model, waiting 50 ms before each answer like a real provider."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        await asyncio.sleep(0.05)
        async for event in super().stream(request):
            yield event


def _settings() -> object:
    from agent_template.config import Settings

    return Settings(_env_file=None)  # type: ignore[call-arg]


def bench_stream() -> tuple[float, float]:
    model = StreamingModel()

    async def once() -> float:
        streams = MemoryStreamStore()  # the loop's own, as a composition root would give it
        loop = AgentLoop(_settings(), model=model, bus=InProcessEventBus(), streams=streams)  # type: ignore[arg-type]
        gen = StreamGenerator(streams)
        t0 = time.perf_counter()
        task = await loop.create_task({"type": "chat", "message": "stream"})
        count = 0
        async for chunk in gen.process_stream("bench", task):
            if chunk.type == "text_delta":
                count += chunk.last_seq - chunk.seq + 1
        elapsed = time.perf_counter() - t0
        assert count == DELTAS, count
        await loop.run()
        return elapsed / DELTAS * 1e6

    async def floor_once() -> float:
        async def gen() -> AsyncIterator[str]:
            for token in model.tokens:
                yield token

        t0 = time.perf_counter()
        count = 0
        async for _ in gen():
            count += 1
        return (time.perf_counter() - t0) / count * 1e6

    async def main() -> tuple[float, float]:
        await once()
        delta = statistics.median([await once() for _ in range(BATCHES)])
        floor = statistics.median([await floor_once() for _ in range(BATCHES)])
        return delta, floor

    return asyncio.run(main())


def bench_concurrent(n: int = 1000, *, service_gc: bool = True) -> tuple[float, float]:
    """Wall seconds and peak RSS growth; with the collector settings the CLI and server use."""
    import gc

    from agent_template.utils.gc_tuning import tune_gc

    saved = gc.get_threshold()
    if service_gc:
        tune_gc()
    else:
        gc.unfreeze()

    async def main() -> float:
        loop = AgentLoop(
            _settings(),  # type: ignore[arg-type]
            model=SleepyModel(),
            tools=[add],
            bus=InProcessEventBus(),
            max_concurrent_tasks=n,
            streams=MemoryStreamStore(),
        )
        t0 = time.perf_counter()
        tasks = [await loop.create_task({"type": "chat", "message": "2+3?"}) for _ in range(n)]
        await loop.run()
        elapsed = time.perf_counter() - t0
        assert all(t.result == "5" for t in tasks), tasks[0]
        return elapsed

    before = _peak_rss_kb()
    try:
        wall = asyncio.run(main())
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
    after = _peak_rss_kb()
    return wall, (after - before) / 1024


def _peak_rss_kb() -> int:
    """This process's peak resident memory in KB: the kernel's figure for its own memory
    (VmHWM), as ``ru_maxrss`` also counts what a parent held when it started this one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_fanout(consumers: int = 100, deltas: int = 20_000) -> tuple[float, float]:
    events = [TextDelta(text=f"t{i % 10} ") for i in range(deltas)]

    async def once(stalled: bool) -> float:
        stream = ChunkStream("fan", retain=deltas)
        readers = [stream.subscribe() for _ in range(consumers - 1)]
        if stalled:
            stream.subscribe()  # never read

        async def read(consumer: object) -> None:
            got = 0
            async for chunk in consumer:  # type: ignore[attr-defined]
                got += chunk.last_seq - chunk.seq + 1
            assert got == deltas, got

        tasks = [asyncio.create_task(read(r)) for r in readers]
        t0 = time.perf_counter()
        for i, event in enumerate(events):
            stream.publish(event)
            if i % 64 == 63:
                await asyncio.sleep(0)
        stream.close()
        await asyncio.gather(*tasks)
        return deltas * (consumers - 1) / (time.perf_counter() - t0)

    async def main() -> tuple[float, float]:
        await once(False)
        with_stall = statistics.median([await once(True) for _ in range(BATCHES)])
        without = statistics.median([await once(False) for _ in range(BATCHES)])
        return with_stall, without

    return asyncio.run(main())


def median_process_s(cmd: list[str]) -> float:
    times = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    subprocess.run(cmd, capture_output=True, env=env, check=False)  # warm the bytecode cache
    for _ in range(PROCESSES):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def emit(**figures: object) -> None:
    print(json.dumps(figures), flush=True)


def main() -> None:
    emit(
        workload="run",
        run_us=round(bench_run(add), 1),
        run_sync_tool_us=round(bench_run(add_sync), 1),
        runs=RUNS,
        batches=BATCHES,
    )
    delta, floor = bench_stream()
    emit(workload="stream", delta_us=round(delta, 3), floor_delta_us=round(floor, 3), deltas=DELTAS)
    concurrent = subprocess.run(
        [sys.executable, __file__, "concurrent"], capture_output=True, text=True, check=True
    )
    print(concurrent.stdout, end="", flush=True)
    stalled, free = bench_fanout()
    emit(
        workload="fanout",
        fanout_deltas_per_s=round(stalled),
        fanout_no_stall_deltas_per_s=round(free),
        stall_cost_pct=round((1 - stalled / free) * 100, 1),
        consumers=100,
    )
    cli = shutil.which("agent-template") or str(Path(sys.executable).parent / "agent-template")
    emit(
        workload="import",
        import_s=round(median_process_s([sys.executable, "-c", "import agent_template"]), 3),
        help_s=round(median_process_s([cli, "--help"]), 3),
        python_s=round(median_process_s([sys.executable, "-c", "pass"]), 3),
    )


def main_concurrent() -> None:
    wall, rss = bench_concurrent()  # first: peak RSS growth is measured from here
    default_wall, _ = bench_concurrent(service_gc=False)
    emit(
        workload="concurrent",
        conc_wall_s=round(wall, 3),
        conc_rss_mb=round(rss, 1),
        conc_wall_default_gc_s=round(default_wall, 3),
        runs=1000,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["concurrent"]:
        main_concurrent()
    else:
        main()
