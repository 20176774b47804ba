"""The built wheel installs with plain pip and its commands work (``scripts/check_wheel.sh``).

It builds, downloads the dependencies and makes a virtual environment, so it runs under
``CI=true`` or with ``AGENT_TEST_WHEEL=1``, and is skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK_WHEEL_TIMEOUT_S = 900  # pip may download every dependency on a slow connection


def _wanted() -> bool:
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return ci or os.environ.get("AGENT_TEST_WHEEL", "") == "1"


@pytest.mark.slow
@pytest.mark.skipif(
    not _wanted(), reason="builds and installs the wheel: set CI=true or AGENT_TEST_WHEEL=1"
)
def test_the_wheel_installs_with_pip_and_runs_offline() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_wheel.sh")],
        capture_output=True,
        text=True,
        timeout=CHECK_WHEEL_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "check_wheel: PASS" in proc.stdout
    for step in ("agent-template run", "agent-server --help", "agent-client --help", "otel"):
        assert step in proc.stdout, f"the check skipped {step!r}:\n{proc.stdout}"
