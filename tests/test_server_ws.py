"""The WebSocket endpoint ``/ws`` against a real server (uvicorn) with real clients.

Clients are the ``websockets`` library's (``websockets.asyncio.client.connect``); the
spec's example runs as a subprocess. Slow, long answers come from the local OpenAI wire
server (``tests/wire_server.py``) with a delay per chunk, or from the offline model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent_template.api.app import create_app
from agent_template.api.deps import LOCAL_USER
from agent_template.services.providers.offline import TestProvider
from tests.server_helpers import serve, server_settings
from tests.wire_server import Reply, WireServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "websocket_client.py"
STORY = " ".join(f"word{i}" for i in range(300))
TIMEOUT_S = 20.0  # the most any single wait in these tests may take


# --------------------------------------------------------------------------- helpers


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws" + query


def wire_settings(tmp_path: Path, wire: WireServer, **overrides: Any) -> Any:
    return server_settings(
        tmp_path,
        default_model_provider="openai",
        openai_base_url=wire.openai_base_url,
        openai_api_key="k",
        **overrides,
    )


def slow_story(wire: WireServer, *, delay: float = 0.01) -> None:
    wire.script(Reply(text=STORY, text_chunk=16, delay=delay))


def state_of(app: Any) -> Any:
    return app.state.server


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def read_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Frames up to and including the first one ``done`` accepts."""
    frames = []
    while True:
        frame = await recv(ws)
        frames.append(frame)
        if done(frame):
            return frames


def of_type(kind: str, task_id: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == kind and (task_id is None or f.get("task_id") == task_id)


def stream_frames(frames: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("task_id") == task_id and "seq" in f]


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["data"]["content"] for f in frames if f["type"] == "stream_data")


def assert_contiguous(frames: list[dict[str, Any]], after: int = 0) -> None:
    """Each stream frame starts right after the one before: no gap, no duplicate."""
    expected = after + 1
    for f in frames:
        assert f["seq"] == expected, f"expected chunk {expected}, got {f['seq']}-{f['last_seq']}"
        assert f["last_seq"] >= f["seq"]
        expected = f["last_seq"] + 1


async def chat(ws: ClientConnection, content: str, **fields: Any) -> dict[str, Any]:
    """Send a chat; return its task_created frame."""
    await ws.send(json.dumps({"type": "chat", "content": content, **fields}))
    frames = await read_until(ws, of_type("task_created"))
    return frames[-1]


async def answer_of(app: Any, task_id: str, session_id: str, user: str = LOCAL_USER) -> str:
    state = state_of(app)
    async with asyncio.timeout(TIMEOUT_S):
        await state.loop.wait(task_id)
    messages = await state.sessions.get_messages(session_id, user_id=user)
    return str(messages[-1].text)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
