"""WebSocket streaming under load: our server beside the floor. Run: python benchmarks/ws_load.py

For each client count C (``--clients``, default 100,250,500) and each server (``--servers``,
default floor,ours), a fresh server process is started on a free loopback port:

  floor  benchmarks/ws_floor.py: a bare FastAPI WebSocket that streams the reply itself.
  ours   ``create_app(settings, model=PacedModel())`` under uvicorn: the real ``/ws`` route,
         AgentLoop, run loop, stream store and sessions in a temporary SQLite file. The model is
         a ModelClient written here, handed to the app as the composition root allows, so the
         whole server path runs and no provider (SDK, HTTP, SSE parsing) is measured with it.
         Settings: rate limit off, no per-user task limit, MAX_CONCURRENT_TASKS = C, memory
         cache, no log file; the collector tuned as the server tunes it.

Both run under the same uvicorn set-up (``ws_floor.serve``: a loopback socket with
TCP_NODELAY, access log off, ``websockets`` protocol, no uvloop or httptools installed).

Both stream the same reply (``ws_floor.paced_deltas``): 100 deltas, delta i due at
start + i * 20 ms, where start is when the server began the reply (the floor: on reading the
chat message; ours: when the run loop first asks the model). Every delta's text is its own due
time in microseconds, so the client measures each delta's lateness (arrival - due) even when
the server merged several deltas into one frame; a merged delta counts as delivered.

One warm-up chat first, then C clients (``websockets``) connect, and once all are connected
each sends one ``chat`` at the same moment and reads frames until ``stream_complete``.
Figures of that phase, one JSON object per (server, C), floor and ours from the same run:

  deltas_per_s        deltas delivered / (last delta's arrival - the moment the chats were sent)
  frames_per_s        stream_data frames received per second (lower than deltas when merged)
  asked_per_s         C * 50: the rate the schedule asks for
  late_p50/p99/max_ms lateness of every delivered delta against its due time
  first_p50/p99_ms    chat sent -> first delta arrived (the server's set-up of a reply, plus
                      the first 20 ms interval)
  lost                deltas expected - delivered; gaps: stream_gap frames; errors: clients
                      that got an error frame, or no stream_complete within 60 s
  server_cpu_s, cpu_pct  server process CPU time (user + system, /proc/PID/stat) in the phase
  rss_mb, peak_rss_mb resident set after the warm-up (VmRSS) and the peak (VmHWM)
  client_cpu_s        this process's CPU time in the phase: clients and server share the
                      machine, so a busy client delays deltas too
  load_1m             the machine's load average at the end: other work skews every figure

Figures are printed, never asserted. Clients and servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from ws_floor import DELTAS, INTERVAL_S, READY_LINE, paced_deltas, serve  # noqa: E402

DEFAULT_CLIENTS = (100, 250, 500)
SERVERS = ("floor", "ours")
CONNECT_PARALLEL = 64  # handshakes in flight at once while clients connect
REPLY_TIMEOUT_S = 60.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
HEALTH_POLL_S = 0.005
CHAT_TEXT = "Tell me a story."


# ----------------------------------------------------------------------------- servers


class PacedModel:
    """A ModelClient (see ``core/run_loop.py``) that streams the benchmark's paced reply."""

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        from agent_template.models import AssistantMessage, ResponseFinished, TextDelta

        parts: list[str] = []
        async for text in paced_deltas():
            parts.append(text)
            yield TextDelta(text=text)
        message = AssistantMessage(content="".join(parts))
        yield ResponseFinished(finish_reason="stop", message=message)


def serve_ours(clients: int, folder: Path) -> None:
    """Serve the real app with the paced model (the ``--serve-ours`` child process)."""
    from agent_template.api.app import create_app
    from agent_template.config import Settings
    from agent_template.utils.gc_tuning import tune_gc

    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{folder / 'bench.db'}",
        data_dir=folder / "data",
        log_file=None,
        redis_url=None,
        cache_backend="memory",
        default_model_provider="test",
        rate_limit_per_minute=0,
        max_tasks_per_user=0,
        max_concurrent_tasks=max(clients, 1),
    )
    app = create_app(settings, model=PacedModel())
    tune_gc()
    serve(app)


