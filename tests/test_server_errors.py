"""Bad requests get the one error body, with a message that says what to send instead."""

from __future__ import annotations

from pathlib import Path

import httpx

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
