"""The examples in the README run as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_spec_python_api_example_runs_to_completion(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "DEFAULT_MODEL_PROVIDER": "test"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "You said: 'Hello, what can you help me with?'" in proc.stdout
    assert (tmp_path / "data" / "agent_template.db").exists()  # the session was stored


def test_readme_python_api_blocks_parse() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, "README.md", "exec")


def test_every_readme_example_runs_on_a_machine_without_keys(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    outputs = []
    client = (ROOT / "examples" / "websocket_client.py").read_text()
    for block in blocks:
        if "ws://localhost:8000/ws" in block:  # needs a server: run by the WebSocket tests
            assert block.strip() == client.strip(), "keep the README's copy of the example"
            continue
        proc = subprocess.run(
            [sys.executable, "-c", block],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{block}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        outputs.append(proc.stdout)
    assert "input_tokens" in outputs[0]  # the tool example prints its usage
    assert "offline test model" in outputs[1]  # the streaming example streamed an answer
