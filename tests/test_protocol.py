"""``docs/protocol.md`` says what the server sends: every example there is checked against
the frames a real server sends (field names and JSON types), and the other way round."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from agent_template.api.app import create_app
from agent_template.api.protocol import (
    CHUNK_FRAME_TYPES,
    ChatMessage,
    chunk_frame,
    chunk_text,
    client_message_adapter,
    parse_frame,
)
from agent_template.api.websocket import CLOSE_CODES
from agent_template.core.stream_gen import Chunk, StreamInfo
from agent_template.models import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorEvent,
    StreamGap,
    SubagentEvent,
    TaskPriority,
)
from agent_template.models.run_events import ReasoningDelta
from agent_template.services.providers.offline import TestProvider
from tests.server_helpers import serve, server_settings
from tests.test_server_ws import TIMEOUT_S, ws_url

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
OPTIONAL = {"request_id"}  # in a reply to a message that had one, and only then
OPAQUE = {"details"}  # an error's details differ by code


def examples(section: str) -> dict[str, list[dict[str, Any]]]:
    """The JSON examples of a ``## section`` of the doc, by their ``### `name` `` heading."""
    text = DOC.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, list[dict[str, Any]]] = {}
    for part in body.split("\n### ")[1:]:
        name = re.match(r"`([a-z_]+)`", part)
        assert name, part[:40]
        blocks = re.findall(r"```json\n(.*?)\n```", part, re.DOTALL)
        assert blocks, f"{name.group(1)} has no example"
        found[name.group(1)] = [json.loads(block) for block in blocks]
    return found


def shape(value: Any, key: str = "") -> Any:
    """A JSON value's field names and types (None matches anything: optional or absent)."""
    if value is None:
        return None
    if key in OPAQUE:
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return ["list", shape(value[0]) if value else None]
    assert isinstance(value, dict)
    return {k: shape(v, k) for k, v in value.items() if k not in OPTIONAL}


def same(documented: Any, sent: Any) -> bool:
    if documented is None or sent is None:
        return True
    if isinstance(documented, dict) and isinstance(sent, dict):
        return documented.keys() == sent.keys() and all(
            same(documented[k], sent[k]) for k in documented
        )
    if isinstance(documented, list) and isinstance(sent, list):
        return same(documented[1], sent[1])
    return bool(documented == sent)