class ServerProcess:
    """A server in a child process: started, measured through /proc, stopped with SIGINT.

    Without ``port`` the child picks a free port and prints ``PORT <n>`` once it accepts
    (ws_floor.serve); with one, it is ready once ``GET /health`` answers 200.
    ``started_s`` is how long that took from the spawn.
    """

    def __init__(
        self,
        argv: Sequence[str],
        name: str,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - read after exit, freed with self
        spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=cwd, env=env
        )
        try:
            self.port = self._read_port() if port is None else self._await_health(port)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.perf_counter() - spawned
        # Drain stdout so a chatty server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]

    def _read_port(self) -> int:
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([out], [], [], 0.1)
            if ready:
                line = out.readline()
                if not line:
                    break  # exited
                if line.startswith(READY_LINE):
                    return int(line.split()[1])
        raise RuntimeError(f"{self.name} server did not start: {self.stderr_tail()}")

    def _await_health(self, port: int) -> int:
        import http.client

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=START_TIMEOUT_S)
            try:
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return port
            except OSError:
                pass  # not listening yet
            finally:
                connection.close()
            time.sleep(HEALTH_POLL_S)
        raise RuntimeError(f"{self.name} server did not start: {self.stderr_tail()}")

    @property
    def base_url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server so far (None where /proc is missing)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self, key: str) -> float | None:
        """A /proc/PID/status memory figure (VmRSS, VmHWM) in MB."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stderr_tail(self, limit: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:].strip() or "(no output)"

    def stop(self) -> float:
        """SIGINT, then the seconds until the process exited (killed after STOP_TIMEOUT_S)."""
        began = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.perf_counter() - began


def start_server(name: str, clients: int, folder: Path) -> ServerProcess:
    if name == "floor":
        argv = [sys.executable, str(HERE / "ws_floor.py")]
    else:
        argv = [sys.executable, __file__, "--serve-ours", str(clients), str(folder)]
    return ServerProcess(argv, name)


# ----------------------------------------------------------------------------- clients


@dataclass(slots=True)
class Reply:
    """What one client saw: the chat's send time and every frame with its arrival time."""

    sent: float = 0.0
    frames: list[tuple[float, str]] = field(default_factory=list)
    error: str | None = None


async def converse(ws: Any, index: int, go: asyncio.Event) -> Reply:
    """Send one chat once ``go`` is set, and record frames until the stream completes."""
    reply = Reply()
    message = json.dumps({"type": "chat", "content": CHAT_TEXT, "session_id": f"bench-{index}"})
    await go.wait()
    frames = reply.frames
    clock = time.time
    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            reply.sent = clock()
            await ws.send(message)
            async for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode()
                frames.append((clock(), text))
                if text.startswith('{"type":"stream_data"'):
                    continue  # the hot path: parsed after the run
                kind = json.loads(text).get("type")
                if kind == "stream_complete":
                    return reply
                if kind == "error" and '"seq"' not in text:  # refused, not a stream's error
                    reply.error = text[:300]
                    return reply
            reply.error = "connection closed before stream_complete"
    except TimeoutError:
        reply.error = f"no stream_complete within {REPLY_TIMEOUT_S:.0f} s"
    except Exception as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    return reply


async def open_clients(url: str, count: int, compression: str | None) -> list[Any]:
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(CONNECT_PARALLEL)

    async def one() -> Any:
        async with gate:
            return await connect(url, compression=compression, open_timeout=30, max_size=None)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def load(server: ServerProcess, clients: int, compression: str | None) -> dict[str, Any]:
    """Warm up, connect ``clients`` WebSockets, stream one reply to each; the figures."""
    url = f"ws://{server.base_url}/ws"
    (warm,) = await open_clients(url, 1, compression)
    warm_go = asyncio.Event()
    warm_go.set()
    warm_reply = await converse(warm, -1, warm_go)
    await warm.close()
    if warm_reply.error:
        raise RuntimeError(f"the warm-up chat failed: {warm_reply.error}")
    rss = server.memory_mb("VmRSS")
    sockets = await open_clients(url, clients, compression)
    go = asyncio.Event()
    tasks = [asyncio.create_task(converse(ws, i, go)) for i, ws in enumerate(sockets)]
    await asyncio.sleep(0.2)  # every client waits on `go`
    gc.collect()
    gc.disable()  # the client's own collector pauses would show up as lateness
    cpu0, mine0, t0 = server.cpu_seconds(), own_cpu_seconds(), time.time()
    go.set()
    replies = await asyncio.gather(*tasks)
    cpu1, mine1 = server.cpu_seconds(), own_cpu_seconds()
    gc.enable()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    figures = summarize(replies, t0)
    figures.update(
        server_cpu_s=None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
        client_cpu_s=round(mine1 - mine0, 2),
        rss_mb=round_or_none(rss),
        peak_rss_mb=round_or_none(server.memory_mb("VmHWM")),
        load_1m=round(os.getloadavg()[0], 2),
    )
    if figures["server_cpu_s"] is not None and figures["span_s"]:
        figures["cpu_pct"] = round(100 * figures["server_cpu_s"] / figures["span_s"])
    return figures


