"""The WebSocket floor: the least a server can do to stream our replies. Run by ws_load.py.

A bare FastAPI app with a WebSocket endpoint, ``/ws``. On each ``chat`` message it streams
the benchmark's reply (:func:`paced_deltas`: 100 deltas, one due every 20 ms) one frame per
delta, in the envelope of the real server's ``stream_data`` frames (see ``api/protocol.py``),
then one ``stream_complete`` frame. ``GET /health`` is the floor of http_load.py and
startup.py. No agent loop, no storage, no stream store: whatever the real server costs beyond
this is ours.

Also the helpers the server benchmarks share: the paced reply, and :func:`serve`, which runs
an app under uvicorn on a free loopback port and prints ``PORT <n>`` once it accepts.

    python benchmarks/ws_floor.py [--port N]   # serve the floor; prints its port
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

DELTAS = 100
INTERVAL_S = 0.02  # a fast model: 50 tokens per second
READY_LINE = "PORT"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def delta_text(due: float) -> str:
    """A delta's text: the wall-clock time it was due, in microseconds, then a space.

    Each delta carries its own due time, so a client can tell how late every delta arrived
    even when the server merged several into one frame (they stay space-separated).
    """
    return f"{round(due * 1e6)} "


async def paced_deltas(count: int = DELTAS, interval: float = INTERVAL_S) -> AsyncIterator[str]:
    """The reply's deltas on an absolute schedule: delta i (from 1) is due at start + i * interval.

    Like tokens arriving from a provider's socket, a delta that comes late (the event loop was
    busy) does not push the later ones back.
    """
    start = time.time()
    for i in range(1, count + 1):
        due = start + i * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield delta_text(due)


def create_floor_app() -> FastAPI:
    """The floor's FastAPI app."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def chat_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                if message.get("type") != "chat":
                    continue
                ids = {
                    "session_id": message.get("session_id") or uuid.uuid4().hex,
                    "task_id": uuid.uuid4().hex,
                }
                seq = 0
                async for text in paced_deltas():
                    seq += 1
                    payload = {"type": "stream_data", "data": {"content": text}, **ids}
                    payload["seq"] = payload["last_seq"] = seq
                    await websocket.send_text(_dumps(payload))
                seq += 1
                done = {"status": "completed", "turns": 1}
                payload = {"type": "stream_complete", "data": done, **ids}
                payload["seq"] = payload["last_seq"] = seq
                await websocket.send_text(_dumps(payload))
        except WebSocketDisconnect:
            return

    return app


def serve(app: Any, port: int = 0) -> None:
    """Serve ``app`` with uvicorn on loopback ``port`` (0: a free one) until SIGINT/SIGTERM.

    Prints ``PORT <n>`` (flushed) once the server accepts connections. Access logs are off,
    as they would be behind the real server's own request log.
    """
    asyncio.run(_serve(app, port))


async def _serve(app: Any, port: int) -> None:
    import uvicorn

    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it a response written in two parts waits for the client's delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", backlog=4096)
    server = uvicorn.Server(config)
    runner = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if runner.done():
            runner.result()  # start-up failed: raise its error
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    print(READY_LINE, port, flush=True)
    await runner


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve the WebSocket floor (and /health).")
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    port = parser.parse_args().port
    app = create_floor_app()
    # The collector settings the real server runs with (utils/gc_tuning.py), so the two
    # servers differ only in their code.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    serve(app, port)


if __name__ == "__main__":
    main()
