"""Message content: stored history keeps loading, content parts round-trip, ``.text`` reads both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select

from agent_template.models import (
    AssistantMessage,
    DataPart,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningPart,
    ResourcePart,
    Session,
    TextPart,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    run_event_adapter,
    stream_event_adapter,
)
from agent_template.services.storage import SQLStore
from agent_template.services.storage import schema as tables
from agent_template.services.storage.codec import ENCODING_JSON, decode, encode

# The exact bytes the encoder wrote before messages had content parts (commit 32f7799).
STORED_USER = b'{"role":"user","content":"What is the weather in Paris?"}'
STORED_ASSISTANT = (
    b'{"role":"assistant","content":"Let me check.","tool_calls":[{"id":"call_1",'
    b'"name":"get_weather","arguments":"{\\"city\\": \\"Paris\\"}"}],"status":"complete",'
    b'"provider":"openai","model":"gpt-4o-mini"}'
)
STORED_TOOL = (
    b'{"role":"tool","tool_call_id":"call_1","name":"get_weather",'
    b'"content":"18C and sunny","is_error":false}'
)
STORED: list[tuple[bytes, Message]] = [
    (STORED_USER, UserMessage(content="What is the weather in Paris?")),
    (
        STORED_ASSISTANT,
        AssistantMessage(
            content="Let me check.",
            tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')],
            provider="openai",
            model="gpt-4o-mini",
        ),
    ),
    (
        STORED_TOOL,
        ToolResultMessage(tool_call_id="call_1", name="get_weather", content="18C and sunny"),
    ),
]


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    store = SQLStore(f"sqlite:///{tmp_path / 'db' / 'agent.db'}")
    await store.open()
    yield store
    await store.close()


@pytest.mark.parametrize(("raw", "expected"), STORED)
def test_todays_stored_bodies_decode_and_encode_to_the_same_bytes(
    raw: bytes, expected: Message
) -> None:
    message = decode(ENCODING_JSON, raw)
    assert message == expected
    assert isinstance(message.content, str)  # a plain string stays a plain string
    assert encode(message) == (ENCODING_JSON, raw)


async def test_todays_stored_rows_load_through_the_sql_store(sqlite_store: SQLStore) -> None:
    old, new = Session(), Session()
    await sqlite_store.save_session(old)
    await sqlite_store.save_session(new)
    engine = await sqlite_store.open()
    now = time.time()
    async with engine.begin() as conn:  # rows as an earlier version wrote them
        await conn.execute(
            insert(tables.messages),
            [
                {
                    "session_id": old.session_id,
                    "seq": seq,
                    "role": expected.role,
                    "status": "complete",
                    "encoding": ENCODING_JSON,
                    "body": raw,
                    "task_id": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for seq, (raw, expected) in enumerate(STORED, 1)
            ],
        )

    loaded = await sqlite_store.load_messages(old.session_id)
    assert loaded == [expected for _, expected in STORED]
    assert [m.text for m in loaded] == [
        "What is the weather in Paris?",
        "Let me check.",
        "18C and sunny",
    ]

    await sqlite_store.append_messages(new.session_id, loaded)
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(tables.messages.c.body)
            .where(tables.messages.c.session_id == new.session_id)
            .order_by(tables.messages.c.seq)
        )
        bodies = [bytes(row[0]) for row in rows]
    assert bodies == [raw for raw, _ in STORED]


async def test_content_parts_round_trip_through_the_sql_store(sqlite_store: SQLStore) -> None:
    session = Session()
    await sqlite_store.save_session(session)
    messages: list[Message] = [
        UserMessage(
            content=[
                TextPart(text="What is in this picture?"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                ImagePart(url="https://example.com/cat.jpg"),
            ]
        ),
        AssistantMessage(
            content=[
                ReasoningPart(text="A cat, clearly.", signature="sig-1", provider="anthropic"),
                ReasoningPart(redacted_data="opaque", provider="anthropic"),
                TextPart(text="A cat."),
            ],
            tool_calls=[ToolCall(id="toolu_1", name="lookup", arguments='{"q": "cat"}')],
            provider="anthropic",
        ),
        ToolResultMessage(
            tool_call_id="toolu_1",
            name="lookup",
            content=[
                TextPart(text="Found one."),
                ResourcePart(uri="file:///cats.md", mime_type="text/markdown", text="# Cats"),
                DataPart(data={"count": 1, "names": ["Tom"]}),
            ],
        ),
    ]
    await sqlite_store.append_messages(session.session_id, messages)
    loaded = await sqlite_store.load_messages(session.session_id)
    assert loaded == messages
    user, assistant, result = loaded
    assert isinstance(assistant, AssistantMessage)
    assert user.text == "What is in this picture?"
    assert assistant.text == "A cat."  # reasoning is not part of the text
    assert assistant.reasoning == "A cat, clearly."
    assert result.text == "Found one."


def test_text_joins_text_parts_and_reasoning_is_empty_for_plain_content() -> None:
    message = AssistantMessage(content=[TextPart(text="one"), TextPart(text="two")])
    assert message.text == "one\ntwo"
    assert message.reasoning == ""
    assert AssistantMessage(content="plain").reasoning == ""


@pytest.mark.parametrize(
    "fields", [{}, {"data": "iVBORw0KGgo="}], ids=["no source", "data without media type"]
)
def test_an_image_needs_a_source_and_data_its_media_type(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ImagePart(**fields)


def test_reasoning_delta_is_a_run_and_stream_event() -> None:
    data = {"type": "reasoning_delta", "text": "thinking..."}
    assert run_event_adapter.validate_python(data) == ReasoningDelta(text="thinking...")
    assert stream_event_adapter.validate_python(data) == ReasoningDelta(text="thinking...")