def tracebacks() -> Iterator[list[logging.LogRecord]]:
    """Every error or traceback logged by the server (ours and uvicorn's)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info or record.levelno >= logging.ERROR:
                records.append(record)

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def serve_on(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``app`` on a socket already bound (like ``serve``, on a chosen port)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    runner = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if runner.done():
                runner.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 30)
        sock.close()


# --------------------------------------------------------------------------- the spec's example


async def test_spec_websocket_example_runs_verbatim(tmp_path: Path) -> None:
    """The spec's example, unchanged, against a real server: it connects to port 8000.

    When port 8000 is taken on this machine, the example's text runs with only the port
    substituted (nothing else differs).
    """
    source = EXAMPLE.read_text()
    assert 'uri = "ws://localhost:8000/ws"' in source
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", 8000))
        command = [sys.executable, str(EXAMPLE)]
    except OSError:  # port 8000 is busy here: the same text on a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        command = [sys.executable, "-c", source.replace("localhost:8000", f"localhost:{port}")]
    app = create_app(server_settings(tmp_path))
    async with serve_on(app, sock):
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert text.endswith("\n[Stream completed]\n")
        assert "You said: 'Hello, AI assistant!'" in text
        # demo_session did not exist: it was made for the (local) caller, who owns it now.
        state = state_of(app)
        session = await state.sessions.get_session("demo_session", user_id=LOCAL_USER)
        assert session.user_id == LOCAL_USER
        messages = await state.sessions.get_messages("demo_session", user_id=LOCAL_USER)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[-1].text in text


# --------------------------------------------------------------------------- streaming


async def test_chat_streams_one_envelope_in_order(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base, connect(ws_url(base)) as ws:
        hello = await recv(ws)
        assert hello["type"] == "hello"
        assert hello["data"]["protocol"] == 1
        assert hello["data"]["user_id"] == LOCAL_USER
        assert hello["data"]["server_version"]
        await ws.send(json.dumps({"type": "chat", "content": "hi there", "request_id": "r-1"}))
        frames = await read_until(ws, of_type("task_completed"))
        kinds = [f["type"] for f in frames]
        assert kinds[:2] == ["session_created", "task_created"]
        created = frames[1]
        task_id, session_id = created["task_id"], created["session_id"]
        assert created["request_id"] == "r-1" and frames[0]["request_id"] == "r-1"
        assert created["data"]["task_id"] == task_id
        assert kinds.index("stream_complete") == len(kinds) - 2  # then task_completed
        chunks = stream_frames(frames, task_id)
        assert_contiguous(chunks)
        assert all(f["session_id"] == session_id for f in chunks)
        done = frames[-2]["data"]
        assert done["status"] == "completed"
        assert set(done) >= {"status", "output", "usage", "turns"}
        assert text_of(chunks) == done["output"]
        assert "You said: 'hi there'" in done["output"]
        assert frames[-1]["data"]["state"] == "completed"
        assert await answer_of(app, task_id, session_id) == done["output"]
        assert len(state_of(app).connections) == 1
    assert not state_of(app).connections


async def test_ping_heartbeat_and_shutdown_close(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path, ws_heartbeat_s=0.1))
    async with serve(app) as base, connect(ws_url(base)) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "ping", "request_id": "p"}))
        frames = await read_until(ws, of_type("pong"))
        assert frames[-1]["request_id"] == "p"
        beats = await read_until(ws, of_type("heartbeat"))
        assert isinstance(beats[-1]["data"]["ts"], float)
        (connection,) = state_of(app).connections
        await connection.close(1012, "service restart")  # what shutdown does
        with pytest.raises(ConnectionClosed) as closed:
            await read_until(ws, lambda f: False)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "service restart")
        await until(lambda: not state_of(app).connections)


async def test_cancel_mid_stream_keeps_the_partial_answer(
    tmp_path: Path, wire_server: WireServer
) -> None:
    slow_story(wire_server)
    app = create_app(wire_settings(tmp_path, wire_server))
    async with serve(app) as base, connect(ws_url(base)) as ws:
        created = await chat(ws, "Tell a story", session_id="tale")
        task_id = created["task_id"]
        head = await read_until(ws, lambda f: f["type"] == "stream_data" and f["seq"] >= 5)
        await ws.send(json.dumps({"type": "cancel"}))  # the connection's latest task
        rest = await read_until(ws, of_type("task_completed", task_id))
        chunks = stream_frames(head + rest, task_id)
        assert_contiguous(chunks)
        done = next(f for f in rest if f["type"] == "stream_complete")
        assert done["data"]["status"] == "cancelled"
        assert rest[-1]["data"]["state"] == "cancelled"
        partial = text_of(chunks)
        assert partial and STORY.startswith(partial) and partial != STORY
        stored = await answer_of(app, task_id, "tale")
        assert stored and STORY.startswith(stored)


async def test_a_second_client_joins_mid_stream_without_gap_or_duplicate(
    tmp_path: Path, wire_server: WireServer
) -> None:
    slow_story(wire_server)
    wire_server.script(Reply(text="The second run."), Reply(text="Third."))
    app = create_app(wire_settings(tmp_path, wire_server))
    async with serve(app) as base, connect(ws_url(base)) as a:
        created = await chat(a, "Tell a story", session_id="shared")
        task_id = created["task_id"]
        head = await read_until(a, lambda f: f["type"] == "stream_data" and f["seq"] >= 10)
        seen = head[-1]["last_seq"]
        async with connect(ws_url(base)) as b, connect(ws_url(base)) as c:
            await recv(b)
            await recv(c)
            # b has chunks up to ``seen`` from elsewhere; c follows the whole session
            await b.send(json.dumps({"type": "subscribe", "task_id": task_id, "after_seq": seen}))
            await c.send(json.dumps({"type": "subscribe", "session_id": "shared"}))
            b_frames = await read_until(b, of_type("stream_complete", task_id))
            c_frames = await read_until(c, of_type("stream_complete", task_id))
            a_frames = await read_until(a, of_type("stream_complete", task_id))
            assert b_frames[0]["type"] == "subscribed"
            assert b_frames[0]["data"]["task_ids"] == [task_id]
            b_chunks = stream_frames(b_frames, task_id)
            assert_contiguous(b_chunks, after=seen)
            a_chunks = stream_frames(head + a_frames, task_id)
            a_before = [f for f in a_chunks if f["last_seq"] <= seen]
            assert text_of(a_before) + text_of(b_chunks) == STORY
            assert_contiguous(stream_frames(c_frames, task_id))  # from the first chunk
            assert text_of(c_frames) == STORY
            # a session subscription follows the session's later runs too
            second = await chat(a, "And another", session_id="shared")
            later = await read_until(c, of_type("stream_complete", second["task_id"]))
            assert [f["task_id"] for f in later if f["type"] == "task_created"] == [
                second["task_id"]
            ]
            assert text_of(stream_frames(later, second["task_id"])) == "The second run."
            # a chat on the session it follows: announced once, with its request_id; streamed once
            await c.send(
                json.dumps(
                    {
                        "type": "chat",
                        "content": "Me too",
                        "session_id": "shared",
                        "request_id": "mine",
                    }
                )
            )
            own = await read_until(
                c,
                lambda f: (
                    f["type"] == "task_completed"
                    and f.get("task_id") != task_id
                    and f.get("task_id") != second["task_id"]
                ),
            )
            announced = [f for f in own if f["type"] == "task_created"]
            assert len(announced) == 1 and announced[0]["request_id"] == "mine"
            own_chunks = stream_frames(own, announced[0]["task_id"])
            assert_contiguous(own_chunks)
            assert text_of(own_chunks) == "Third."
            await b.send(json.dumps({"type": "subscribe", "session_id": "nope"}))
            frames = await read_until(b, of_type("error"))
            assert frames[-1]["data"]["code"] == "not_found"


async def test_reconnect_resumes_after_last_seq(tmp_path: Path, wire_server: WireServer) -> None:
    slow_story(wire_server)
    app = create_app(wire_settings(tmp_path, wire_server))
    async with serve(app) as base:
        async with connect(ws_url(base)) as ws:
            created = await chat(ws, "Tell a story", session_id="resume")
            task_id = created["task_id"]
            head = await read_until(ws, lambda f: f["type"] == "stream_data" and f["seq"] >= 8)
        last = head[-1]["last_seq"]  # the connection dropped here
        async with connect(ws_url(base)) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "subscribe", "task_id": task_id, "after_seq": last}))
            rest = await read_until(ws, of_type("stream_complete", task_id))
        chunks = stream_frames(rest, task_id)
        assert_contiguous(chunks, after=last)
        assert text_of(stream_frames(head, task_id)) + text_of(chunks) == STORY
        # after the run: the session subscription with after_seq resumes its last run
        async with connect(ws_url(base)) as ws:
            await recv(ws)
            await ws.send(
                json.dumps({"type": "subscribe", "session_id": "resume", "after_seq": last})
            )
            again = await read_until(ws, of_type("stream_complete", task_id))
        assert again[0]["data"]["task_ids"] == [task_id]
        replayed = stream_frames(again, task_id)  # a finished stream replays merged deltas
        assert_contiguous(replayed, after=last)
        assert text_of(replayed) == text_of(chunks)


async def test_what_is_no_longer_retained_is_said_plainly(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, stream_retain_chunks=5, stream_linger=0)
    app = create_app(settings, model=TestProvider(delay=0.02))
    async with serve(app) as base, connect(ws_url(base)) as ws:
        await recv(ws)
        created = await chat(ws, "a message long enough for more than five chunks")
        task_id = created["task_id"]
        await read_until(ws, lambda f: f["type"] == "stream_data" and f["seq"] >= 10)
        # the stream keeps only its last chunks: a late reader is told which it missed
        async with connect(ws_url(base)) as late:
            await recv(late)
            await late.send(json.dumps({"type": "subscribe", "task_id": task_id, "after_seq": 0}))
            frames = await read_until(late, of_type("stream_complete", task_id))
        gap = frames[1]
        assert gap["type"] == "stream_gap" and gap["data"]["reason"] == "expired"
        assert gap["data"]["from_seq"] == gap["seq"] == 1
        assert gap["last_seq"] == gap["data"]["to_seq"] >= 1
        assert_contiguous(stream_frames(frames, task_id))  # the gap spans what is missing
        await read_until(ws, of_type("task_completed", task_id))
        # the run is over and nobody reads its stream: with no linger it is released
        await until(lambda: task_id not in state_of(app).loop.streams)
        await ws.send(json.dumps({"type": "subscribe", "task_id": task_id, "request_id": "s"}))
        frames = await read_until(ws, of_type("error"))
        assert frames[-1]["data"]["code"] == "not_retained"
        assert frames[-1]["request_id"] == "s"


# --------------------------------------------------------------------------- slow clients


BIG_WORDS = 2500
BIG_WORD = "x" * 2000 + " "  # 2500 deltas of 2 KB: more than the socket buffers hold


def big_model() -> TestProvider:
    """The offline model: a 5 MB answer to "big", a short one to anything else."""

    def answer(request: Any) -> str:
        said = request.messages[-1].text
        return BIG_WORD * BIG_WORDS if said == "big" else f"short answer to {said}"

    return TestProvider(script=answer)


@contextlib.asynccontextmanager
async def stalled_client(base: str) -> AsyncIterator[ClientConnection]:
    """A client that reads nothing until it is asked to: a tiny receive buffer, at most one
    frame queued, so the server's socket buffers fill up and its writes wait."""
    port = int(base.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    async with connect(
        ws_url(base),
        sock=sock,
        max_queue=1,
        max_size=None,
        ping_interval=None,
        close_timeout=0.5,
        compression=None,  # else the repetitive answer shrinks to nothing on the wire
    ) as ws:
        yield ws


async def test_a_stalled_client_holds_up_neither_the_run_nor_other_clients(
    tmp_path: Path,
) -> None:
    settings = server_settings(
        tmp_path, ws_queue_frames=8, stream_retain_bytes=64 * 1024 * 1024, checkpoint_interval=30
    )
    app = create_app(settings, model=big_model())
    state = None
    async with serve(app) as base, stalled_client(base) as stalled:
        state = state_of(app)
        await stalled.send(json.dumps({"type": "chat", "content": "big", "session_id": "big"}))
        await until(lambda: state.loop.list_tasks(session_id="big"))
        (task,) = state.loop.list_tasks(session_id="big")
        async with connect(ws_url(base), max_size=None) as other:
            await recv(other)
            await other.send(json.dumps({"type": "subscribe", "task_id": task.task_id}))
            seen = await read_until(other, of_type("stream_complete", task.task_id))
            # the run finished while the stalled client read nothing
            async with asyncio.timeout(TIMEOUT_S):
                await state.loop.wait(task.task_id)
            assert text_of(seen) == BIG_WORD * BIG_WORDS
            created = await chat(other, "hello", session_id="other")
            done = await read_until(other, of_type("stream_complete", created["task_id"]))
            assert done[-1]["data"]["output"] == "short answer to hello"
        (conn,) = state.connections
        # frames wait for it (it really is stalled: a reading client has none left by now),
        # and no more than its outbox holds
        assert 1 <= conn.pending <= conn.outbox.hard_limit
        # when it reads again it gets the whole answer, the deltas it fell behind on merged
        frames = await read_until(stalled, of_type("stream_complete", task.task_id))
        chunks = stream_frames(frames, task.task_id)
        assert_contiguous(chunks)
        assert text_of(chunks) == BIG_WORD * BIG_WORDS
        assert any(f["last_seq"] > f["seq"] for f in chunks)  # merged: fewer, larger frames
        assert len(chunks) < BIG_WORDS
    stored = await state.sessions.get_messages("big", user_id=LOCAL_USER)
    assert stored[-1].text == BIG_WORD * BIG_WORDS


async def test_a_client_that_takes_no_frame_is_closed_1013(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, ws_queue_frames=8, ws_heartbeat_s=0.2)
    app = create_app(settings, model=big_model())
    async with serve(app) as base, stalled_client(base) as stalled:
        state = state_of(app)
        await stalled.send(json.dumps({"type": "chat", "content": "big", "session_id": "big"}))
        peak = 0

        def given_up() -> bool:
            nonlocal peak
            peak = max([peak, *(c.pending for c in state.connections)])
            return not state.connections

        await until(given_up)  # the server let go of it, while it still read nothing
        assert peak <= 2 * settings.ws_queue_frames  # and what waited for it stayed bounded
        with pytest.raises(ConnectionClosed) as closed:
            await read_until(stalled, lambda f: False)  # it reads again: the rest, then the close
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        assert "too slow" in closed.value.rcvd.reason
        (task,) = state.loop.list_tasks(session_id="big")
        async with asyncio.timeout(TIMEOUT_S):
            await state.loop.wait(task.task_id)  # the run went on regardless


# --------------------------------------------------------------------------- bad input, leaving


async def test_malformed_messages_get_errors_and_the_connection_stays_open(
    tmp_path: Path,
) -> None:
    app = create_app(server_settings(tmp_path, max_request_bytes=1024))
    async with serve(app) as base, connect(ws_url(base)) as ws:
        await recv(ws)
        cases: list[tuple[str | bytes, str, str]] = [
            ("not json", "invalid_message", "not JSON"),
            ("[1, 2]", "invalid_message", "JSON object"),
            ('{"content": "x"}', "invalid_message", '"type"'),
            ('{"type": "shout"}', "invalid_message", "Unknown message type 'shout'"),
            ('{"type": "chat"}', "invalid_message", "content"),
            (
                '{"type": "chat", "content": "x", "priority": "urgent"}',
                "invalid_message",
                "priority",
            ),
            ('{"type": "subscribe"}', "invalid_message", "task_id or a session_id"),
            ('{"type": "cancel"}', "invalid_message", "task_id"),
            ('{"type": "cancel", "task_id": "nope"}', "not_found", "nope"),
            (b"\xff\xfe", "invalid_message", "not JSON"),
            (json.dumps({"type": "chat", "content": "x" * 2000}), "message_too_large", "1024"),
        ]
        for raw, code, words in cases:
            await ws.send(raw)
            frame = await recv(ws)
            assert frame["type"] == "error", raw
            assert frame["data"]["code"] == code, raw
            assert words in frame["data"]["message"], frame
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv(ws))["type"] == "pong"


