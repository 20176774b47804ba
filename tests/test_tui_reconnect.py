"""The terminal client keeps its answer whole through a network outage and a server restart
mid-stream: driven by Pilot, reading what the app shows, not the connection underneath."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from agent_template.frontend.app import AgentClientApp
from agent_template.frontend.connection import Connection
from agent_template.frontend.rest import Api
from agent_template.frontend.screens.error import ErrorScreen
from agent_template.frontend.widgets.messages import AnswerView
from tests.helpers.tcp_proxy import TcpProxy
from tests.test_server_cli import agent_server, free_port, server_env, wait_ready
from tests.tui_helpers import SIZE, connected, running_server, send, until
from tests.wire_server import Reply, WireServer

ANSWER = " ".join(f"word{i}" for i in range(150))
TIMEOUT_S = 30.0


def answers(app: AgentClientApp) -> list[str]:
    return [e.text for e in app.chat.transcript.entries() if e.role == "assistant"]


def answer_text(app: AgentClientApp) -> str:
    views = list(app.chat.query(AnswerView))
    return views[-1].entry.text if views else ""


async def test_a_network_outage_mid_answer_leaves_the_answer_whole(tmp_path: Path) -> None:
    async with running_server(tmp_path, [ANSWER], delay=0.02) as served:
        port = int(served.url.rsplit(":", 1)[1])
        async with TcpProxy("127.0.0.1", port) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            app = AgentClientApp(Connection(url, max_backoff_s=0.5), Api(url))
            async with app.run_test(size=SIZE) as pilot:
                await connected(pilot, app)
                await send(pilot, app, "Tell me words")
                await until(pilot, lambda: len(answer_text(app)) > 200, "part of the answer")
                proxy.drop()
                await until(pilot, lambda: app.status.status.link == "reconnecting", "the drop")
                await asyncio.sleep(0.3)
                proxy.restore()
                await until(pilot, lambda: app.status.status.link == "connected", "reconnect")
                await until(pilot, lambda: ANSWER in answers(app), "the whole answer")
                await pilot.pause(0.2)
                assert answers(app) == [ANSWER]  # not one word lost, none doubled
                assert not isinstance(app.screen, ErrorScreen)
                await app.action_quit()


async def test_a_server_restart_mid_answer_reconnects_by_itself(
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

    def start() -> subprocess.Popen[str]:
        return agent_server("--port", str(port), env=env, cwd=tmp_path)

    children = [start()]
    try:
        await asyncio.to_thread(wait_ready, port, children[0])
        url = f"http://127.0.0.1:{port}"
        app = AgentClientApp(Connection(url, max_backoff_s=0.5), Api(url), session_id="kept")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await send(pilot, app, "Tell me words")
            await until(pilot, lambda: len(answer_text(app)) > 100, "part of the answer")
            children[0].send_signal(signal.SIGTERM)  # mid-answer: it drains, then 1012
            await until(pilot, lambda: app.status.status.link == "reconnecting", "the restart")
            await asyncio.to_thread(children[0].wait, TIMEOUT_S)
            children.append(start())
            await until(pilot, lambda: app.status.status.link == "connected", "the new server")
            await until(pilot, lambda: ANSWER in answers(app), "the whole answer")
            assert not isinstance(app.screen, ErrorScreen)

            wire_server.script(Reply(text="again", text_chunk=8))
            await send(pilot, app, "Once more")
            await until(pilot, lambda: "again" in answers(app), "the next answer")
            await pilot.pause(0.2)
            assert answers(app) == [ANSWER, "again"]
            stored = await app.api.history("kept")
            assert [m.text for _, m in stored.items if m.role == "assistant"] == [ANSWER, "again"]
            await app.action_quit()
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                await asyncio.to_thread(child.wait, TIMEOUT_S)


async def test_retry_on_the_error_screen_connects_once_the_server_is_up(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = AgentClientApp(Connection(url, max_backoff_s=0.5), Api(url))
    child: subprocess.Popen[str] | None = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ErrorScreen), "the error screen")
            assert app.status.status.link == "closed"
            child = agent_server("--port", str(port), env=server_env(tmp_path), cwd=tmp_path)
            await asyncio.to_thread(wait_ready, port, child)
            await pilot.press("r")
            await connected(pilot, app)
            assert not isinstance(app.screen, ErrorScreen)
            await send(pilot, app, "hello there")
            await until(pilot, lambda: any("hello there" in a for a in answers(app)), "answer")
            await app.action_quit()
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            await asyncio.to_thread(child.wait, TIMEOUT_S)
