"""``configure_logging``: JSON and text lines with the context ids, rotation, redaction."""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agent_template.utils.logging_setup import CONTEXT_FIELDS, REDACTED, configure_logging

API_TOKEN = "at_0123456789abcdef_" + "S" * 43
PROVIDER_KEY = "sk-proj-abcdefghijklmnop1234"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures the package's loggers; put them back as they were."""
    logger = logging.getLogger("agent_template")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_lines_carry_the_context_ids_and_simple_extras(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "agent.log"
    configure_logging("INFO", "json", path)  # the CLI's call
    log = logging.getLogger("agent_template.server")
    log.info(
        "GET %s %d",
        "/api/v1/stats",
        200,
        extra={
            "request_id": "r-1",
            "user_id": "alice",
            "session_id": "s-1",
            "task_id": "t-1",
            "status": 200,
            "duration_ms": 1.5,
            "cached": False,
            "payload": {"nested": "objects are left out"},
        },
    )
    log.debug("below the level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("agent_template.runtime").exception("run failed", extra={"task_id": "t"})

    first, second = _lines(path)
    assert list(first)[:4] == ["ts", "level", "logger", "message"]
    assert list(first)[4:8] == list(CONTEXT_FIELDS)
    assert first["message"] == "GET /api/v1/stats 200"
    assert first["level"] == "INFO"
    assert first["logger"] == "agent_template.server"
    assert {k: first[k] for k in ("request_id", "user_id", "session_id", "task_id")} == {
        "request_id": "r-1",
        "user_id": "alice",
        "session_id": "s-1",
        "task_id": "t-1",
    }
    assert (first["status"], first["duration_ms"], first["cached"]) == (200, 1.5, False)
    assert "payload" not in first
    assert second["level"] == "ERROR"
    assert second["task_id"] == "t"
    assert "RuntimeError: boom" in second["exception"]
    assert "request_id" not in second  # absent ids are left out, not null


def test_text_format_puts_the_ids_after_the_message(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    configure_logging("INFO", "text", path)
    logging.getLogger("agent_template.server").warning(
        "slow request", extra={"request_id": "r-2", "duration_ms": 1234.5, "note": "two words"}
    )

    [line] = path.read_text(encoding="utf-8").splitlines()
    assert line.endswith(
        " WARNING agent_template.server: slow request"
        ' request_id=r-2 duration_ms=1234.5 note="two words"'
    )


def test_the_console_gets_brief_lines_or_timestamped_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json", None)  # the CLI: warnings only, no traceback
    log = logging.getLogger("agent_template.cli")
    log.info("not shown")
    try:
        raise OSError("disk full")
    except OSError:
        log.warning("could not save", exc_info=True)
    brief = capsys.readouterr().err
    assert brief == "warning: could not save (OSError: disk full)\n"

    configure_logging("INFO", "json", None, console_level=logging.INFO, console_format="text")
    log.info("agent-server ready", extra={"request_id": "r-3"})
    text = capsys.readouterr().err
    assert text.rstrip().endswith("INFO agent_template.cli: agent-server ready request_id=r-3")


def test_the_file_rotates_and_keeps_the_backups_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    configure_logging("INFO", "json", path, max_bytes=2_000, backups=2)
    log = logging.getLogger("agent_template.server")
    for i in range(200):
        log.info("request %03d", i, extra={"request_id": f"r-{i}"})

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2_000
        assert all(entry["message"].startswith("request ") for entry in _lines(tmp_path / name))
    assert _lines(path)[-1]["request_id"] == "r-199"  # the newest lines are in the live file


def test_the_default_rotation_is_ten_megabytes_times_five(tmp_path: Path) -> None:
    configure_logging("INFO", "json", tmp_path / "agent.log")
    [handler] = [
        h
        for h in logging.getLogger("agent_template").handlers
        if isinstance(h, logging.handlers.RotatingFileHandler)
    ]
    assert (handler.maxBytes, handler.backupCount) == (10 * 1024 * 1024, 5)


def test_secrets_never_reach_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.log"
    configure_logging("DEBUG", "json", path, console_level=logging.DEBUG, console_format="text")
    log = logging.getLogger("agent_template.providers")
    log.info("calling with api_key=%s and Authorization: Bearer %s", "hunter2", "abc.def.ghi")
    log.info(
        "extras",
        extra={
            "authorization": "Bearer abc.def.ghi",
            "api_key": SecretStr("secret-value-1"),
            "password": "hunter2",
            "refresh_token": "rt-123456",
            "max_tokens": 4096,  # a count, not a credential
            "token_id": "0123456789abcdef",  # public
        },
    )
    log.info(
        "settings %s, user token %s, key %s", SecretStr("secret-value-2"), API_TOKEN, PROVIDER_KEY
    )
    log.info('payload {"password": "hunter2", "n": 1}')
    try:
        raise ConnectionError("cannot reach postgresql://app:hunter2@db:5432/agent")
    except ConnectionError:
        log.exception("database down")

    written = path.read_text(encoding="utf-8") + capsys.readouterr().err
    for secret in ("hunter2", "abc.def.ghi", "secret-value", "rt-123456", "S" * 43, PROVIDER_KEY):
        assert secret not in written
    entries = _lines(path)
    assert entries[0]["message"] == f"calling with api_key={REDACTED} and Authorization: {REDACTED}"
    extras = entries[1]
    assert extras["authorization"] == extras["api_key"] == extras["password"] == REDACTED
    assert extras["refresh_token"] == REDACTED
    assert (extras["max_tokens"], extras["token_id"]) == (4096, "0123456789abcdef")
    assert "at_0123456789abcdef_" in entries[2]["message"]  # the token's public id stays
    assert "postgresql://app:" in entries[4]["exception"]


def test_an_unknown_level_or_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging("LOUD", "json", None)
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        configure_logging("INFO", "xml", None)


def test_an_unwritable_log_file_is_reported_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    configure_logging("INFO", "json", blocker / "agent.log")
    logging.getLogger("agent_template.cli").warning("still logged")

    err = capsys.readouterr().err
    assert "cannot write the log file" in err
    assert "warning: still logged" in err