async def test_a_client_leaving_mid_stream_stops_nothing(
    tmp_path: Path, wire_server: WireServer, tracebacks: list[logging.LogRecord]
) -> None:
    slow_story(wire_server, delay=0.005)
    app = create_app(wire_settings(tmp_path, wire_server))
    async with serve(app) as base:
        async with connect(ws_url(base)) as ws:
            created = await chat(ws, "Tell a story", session_id="left")
            await read_until(ws, lambda f: f["type"] == "stream_data" and f["seq"] >= 3)
        assert await answer_of(app, created["task_id"], "left") == STORY
        await until(lambda: not state_of(app).connections)
    assert not tracebacks, [r.getMessage() for r in tracebacks]


# --------------------------------------------------------------------------- users


async def test_refused_connections_close_1008_with_the_reason(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path, auth_required=True))
    async with serve(app) as base:
        for query, headers, code in [
            ("", {}, "auth_required"),
            ("?token=at_wrong", {}, "invalid_token"),
            ("", {"Authorization": "Basic abc"}, "invalid_token"),
        ]:
            async with connect(ws_url(base, query), additional_headers=headers) as ws:
                frame = await recv(ws)
                assert frame["type"] == "error" and frame["data"]["code"] == code
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1008
                assert closed.value.rcvd.reason.startswith(code)
    app = create_app(server_settings(tmp_path))
    async with serve(app) as base:
        evil = {"Origin": "http://evil.example"}
        async with connect(ws_url(base), additional_headers=evil) as ws:
            assert (await recv(ws))["data"]["code"] == "origin_not_allowed"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        local = {"Origin": "http://localhost:3000"}
        async with connect(ws_url(base), additional_headers=local) as ws:
            assert (await recv(ws))["type"] == "hello"


