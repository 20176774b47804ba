"""The documentation site builds in strict mode, and its runnable examples run as written.

A runnable block is a fenced ``python`` or ``bash`` block with the HTML comment
``<!-- runnable -->`` on the line right before its opening fence::

    <!-- runnable -->
    ```python
    print("hello")
    ```

The comment renders as nothing, so readers see a plain code block. Each runnable block runs
on its own, in a fresh temporary folder, with none of the settings' variables in the
environment (so no provider key: the offline ``test`` model answers) and ``.venv/bin`` first
on ``PATH`` (so bash blocks can call ``agent-template``). It must exit 0 without a traceback.
Mark runnable only blocks that need no server and no network.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent_template.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
MARKER = "<!-- runnable -->"
BLOCK = re.compile(
    r"^<!-- runnable -->\n```(?P<lang>[\w-]+)[^\n]*\n(?P<code>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
LANGUAGES = ("python", "bash")
# Pages about one concern, and how many runnable blocks each has at least.
CONCERN_PAGES = {
    "getting-started.md": 2,
    "agents-and-tools.md": 3,
    "providers.md": 2,
    "sessions.md": 3,
    "server.md": 1,
    "configuration.md": 1,
    "deployment.md": 1,
}


def _runnable_blocks() -> list[tuple[str, int, str, str]]:
    """(page, line, language, code) of every runnable block under docs/."""
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the opening fence
            name = page.relative_to(DOCS).as_posix()
            blocks.append((name, line, match["lang"], match["code"]))
    return blocks


BLOCKS = _runnable_blocks()


def _offline_env() -> dict[str, str]:
    """The environment without any setting's variable (keys, URLs, DATABASE_URL...)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    return env


@pytest.mark.slow
def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [str(VENV_BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index.html", "configuration/index.html", "reference/agent/index.html"):
        assert (site / page).is_file(), page
    # The settings table was generated: every setting's variable is on the page.
    configuration = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "settings-table" not in configuration
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in configuration]
    assert not missing, f"settings missing from configuration.md: {missing}"
    # The API reference rendered the objects, not just the headings.
    agent_page = (site / "reference" / "agent" / "index.html").read_text(encoding="utf-8")
    assert "run_sync" in agent_page and "model_settings" in agent_page
    # Docstrings' reStructuredText roles were turned into plain code.
    for page in (site / "reference").rglob("*.html"):
        assert ":class:<code>" not in page.read_text(encoding="utf-8"), page


@pytest.mark.parametrize(
    ("page", "line", "lang", "code"),
    BLOCKS,
    ids=[f"{page}:{line}" for page, line, _, _ in BLOCKS],
)
def test_runnable_block_runs_offline(
    page: str, line: int, lang: str, code: str, tmp_path: Path
) -> None:
    assert lang in LANGUAGES, f"{page}:{line}: runnable blocks are python or bash, not {lang}"
    if lang == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    proc = subprocess.run(
        command,
        cwd=tmp_path,
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = f"{page}:{line}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stderr, output
    assert proc.stdout.strip(), f"{page}:{line} printed nothing"


def test_every_concern_page_has_runnable_examples() -> None:
    counts: dict[str, int] = {}
    for page, _, _, _ in BLOCKS:
        counts[page] = counts.get(page, 0) + 1
    assert len(BLOCKS) >= 4
    short = {
        page: (counts.get(page, 0), least)
        for page, least in CONCERN_PAGES.items()
        if counts.get(page, 0) < least
    }
    assert not short, f"pages with fewer runnable blocks than expected (have, want): {short}"


def test_runnable_markers_all_precede_a_block() -> None:
    """A marker that is not right before a fence would silently leave its block untested."""
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        found = len(BLOCK.findall(text))
        assert text.count(MARKER) == found, f"{page.name}: a {MARKER} not right before a fence"


def test_package_page_lists_every_public_name() -> None:
    import agent_template

    text = (DOCS / "reference" / "package.md").read_text(encoding="utf-8")
    missing = [name for name in agent_template.__all__ if f"`{name}`" not in text]
    assert not missing, f"reference/package.md does not list {missing}"
