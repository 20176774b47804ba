"""The terminal client's WebSocket link (``frontend/connection.py``) against a real server:
streaming, refusals with a way forward, and resuming after an outage or a server restart
with the text whole and never doubled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from agent_template.api.app import create_app
from agent_template.api.protocol import ServerFrame
from agent_template.frontend.connection import (
    ClientError,
    Connection,
    LinkChanged,
    LinkState,
    ws_url,
)
from agent_template.frontend.rest import Api
from agent_template.services.providers.offline import TestProvider
from tests.helpers.tcp_proxy import TcpProxy
from tests.server_helpers import serve, server_settings
from tests.test_server_cli import free_port, server_env, wait_ready
from tests.wire_server import Reply, WireServer

TIMEOUT_S = 30.0
ANSWER = " ".join(f"word{i}" for i in range(120))


async def until_complete(
    connection: Connection, *, on_text: Any = None
) -> tuple[str, list[ServerFrame | LinkChanged]]:
    """The answer's text, concatenated from stream_data frames, up to stream_complete."""
    text = ""
    seen: list[ServerFrame | LinkChanged] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for event in connection.events():
            seen.append(event)
            if isinstance(event, LinkChanged):
                continue
            if event.type == "stream_data":
                text += event.data["content"]
                if on_text is not None:
                    await on_text(text)
            elif event.type == "stream_complete":
                return text, seen
    raise AssertionError("the events ended before stream_complete")


@contextlib.asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[Connection]:
    connection = Connection(url, **options)
    await connection.open()
    try:
        yield connection
    finally:
        await connection.close()


def test_urls_of_a_server() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://agents.example.com/") == "wss://agents.example.com/ws"
    assert ws_url("ws://127.0.0.1:8000/ws") == "ws://127.0.0.1:8000/ws"
    assert ws_url("http://host/prefix") == "ws://host/prefix/ws"
    with pytest.raises(ClientError) as caught:
        ws_url("127.0.0.1:8000")
    assert caught.value.code == "invalid_url"
    assert "http://" in caught.value.hint


async def test_a_chat_streams_its_answer_to_the_end(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path), model=TestProvider([ANSWER]))
    async with serve(app) as base_url, opened(base_url) as connection:
        assert connection.state is LinkState.CONNECTED
        assert connection.hello is not None and connection.hello.user_id == "default"
        rid = await connection.chat("Hello", session_id="s1")
        text, seen = await until_complete(connection)
    assert text == ANSWER
    frames = [e for e in seen if isinstance(e, ServerFrame)]
    created = next(f for f in frames if f.type == "task_created")
    assert created.request_id == rid and created.session_id == "s1"
    assert isinstance(seen[0], LinkChanged) and seen[0].state is LinkState.CONNECTING
    assert LinkChanged(LinkState.CONNECTED) in seen


async def test_a_server_wanting_a_token_is_unauthorized_with_a_hint(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path, auth_required=True))
    async with serve(app) as base_url:
        for token in (None, "not-a-token"):
            connection = Connection(base_url, token=token)
            with pytest.raises(ClientError) as caught:
                await connection.open()
            assert caught.value.code == "unauthorized"
            assert "agent-template token create --user" in caught.value.hint
            assert "AGENT_CLIENT_TOKEN" in caught.value.hint
            assert connection.state is LinkState.CLOSED


async def test_no_server_is_unreachable_with_a_hint() -> None:
    port = free_port()
    connection = Connection(f"http://127.0.0.1:{port}")
    with pytest.raises(ClientError) as caught:
        await connection.open()
    assert caught.value.code == "server_unreachable"
    assert str(port) in caught.value.message
    assert "agent-server" in caught.value.hint and "--url" in caught.value.hint


async def test_another_protocol_version_is_a_mismatch() -> None:
    async def handler(ws: ServerConnection) -> None:
        hello = {"protocol": 999, "server_version": "9.0.0", "user_id": "default"}
        await ws.send(json.dumps({"type": "hello", "data": hello}))
        await ws.wait_closed()

    async with ws_serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(ClientError) as caught:
            await Connection(f"ws://127.0.0.1:{port}/ws").open()
    assert caught.value.code == "protocol_mismatch"
    assert "999" in caught.value.message
    assert "Upgrade" in caught.value.hint