async def read_until(ws: ClientConnection, kind: str, into: list[str]) -> dict[str, Any]:
    """Read frames (kept in ``into``) up to the first of type ``kind``."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            raw = await ws.recv()
            assert isinstance(raw, str)  # text frames, always
            into.append(raw)
            frame: dict[str, Any] = json.loads(raw)
            if frame["type"] == kind:
                return frame


async def frames_a_server_sends(tmp_path: Path) -> list[str]:
    """Raw frames of a real server, of every type a session can produce."""
    raw: list[str] = []
    settings = server_settings(tmp_path, ws_heartbeat_s=0.3, auth_required=True)
    app = create_app(settings, model=TestProvider(delay=0.005))
    async with serve(app) as base:
        state = app.state.server
        _, token = await state.tokens.create("ada")
        url = ws_url(base, f"?token={token}")
        async with connect(url) as a, connect(url) as b:
            await read_until(b, "hello", raw)
            await read_until(a, "hello", raw)
            todo = {"todos": [{"content": "Write the protocol doc", "status": "in_progress"}]}
            first = {"type": "chat", "content": f"call todo_write {json.dumps(todo)}"}
            await a.send(json.dumps({**first, "session_id": "doc", "request_id": "r1"}))
            await a.send(json.dumps({"type": "chat", "content": "And then?", "session_id": "doc"}))
            created = await read_until(a, "task_created", raw)
            await b.send(json.dumps({"type": "subscribe", "task_id": created["task_id"]}))
            await read_until(b, "subscribed", raw)
            await read_until(a, "task_completed", raw)
            await read_until(a, "task_completed", raw)
            await b.send(json.dumps({"type": "subscribe", "session_id": "doc", "request_id": "s"}))
            await read_until(b, "subscribed", raw)
            await state.sessions.rename_session("doc", "The protocol", user_id="ada")
            await state.loop.compact_session("doc")
            await read_until(b, "compaction", raw)
            for message, answer in (
                ({"type": "ping", "request_id": "p1"}, "pong"),
                ({"type": "unsubscribe", "session_id": "doc", "request_id": "u1"}, "unsubscribed"),
                ({"type": "subscribe", "session_id": "elsewhere", "request_id": "r7"}, "error"),
            ):
                await b.send(json.dumps(message))
                await read_until(b, answer, raw)
            await read_until(b, "heartbeat", raw)
            await state.sessions.delete_session("doc", user_id="ada")
            await read_until(a, "session_deleted", raw)
        async with connect(ws_url(base)) as refused:  # no token
            await read_until(refused, "error", raw)
    # Frames a short session does not produce, made by the server's own encoder.
    info = StreamInfo("t1", user_id="ada", session_id="doc", task_id="t1")
    for chunk in (
        Chunk(info, 2, ReasoningDelta(text="The user greets me.")),
        Chunk(info, 1, StreamGap(from_seq=1, to_seq=120, reason="expired"), 120),
        Chunk(info, 11, ErrorEvent(code="provider_timeout", message="Too slow.", retryable=True)),
        Chunk(
            info,
            7,
            ApprovalRequested(
                approval_id="ap_1",
                call_id="c1",
                tool="shell",
                arguments='{"command": "git push"}',
                reason="shell(git push) needs approval",
                parts=["git push"],
                expires_at=1.0,
            ),
        ),
        Chunk(info, 8, ApprovalResolved(approval_id="ap_1", call_id="c1", decision="approve")),
        Chunk(
            info,
            12,
            SubagentEvent(
                task_id="t2",
                call_id="c2",
                agent="researcher",
                event={"type": "text_delta", "text": "Found it"},
            ),
        ),
    ):
        raw.append(chunk_text(chunk))
    raw.append(await _approval_answered(tmp_path))
    return raw


async def test_the_doc_describes_every_frame_the_server_sends(tmp_path: Path) -> None:
    documented = examples("Server frames")
    for name, frames in documented.items():
        for frame in frames:
            assert frame["type"] == name and isinstance(frame["data"], dict), frame
            parse_frame(json.dumps(frame))  # what clients parse frames with
    raw = await frames_a_server_sends(tmp_path)
    assert all(text.startswith('{"type":"') for text in raw)  # ``type`` always comes first
    sent = [json.loads(text) for text in raw]
    unmatched = {(name, i) for name, frames in documented.items() for i in range(len(frames))}
    for frame in sent:
        kind = frame["type"]
        assert kind in documented, f"the doc does not describe {kind!r}: {frame}"
        fits = [i for i, doc in enumerate(documented[kind]) if same(shape(doc), shape(frame))]
        assert fits, f"no example of {kind!r} has the fields the server sent: {frame}"
        unmatched -= {(kind, i) for i in fits}
    assert not unmatched, f"examples the server never sent that way: {sorted(unmatched)}"
    assert set(CHUNK_FRAME_TYPES.values()) <= set(documented)


async def _approval_answered(tmp_path: Path) -> str:
    """An ``approve`` message answered by a real server, for a request stored for it."""
    from agent_template.services.storage.records import ApprovalRecord

    app = create_app(server_settings(tmp_path / "approvals"), model=TestProvider())
    async with serve(app) as base:
        state = app.state.server
        await state.loop.approvals.store.insert_approval(
            ApprovalRecord(
                id="ap_doc",
                task_id="t1",
                session_id="doc",
                user_id="default",
                call_id="c1",
                tool="shell",
                arguments='{"command": "git push"}',
                reason="shell(git push) needs approval",
                parts='["git push"]',
                state="pending",
                message=None,
                created_at=time.time(),
                expires_at=time.time() + 60,
            )
        )
        async with connect(ws_url(base)) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "approve",
                        "approval_id": "ap_doc",
                        "decision": "approve",
                        "request_id": "a1",
                    }
                )
            )
            into: list[str] = []
            await read_until(ws, "approval_answered", into)
    return into[-1]


def test_client_examples_are_messages_the_server_accepts() -> None:
    documented = examples("Client messages")
    kinds = {m.model_fields["type"].annotation.__args__[0] for m in _message_models()}
    assert set(documented) == kinds
    for name, messages in documented.items():
        for message in messages:
            parsed = client_message_adapter.validate_python(message)
            assert parsed.type == name


def _message_models() -> list[Any]:
    from agent_template.api import protocol

    return [
        protocol.ChatMessage,
        protocol.CancelMessage,
        protocol.SubscribeMessage,
        protocol.UnsubscribeMessage,
        protocol.PingMessage,
        protocol.ApproveMessage,
    ]


def test_every_close_code_is_documented() -> None:
    table = DOC.read_text().split("## Close codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", table, re.MULTILINE)}
    assert set(CLOSE_CODES) <= documented


@pytest.mark.parametrize(
    ("given", "expected"), [(2, TaskPriority.HIGH), ("high", TaskPriority.HIGH), (None, None)]
)
def test_chat_priority_is_a_number_or_its_name(given: Any, expected: Any) -> None:
    message = ChatMessage.model_validate({"type": "chat", "content": "x", "priority": given})
    assert message.priority == expected


def test_a_chunk_is_encoded_once_and_shared() -> None:
    info = StreamInfo("t1", session_id="s", task_id="t1")
    chunk = Chunk(info, 1, ReasoningDelta(text="hm"))
    text = chunk_text(chunk)
    assert chunk_text(chunk) is text  # the second connection reuses the first one's text
    assert chunk_frame(chunk) == text.encode()
    assert json.loads(text) == {
        "type": "reasoning_data",
        "data": {"content": "hm"},
        "session_id": "s",
        "task_id": "t1",
        "seq": 1,
        "last_seq": 1,
    }