async def test_users_see_only_their_own_sessions_tasks_and_events(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path, auth_required=True))
    async with serve(app) as base:
        state = state_of(app)
        _, alice_token = await state.tokens.create("alice")
        _, bob_token = await state.tokens.create("bob")
        alice_headers = {"Authorization": f"Bearer {alice_token}"}
        async with (
            connect(ws_url(base), additional_headers=alice_headers) as alice,
            connect(ws_url(base, f"?token={bob_token}")) as bob,
        ):
            assert (await recv(alice))["data"]["user_id"] == "alice"
            assert (await recv(bob))["data"]["user_id"] == "bob"
            created = await chat(alice, "mine", session_id="notes-1")
            task_id = created["task_id"]
            await read_until(alice, of_type("task_completed", task_id))
            attempts = [
                {"type": "subscribe", "task_id": task_id},
                {"type": "subscribe", "session_id": "notes-1"},
                {"type": "cancel", "task_id": task_id},
                {"type": "chat", "content": "hi", "session_id": "notes-1"},
                {"type": "subscribe", "task_id": "no-such-task"},
            ]
            for attempt in attempts:
                await bob.send(json.dumps(attempt))
                frame = await recv(bob)
                assert frame["type"] == "error" and frame["data"]["code"] == "not_found"
                assert "alice" not in json.dumps(frame)
            # alice's later events never reach bob
            await alice.send(json.dumps({"type": "subscribe", "session_id": "notes-1"}))
            await read_until(alice, of_type("subscribed"))
            await state.sessions.rename_session("notes-1", "Notes", user_id="alice")
            renamed = await read_until(alice, of_type("session_updated"))
            assert renamed[-1]["session_id"] == "notes-1"
            await bob.send(json.dumps({"type": "ping"}))
            assert (await recv(bob))["type"] == "pong"  # nothing of alice's came before it