async def test_messages_after_close_are_not_connected(tmp_path: Path) -> None:
    async with serve(create_app(server_settings(tmp_path))) as base_url:
        connection = Connection(base_url)
        await connection.open()
        await connection.close()
    with pytest.raises(ClientError) as caught:
        await connection.chat("hi", session_id=None)
    assert caught.value.code == "not_connected"
    events = [e async for e in connection.events()]  # ends: the link is closed
    assert events[-1] == LinkChanged(LinkState.CLOSED, "closed")


async def test_a_network_outage_mid_stream_resumes_without_loss_or_duplicate(
    tmp_path: Path,
) -> None:
    app = create_app(server_settings(tmp_path), model=TestProvider([ANSWER], delay=0.02))
    async with serve(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        async with (
            TcpProxy("127.0.0.1", port) as proxy,
            opened(f"http://127.0.0.1:{proxy.port}", max_backoff_s=0.5) as connection,
        ):
            cuts = 0

            async def cut(text: str) -> None:
                nonlocal cuts
                if cuts < 2 and len(text) > 150 * (cuts + 1):
                    cuts += 1
                    proxy.drop()  # every connection dropped, new ones refused for a while
                    await asyncio.sleep(0.3)
                    proxy.restore()

            await connection.chat("Tell me words", session_id=None)
            text, seen = await until_complete(connection, on_text=cut)
    assert cuts == 2
    assert text == ANSWER
    states = [e.state for e in seen if isinstance(e, LinkChanged)]
    assert states.count(LinkState.RECONNECTING) >= 2
    assert states[-1] is LinkState.CONNECTED
    completes = [e for e in seen if isinstance(e, ServerFrame) and e.type == "stream_complete"]
    assert len(completes) == 1 and completes[0].data["output"] == ANSWER


async def test_messages_sent_while_reconnecting_go_out_after(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path), model=TestProvider(["first", "second"]))
    async with serve(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        async with (
            TcpProxy("127.0.0.1", port) as proxy,
            opened(f"http://127.0.0.1:{proxy.port}", max_backoff_s=0.3) as connection,
        ):
            await connection.chat("one", session_id="s1")
            assert (await until_complete(connection))[0] == "first"
            proxy.drop()
            async with asyncio.timeout(TIMEOUT_S):
                async for event in connection.events():
                    if isinstance(event, LinkChanged) and event.state is LinkState.RECONNECTING:
                        break
            await connection.chat("two", session_id="s1")  # queued: the link is down
            proxy.restore()
            text, _ = await until_complete(connection)
    assert text == "second"


async def test_a_server_restart_mid_stream_resumes_by_itself(
    wire_server: WireServer, tmp_path: Path
) -> None:
    wire_server.script(Reply(text=ANSWER, text_chunk=8, delay=0.02))
    port = free_port()
    env = server_env(
        tmp_path,
        DEFAULT_MODEL_PROVIDER="openai",
        OPENAI_BASE_URL=wire_server.openai_base_url,
        OPENAI_API_KEY="k",
        SHUTDOWN_GRACE_S="20",  # the answer takes about two seconds: it completes
    )
    command = [sys.executable, "-c", "from agent_template.cli import server_main; server_main()"]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    second: subprocess.Popen[str] | None = None
    closes: list[str] = []
    try:
        await asyncio.to_thread(wait_ready, port, first)
        base_url = f"http://127.0.0.1:{port}"
        async with opened(base_url, max_backoff_s=0.5) as connection:
            stopped = False

            async def restart(text: str) -> None:
                nonlocal stopped, second
                if not stopped and len(text) > 100:
                    stopped = True
                    first.send_signal(signal.SIGTERM)

            await connection.chat("Tell me words", session_id="restarted")
            text, _ = await until_complete(connection, on_text=restart)
            # The answer completed within the grace; then the server closed with 1012.
            async with asyncio.timeout(TIMEOUT_S):
                async for event in connection.events():
                    if isinstance(event, LinkChanged) and event.state is LinkState.RECONNECTING:
                        closes.append(event.detail)
                        break
            await asyncio.to_thread(first.wait, TIMEOUT_S)
            second = start()
            async with asyncio.timeout(TIMEOUT_S):
                async for event in connection.events():
                    if isinstance(event, LinkChanged) and event.state is LinkState.CONNECTED:
                        break
            # The link is back by itself, and works: a second turn streams.
            wire_server.script(Reply(text="again", text_chunk=8))
            await connection.chat("Once more", session_id="restarted")
            again, _ = await until_complete(connection)
        api = Api(base_url)
        try:
            page = await api.history("restarted")
        finally:
            await api.aclose()
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                await asyncio.to_thread(child.wait, TIMEOUT_S)
    assert text == ANSWER
    assert closes == ["server restarting"]
    assert again == "again"
    answers = [m.text for _, m in page.items if m.role == "assistant"]
    assert answers == [ANSWER, "again"]


async def test_a_stream_gone_while_away_is_reported_on_its_task(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, stream_linger=0.0)
    app = create_app(settings, model=TestProvider([ANSWER], delay=0.01))
    async with serve(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        async with (
            TcpProxy("127.0.0.1", port) as proxy,
            opened(f"http://127.0.0.1:{proxy.port}", max_backoff_s=0.3) as connection,
        ):
            await connection.chat("Tell me words", session_id="away")
            task_id = ""
            async with asyncio.timeout(TIMEOUT_S):
                async for event in connection.events():
                    if isinstance(event, ServerFrame) and event.type == "stream_data":
                        task_id = event.task_id or ""
                        proxy.drop()
                        break
            loop = app.state.server.loop
            async with asyncio.timeout(TIMEOUT_S):  # the run ends and its stream is dropped
                while loop.get_task(task_id, user_id="default").state != "completed":
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
            proxy.restore()
            async with asyncio.timeout(TIMEOUT_S):
                async for event in connection.events():
                    if isinstance(event, ServerFrame) and event.type == "error":
                        break
    assert event.task_id == task_id and event.session_id == "away"
    assert event.data["code"] in ("not_retained", "not_found")
    assert "history" in event.data["message"]


async def test_a_silent_server_is_taken_for_dead_and_reconnected() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        hello = {"protocol": 1, "server_version": "0", "user_id": "u", "heartbeat_s": 0.2}
        await ws.send(json.dumps({"type": "hello", "data": hello}))
        await ws.wait_closed()  # and nothing more: no heartbeat, no close

    async with ws_serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with opened(f"ws://127.0.0.1:{port}/ws", max_backoff_s=0.2) as connection:
            states = []
            async with asyncio.timeout(TIMEOUT_S):
                async for event in connection.events():
                    if isinstance(event, LinkChanged):
                        states.append(event.state)
                        if states.count(LinkState.CONNECTED) == 2:
                            break
    assert LinkState.RECONNECTING in states
    assert connections == 2


async def test_open_after_the_link_closed_connects_again(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path), model=TestProvider(["first", "second"]))
    async with serve(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        async with TcpProxy("127.0.0.1", port) as proxy:
            connection = Connection(f"http://127.0.0.1:{proxy.port}", reconnect=False)
            await connection.open()
            try:
                await connection.chat("one", session_id="again")
                text, _ = await until_complete(connection)
                assert text == "first"
                proxy.drop()
                async with asyncio.timeout(TIMEOUT_S):
                    async for event in connection.events():
                        if isinstance(event, LinkChanged) and event.state is LinkState.CLOSED:
                            break
                proxy.restore()
                await connection.open()  # a new link, not the closed one
                assert connection.state is LinkState.CONNECTED
                await connection.chat("two", session_id="again")
                text, _ = await until_complete(connection)
                assert text == "second"
            finally:
                await connection.close()
