"""Bad requests get the one error body, with a message that says what to send instead."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from pathlib import Path

import httpx
import pytest

from agent_template.api.app import create_app
from tests.server_helpers import serve, server_settings


async def test_bad_requests_are_named_in_the_error_body(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path, max_request_bytes=4096))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        json_type = {"content-type": "application/json"}
        cases = [
            (
                client.post("/api/v1/messages", content=b"\xff\xfe{", headers=json_type),
                400,
                "send UTF-8 JSON",
            ),
            (
                client.post("/api/v1/messages", content=b"{bad", headers=json_type),
                422,
                "not valid JSON",
            ),
            (
                client.post("/api/v1/messages", json={"content": "x" * 5000}),
                413,
                "MAX_REQUEST_BYTES",
            ),
            (client.get("/api/v1/nothing-here"), 404, "No endpoint GET /api/v1/nothing-here"),
            (client.put("/health"), 405, "PUT is not allowed on /health"),
        ]
        for pending, status, words in cases:
            reply = await pending
            assert reply.status_code == status, reply.text
            body = reply.json()
            assert set(body) == {"error"}
            assert set(body["error"]) == {"code", "message", "details"}
            assert words in body["error"]["message"]
            assert "Traceback" not in reply.text
            assert reply.headers["x-request-id"]


async def test_a_client_leaving_an_sse_stream_early_stops_its_sending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(server_settings(tmp_path))
    body = json.dumps({"content": "tell me about the longest rivers of the world " * 40})
    request = (
        "POST /api/v1/messages/stream HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    async with serve(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            await reader.readuntil(b"id: 2\n")  # mid-stream...
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # ...the client is gone at once (a reset, as a killed one)
            await asyncio.sleep(0.5)
        # what was already queued is not written into the dead connection chunk by chunk
        assert not [r for r in caplog.records if "socket.send()" in r.getMessage()]
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/api/v1/sessions")).status_code == 200