def summarize(replies: Sequence[Reply], t0: float) -> dict[str, Any]:
    """Lateness, throughput and losses from what the clients recorded."""
    lateness: list[float] = []
    first: list[float] = []
    frames = delivered = gaps = duplicates = 0
    errors: list[str] = []
    last = t0
    for reply in replies:
        if reply.error:
            errors.append(reply.error)
        seen: set[str] = set()
        got_first = False
        for arrived, text in reply.frames:
            kind, _, _ = text[9:40].partition('"')  # after '{"type":"'
            if kind == "stream_gap":
                gaps += 1
            if kind != "stream_data":
                continue
            frames += 1
            tokens = json.loads(text)["data"]["content"].split()
            if not got_first and tokens:
                first.append(arrived - reply.sent)
                got_first = True
            for token in tokens:
                if token in seen:
                    duplicates += 1
                    continue
                seen.add(token)
                lateness.append(arrived - int(token) / 1e6)
            last = max(last, arrived)
        delivered += len(seen)
    expected = len(replies) * DELTAS
    span = last - t0
    out: dict[str, Any] = {
        "deltas_per_s": round(delivered / span) if span > 0 else None,
        "frames_per_s": round(frames / span) if span > 0 else None,
        "asked_per_s": round(len(replies) / INTERVAL_S),
        "span_s": round(span, 3),
        **percentiles("late", lateness),
        **percentiles("first", first, (50, 99)),
        "lost": expected - delivered,
        "merged": delivered - frames if delivered > frames else 0,
        "gaps": gaps,
        "duplicates": duplicates,
        "errors": len(errors),
    }
    if errors:
        out["first_error"] = errors[0]
    return out


def percentiles(
    name: str, values: list[float], which: Sequence[int] = (50, 99, 100)
) -> dict[str, float | None]:
    if not values:
        return {f"{name}_{'max' if p == 100 else f'p{p}'}_ms": None for p in which}
    values.sort()
    out: dict[str, float | None] = {}
    for p in which:
        index = min(len(values) - 1, round(p / 100 * (len(values) - 1)))
        key = f"{name}_{'max' if p == 100 else f'p{p}'}_ms"
        out[key] = round(values[index] * 1000, 1)
    return out


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def round_or_none(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ----------------------------------------------------------------------------- main


def run(servers: Sequence[str], client_counts: Sequence[int], compression: str | None) -> None:
    rows: list[dict[str, Any]] = []
    for clients in client_counts:
        for name in servers:
            row: dict[str, Any] = {"bench": "ws_load", "server": name, "clients": clients}
            with tempfile.TemporaryDirectory(prefix="ws-load-") as folder:
                try:
                    server = start_server(name, clients, Path(folder))
                except RuntimeError as exc:
                    row["error"] = str(exc)
                else:
                    try:
                        row.update(asyncio.run(load(server, clients, compression)))
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        row["server_log"] = server.stderr_tail(600)
                    finally:
                        server.stop()
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_table(rows)


TABLE_COLUMNS = (
    "server",
    "clients",
    "deltas_per_s",
    "asked_per_s",
    "late_p50_ms",
    "late_p99_ms",
    "first_p99_ms",
    "lost",
    "server_cpu_s",
    "peak_rss_mb",
)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The main figures as an aligned table, on stderr, for people (a failed run: its error)."""
    lines = [list(TABLE_COLUMNS)]
    lines += [[str(row.get(name, "")) for name in TABLE_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_COLUMNS))]
    for line, row in zip(lines, [{}, *rows], strict=True):
        if "error" in row:
            text = f"{line[0].rjust(widths[0])}  {line[1].rjust(widths[1])}  error: {row['error']}"
        else:
            text = "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients",
        default=",".join(map(str, DEFAULT_CLIENTS)),
        help="comma-separated client counts (default: %(default)s)",
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="floor, ours or both (default: %(default)s)"
    )
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="permessage-deflate as websockets clients negotiate it by default, or none",
    )
    parser.add_argument(
        "--serve-ours", nargs=2, metavar=("CLIENTS", "FOLDER"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve_ours:
        serve_ours(int(args.serve_ours[0]), Path(args.serve_ours[1]))
        return
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    with contextlib.suppress(KeyboardInterrupt):
        run(servers, counts, None if args.compression == "none" else "deflate")


if __name__ == "__main__":
    main()
