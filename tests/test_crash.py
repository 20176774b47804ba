"""SIGKILL at random moments never loses an acknowledged message or corrupts the database."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_template.models import Session
from agent_template.services.storage import SQLStore

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 12


@pytest.mark.slow
async def test_acknowledged_messages_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    store = SQLStore(url)
    await store.open()
    await store.save_session(Session(session_id="s", user_id="crash"))
    await store.close()
    rng = random.Random(1234)
    acknowledged: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_no in range(ROUNDS):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.helpers.append_forever",
            url,
            "s",
            str(round_no * 100_000),
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert child.stdout is not None
        first = await asyncio.wait_for(child.stdout.readline(), 30)  # it is writing now
        acked = [int(first)]
        await asyncio.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        rest = await child.stdout.read()  # whatever it acknowledged before it died
        acked.extend(int(line) for line in rest.decode().split())
        await child.wait()
        acknowledged.extend(acked)

        reopened = SQLStore(url)
        records = await reopened.load_records("s")
        stored = [r.seq for r in records]
        assert stored == list(range(1, len(stored) + 1)), "gap or disorder after a crash"
        lost = sorted(set(acknowledged) - set(stored))
        assert not lost, f"round {round_no}: lost acknowledged messages {lost[:5]}"
        for record in records[-3:]:
            assert record.message.content  # bodies decode, compressed or not
        assert await reopened.integrity_check() == []
        await reopened.close()
    assert len(acknowledged) > ROUNDS
