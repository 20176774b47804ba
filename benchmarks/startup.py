"""Start-up of ``agent-server`` to a ready ``/health``. Run: python benchmarks/startup.py

Spawns ``.venv/bin/agent-server --port FREE`` in a temporary folder (no ``.env``, settings from
the environment: a SQLite DATABASE_URL there, the offline model) and polls ``GET /health``
every 5 ms; the time from the spawn to the first 200. Median, min and max of 5 starts each:

  agent-server  new database   each start in a new folder (the schema is created)
  agent-server  same database  five starts on one folder, after one start that created it
  floor                        benchmarks/ws_floor.py: FastAPI and uvicorn alone

``stop_s`` is the median time from SIGINT to the process's exit (no client connected).
One JSON object per line; figures are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ws_load import ROOT, ServerProcess  # noqa: E402

RUNS = 5
AGENT_SERVER = ROOT / ".venv" / "bin" / "agent-server"


def free_port() -> int:
    """A loopback port nobody listens on now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_server_env(folder: Path, **settings: str | int) -> dict[str, str]:
    """The environment of a benchmarked ``agent-server``: this process's, without any of the
    project's setting variables (so a developer's keys or ports never leak in), plus a SQLite
    database, data folder and log file under ``folder``, the offline model, no Redis, and
    ``settings`` (names as the variables, e.g. ``RATE_LIMIT_PER_MINUTE=0``)."""
    sys.path.insert(0, str(ROOT / "src"))
    from agent_template.config import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(
        DATABASE_URL=f"sqlite:///{folder / 'server.db'}",
        DATA_DIR=str(folder / "data"),
        LOG_FILE=str(folder / "data" / "logs" / "agent.log"),
        DEFAULT_MODEL_PROVIDER="test",
    )
    env.update({key: str(value) for key, value in settings.items()})
    return env


def start_agent_server(folder: Path, **settings: str | int) -> ServerProcess:
    """``agent-server --port FREE`` in ``folder`` (see :func:`agent_server_env`), once ready."""
    port = free_port()
    return ServerProcess(
        [str(AGENT_SERVER), "--port", str(port)],
        "agent-server",
        port=port,
        env=agent_server_env(folder, **settings),
        cwd=folder,
    )


def start_floor(folder: Path) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, str(HERE / "ws_floor.py"), "--port", str(port)]
    return ServerProcess(argv, "floor", port=port, cwd=folder)


@contextmanager
def folders(shared: bool) -> Iterator[Callable[[], Path]]:
    """Gives a folder per call: always the same one when ``shared``."""
    with tempfile.TemporaryDirectory(prefix="startup-") as root:
        count = 0

        def next_folder() -> Path:
            nonlocal count
            count += 1
            path = Path(root) if shared else Path(root) / str(count)
            path.mkdir(exist_ok=True)
            return path

        yield next_folder


def measure(start: Callable[[Path], ServerProcess], shared: bool) -> dict[str, Any]:
    starts: list[float] = []
    stops: list[float] = []
    with folders(shared) as next_folder:
        if shared:  # the first start creates the database; it is not counted
            start(next_folder()).stop()
        for _ in range(RUNS):
            server = start(next_folder())
            starts.append(server.started_s)
            stops.append(server.stop())
    return {
        "median_s": round(statistics.median(starts), 3),
        "min_s": round(min(starts), 3),
        "max_s": round(max(starts), 3),
        "stop_s": round(statistics.median(stops), 3),
        "runs": RUNS,
    }


def main() -> None:
    cases: list[tuple[str, str, Callable[[Path], ServerProcess], bool]] = [
        ("agent-server", "new database", start_agent_server, False),
        ("agent-server", "same database", start_agent_server, True),
        ("floor", "", start_floor, False),
    ]
    for server, case, start, shared in cases:
        row: dict[str, Any] = {"bench": "startup", "server": server}
        if case:
            row["case"] = case
        try:
            row.update(measure(start, shared))
        except RuntimeError as exc:
            row["error"] = str(exc)[-600:]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
