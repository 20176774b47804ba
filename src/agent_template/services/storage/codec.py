"""Message bodies as stored: JSON, LZ4-framed above a size threshold."""

from __future__ import annotations

from typing import Any

import lz4.frame

from agent_template.models import Message, message_adapter

__all__ = ["COMPRESS_ABOVE_BYTES", "ENCODING_JSON", "ENCODING_LZ4", "decode", "encode"]

ENCODING_JSON = 0
ENCODING_LZ4 = 1
COMPRESS_ABOVE_BYTES = 1024  # smaller bodies gain little and cost a frame header


def encode(message: Message, threshold: int = COMPRESS_ABOVE_BYTES) -> tuple[int, bytes]:
    raw = message_adapter.dump_json(message)
    if len(raw) > threshold:
        packed: bytes = lz4.frame.compress(raw)
        if len(packed) < len(raw):
            return ENCODING_LZ4, packed
    return ENCODING_JSON, raw


def decode(encoding: int, body: Any) -> Message:
    data = bytes(body)
    if encoding == ENCODING_LZ4:
        data = lz4.frame.decompress(data)
    return message_adapter.validate_json(data)
