"""The server from a client's side: start ``agent-server``, talk REST and WebSocket, stop it.

The server runs as a child process on a free loopback port with the offline model and its own
SQLite file; with ``AUTH_REQUIRED=false`` (the default) it answers clients on this machine
without a token. The frames are documented in docs/protocol.md.

Run: python examples/server_client.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import websockets

START_TIMEOUT_S = 60.0  # a first start creates the database and checks the sandbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(folder: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``agent-server`` (the one installed beside this Python) with settings from the
    environment, as a deployment would pass them; its console output goes to ``log``."""
    command = shutil.which("agent-server", path=str(Path(sys.executable).parent)) or "agent-server"
    env = {
        **os.environ,
        "DEFAULT_MODEL_PROVIDER": "test",
        "DATABASE_URL": f"sqlite:///{folder / 'server.db'}",
        "DATA_DIR": str(folder / "data"),
        "LOG_FILE": str(folder / "data" / "server.jsonl"),
    }
    return subprocess.Popen(
        [command, "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=log
    )


async def wait_until_ready(base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base_url) as client:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"agent-server exited with status {server.returncode}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError("agent-server did not start in time")
            await asyncio.sleep(0.1)


async def talk(base_url: str, port: int) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        created = await client.post("/api/v1/sessions", json={"title": "Example"})
        created.raise_for_status()
        session_id = created.json()["session_id"]
        print("REST session:", session_id)

        reply = await client.post(
            "/api/v1/messages", json={"content": "Hello over REST!", "session_id": session_id}
        )
        reply.raise_for_status()
        print("REST reply:", reply.json()["message"]["content"])

    # The same session over the WebSocket: the answer streams as stream_data frames.
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        chat = {"type": "chat", "content": "And over the WebSocket?", "session_id": session_id}
        await ws.send(json.dumps(chat))
        text = []
        async for frame in ws:
            data = json.loads(frame)
            if data["type"] == "stream_data":
                text.append(data["data"]["content"])
            elif data["type"] == "stream_complete":
                break
        print("WebSocket reply:", "".join(text))

    async with httpx.AsyncClient(base_url=base_url) as client:
        history = (await client.get(f"/api/v1/sessions/{session_id}/messages")).json()
        print("stored messages:", [m["role"] for m in history["items"]])


async def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with (folder / "console.log").open("wb") as log:
            server = start_server(folder, port, log)
            try:
                await wait_until_ready(base_url, server)
                await talk(base_url, port)
            except BaseException:
                print((folder / "console.log").read_text(), file=sys.stderr)
                raise
            finally:
                server.send_signal(signal.SIGTERM)  # a graceful shutdown, as on Ctrl-C
                server.wait(timeout=30)
        console = (folder / "console.log").read_text()
        print("server stopped gracefully:", "agent-server stopped" in console)


if __name__ == "__main__":
    asyncio.run(main())
