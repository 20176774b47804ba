"""HTTP requests per second against a server process. Run: python benchmarks/http_load.py

Servers (each a fresh process on a free loopback port, see startup.py):

  ours   ``.venv/bin/agent-server`` as users run it (its uvicorn options and logging, the log
         file in a temporary folder), the offline ``test`` model, a temporary SQLite database,
         rate limit off, no per-user task limit, MAX_CONCURRENT_TASKS = the concurrency.
  floor  benchmarks/ws_floor.py: FastAPI and uvicorn answering ``/health`` with no middleware.

Workloads, each for 3 s after 0.5 s of warm-up, with 32 concurrent requests (``--concurrency``)
(each loop with its own ``httpx.AsyncClient``, see :func:`load`):

  health    GET /health
  messages  POST /api/v1/messages {"content": "Hello"}: a new session per request, the
            offline model's whole answer in the response (ours only)

Figures, one JSON object per (server, workload): requests per second, p50/p99 latency,
failures (non-2xx and transport errors, with the first one), server CPU seconds and percent
of one core (/proc/PID/stat), peak RSS (VmHWM), this client's CPU seconds (the client shares
the machine's cores with the server, and at these rates it is often the busier one) and the
machine's load average.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from startup import start_agent_server, start_floor  # noqa: E402
from ws_load import ServerProcess, own_cpu_seconds, percentiles, round_or_none  # noqa: E402

CONCURRENCY = 32
DURATION_S = 3.0
WARMUP_S = 0.5
MESSAGE = {"content": "Hello"}
WORKLOADS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "health": ("GET", "/health", None),
    "messages": ("POST", "/api/v1/messages", MESSAGE),
}
SERVER_WORKLOADS = {"floor": ("health",), "ours": ("health", "messages")}


async def hammer(
    clients: Sequence[Any], workload: str, seconds: float
) -> tuple[list[float], int, str | None]:
    """One loop per client sending the workload's request for ``seconds``: each successful
    request's latency, the failure count and the first failure."""
    method, path, body = WORKLOADS[workload]
    latencies: list[float] = []
    failures = 0
    first_failure: str | None = None
    deadline = time.perf_counter() + seconds

    async def worker(client: Any) -> None:
        nonlocal failures, first_failure
        clock = time.perf_counter
        while (began := clock()) < deadline:
            try:
                response = await client.request(method, path, json=body)
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    latencies.append(clock() - began)
                    continue
                failure = f"HTTP {response.status_code}: {response.text[:300]}"
            failures += 1
            first_failure = first_failure or failure

    await asyncio.gather(*(worker(client) for client in clients))
    return latencies, failures, first_failure


async def load(server: ServerProcess, workload: str, concurrency: int) -> dict[str, Any]:
    """Warm up, then measure ``concurrency`` requests in flight for DURATION_S.

    Each request loop has its own ``httpx.AsyncClient`` (one keep-alive connection), made
    before the clock starts: one pool shared by 32 requests in flight costs the client time
    per request in proportion to its connections (httpcore assigns requests by scanning them
    all), which made the client, not the server, the limit at a third of the rate.
    """
    import httpx

    base_url = f"http://{server.base_url}"
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=60))
            for _ in range(concurrency)
        ]
        await hammer(clients, workload, WARMUP_S)
        cpu0, mine0, t0 = server.cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        latencies, failures, first_failure = await hammer(clients, workload, DURATION_S)
        elapsed = time.perf_counter() - t0
        cpu1, mine1 = server.cpu_seconds(), own_cpu_seconds()
    row: dict[str, Any] = {
        "rps": round(len(latencies) / elapsed),
        **percentiles("latency", latencies, (50, 99)),
        "failures": failures,
    }
    if cpu0 is not None and cpu1 is not None:
        row["server_cpu_s"] = round(cpu1 - cpu0, 2)
        row["cpu_pct"] = round(100 * (cpu1 - cpu0) / elapsed)
    row["client_cpu_s"] = round(mine1 - mine0, 2)
    row["peak_rss_mb"] = round_or_none(server.memory_mb("VmHWM"))
    row["load_1m"] = round(os.getloadavg()[0], 2)
    if first_failure:
        row["first_failure"] = first_failure
    return row


def start(name: str, folder: Path, concurrency: int) -> ServerProcess:
    if name == "floor":
        return start_floor(folder)
    return start_agent_server(
        folder,
        RATE_LIMIT_PER_MINUTE=0,
        MAX_TASKS_PER_USER=0,
        MAX_CONCURRENT_TASKS=max(concurrency, 1),
    )


def run(servers: Sequence[str], concurrency: int) -> None:
    for name in servers:
        with tempfile.TemporaryDirectory(prefix="http-load-") as folder:
            base = {"bench": "http_load", "server": name, "concurrency": concurrency}
            try:
                server = start(name, Path(folder), concurrency)
            except RuntimeError as exc:
                print(json.dumps({**base, "error": str(exc)[-600:]}), flush=True)
                continue
            try:
                for workload in SERVER_WORKLOADS[name]:
                    row = {**base, "workload": workload}
                    try:
                        row.update(asyncio.run(load(server, workload, concurrency)))
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {exc}"
                    print(json.dumps(row), flush=True)
            finally:
                server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="requests in flight (%(default)s)"
    )
    parser.add_argument(
        "--servers", default="floor,ours", help="floor, ours or both (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = sorted(set(servers) - set(SERVER_WORKLOADS))
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from floor, ours")
    run(servers, args.concurrency)


if __name__ == "__main__":
    main()
