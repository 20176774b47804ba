"""Running the real app for tests: settings on a temporary SQLite file, and uvicorn on a free
loopback port in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent_template.config import Settings


def server_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a test server: its own SQLite file and data folder, no .env, no Redis."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'server.db'}",
        "data_dir": tmp_path / "data",
        "log_file": None,
        "redis_url": None,
        "default_model_provider": "test",
        "rate_limit_per_minute": 0,
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields its base URL
    (``http://127.0.0.1:PORT``). The server is stopped (gracefully) on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    runner = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if runner.done():
                runner.result()  # start-up failed: raise its error
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 30)
        sock.close()
