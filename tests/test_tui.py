"""The terminal client driven by Textual's Pilot against a real ``agent-server`` (the offline
model scripted to stream, call tools, start a subagent and ask for approval), over the real
WebSocket and REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_template.frontend.widgets.approval import ApprovalPrompt
from agent_template.frontend.widgets.messages import AnswerView, MessageView
from agent_template.frontend.widgets.tools import ToolPanel
from agent_template.services.providers.offline import TestTurn
from tests.tui_helpers import SIZE, connected, deployed, running_server, send, until

ANSWER = "Here is **bold** text.\n\n```python\nprint('hi')\n```\n\nDone."


@pytest.fixture(autouse=True)
def _clear_deployed() -> None:
    deployed.clear()


def answers(app: Any) -> list[AnswerView]:
    return list(app.chat.query(AnswerView))


async def test_an_answer_streams_as_markdown_and_the_status_bar_follows(tmp_path: Path) -> None:
    async with running_server(tmp_path, [ANSWER]) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await send(pilot, app, "Say hi")
            await until(pilot, lambda: any(t.done for t in app.chat.turns.values()), "the answer")
            (answer,) = answers(app)
            assert answer.entry.text == ANSWER
            assert not answer.has_class("streaming")
            user = app.chat.query(MessageView).first()
            assert user.entry.text == "Say hi"
            assert app.prompt.text == ""  # sent, so cleared
            status = app.status.status
            assert status.session and status.session != "(new)"  # the new session was adopted
            assert status.total_tokens > 0
            assert "offline" in status.model
            await until(pilot, lambda: bool(app.tasks.task_rows), "the task row")
            await until(
                pilot,
                lambda: [r.state for r in app.tasks.task_rows.values()] == ["completed"],
                "the task to complete",
            )
            await pilot.press("ctrl+y")
            assert app.clipboard == ANSWER
            await pilot.press("ctrl+b")
            assert app.clipboard == "print('hi')"
            await app.action_quit()
        text = app.return_value or ""
        assert "Say hi" in text and "print('hi')" in text


def panels(app: Any) -> list[ToolPanel]:
    return list(app.chat.query(ToolPanel))


async def test_a_tool_call_waits_for_an_approval_that_cannot_be_missed(tmp_path: Path) -> None:
    script = [TestTurn(tool_calls=[("deploy", {"target": "prod"})]), "Deployed."]
    async with running_server(tmp_path, script, ask=["deploy"]) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await send(pilot, app, "Ship it")
            await until(pilot, lambda: app.approval.display, "the approval prompt")
            prompt = app.query_one(ApprovalPrompt)
            assert prompt.has_focus  # the input was empty: the prompt takes the keys
            shown = str(prompt.query_one(".approval-body").render())
            assert "deploy" in shown and '"target": "prod"' in shown
            assert app.status.status.pending_approvals == 1
            (panel,) = panels(app)
            assert panel.status == "waiting"
            assert deployed == []
            await pilot.press("y")
            await until(pilot, lambda: panel.status == "ok", "the tool result")
            assert deployed == ["prod"]
            assert "deployed to prod" in str(panel.result.render())
            assert app.status.status.pending_approvals == 0
            assert not app.approval.display
            await until(pilot, lambda: any(t.done for t in app.chat.turns.values()), "the end")
            assert app.chat.last_answer is not None
            assert app.chat.last_answer.text == "Deployed."
            assert app.prompt.has_focus  # back to the input


async def test_a_pending_approval_is_loaded_at_start_and_never_asked_twice(
    tmp_path: Path,
) -> None:
    script = [TestTurn(tool_calls=[("deploy", {"target": "prod"})]), "Deployed."]
    async with running_server(tmp_path, script, ask=["deploy"]) as served:
        first = served.client()
        async with first.run_test(size=SIZE) as pilot:
            await connected(pilot, first)
            await send(pilot, first, "Ship it")
            await until(pilot, lambda: first.approval.display, "the approval prompt")
            session_id = first.session_id
            (request,) = first.approvals.pending.values()
            await first.action_quit()  # gone without answering
        assert session_id is not None
        second = served.client(session_id=session_id)
        async with second.run_test(size=SIZE) as pilot:
            await connected(pilot, second)
            await until(pilot, lambda: len(second.approvals) == 1, "the pending approval")
            assert second.approval.display
            assert second.approvals.oldest()["approval_id"] == request["approval_id"]
            await pilot.press("a")  # always, for this session
            await until(pilot, lambda: deployed == ["prod"], "the deploy")
            # The same request again (a replayed stream, a stale list): not asked again.
            second._add_approval(dict(request))
            assert len(second.approvals) == 0 and not second.approval.display


def research_script(request: Any) -> TestTurn | str:
    from agent_template.models import ToolResultMessage, UserMessage

    last = request.messages[-1]
    if isinstance(last, UserMessage) and "Find the answer" in last.text:
        return TestTurn(text="The answer is 42.")
    if isinstance(last, UserMessage):
        return TestTurn(
            text="Asking a helper.",
            tool_calls=[("subagent", {"type": "general", "task": "Find the answer"})],
        )
    assert isinstance(last, ToolResultMessage)
    return f"Helper said: {last.text}"


async def test_a_subagent_run_nests_under_the_call_that_started_it(tmp_path: Path) -> None:
    from agent_template.frontend.widgets.tools import SubagentView

    async with running_server(tmp_path, research_script) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await send(pilot, app, "Look it up")
            await until(pilot, lambda: any(t.done for t in app.chat.turns.values()), "the end")
            (panel,) = panels(app)
            assert panel.tool_name == "subagent"
            (child,) = panel.query(SubagentView)
            assert child.parent is not None and child in panel.children_box.children
            await until(pilot, lambda: "42" in child.text.text, "the child's words")
            assert "Find the answer" in panel.arguments.text
            assert app.chat.last_answer is not None
            assert "42" in app.chat.last_answer.text


async def test_todos_and_the_task_monitor_update_live(tmp_path: Path) -> None:
    todos = [
        {"content": "Write the docs", "status": "in_progress"},
        {"content": "Ship", "status": "pending"},
    ]
    script = [TestTurn(tool_calls=[("todo_write", {"todos": todos})]), "Planned."]
    async with running_server(tmp_path, script) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await pilot.press("ctrl+t")
            assert app.query_one("#side").display
            await send(pilot, app, "Plan it")
            await until(pilot, lambda: len(app.todos.items) == 2, "the todo list")
            assert [i["content"] for i in app.todos.items] == ["Write the docs", "Ship"]
            assert "Write the docs" in str(app.todos.render())
            await until(
                pilot,
                lambda: [r.state for r in app.tasks.task_rows.values()] == ["completed"],
                "the task",
            )
            (row,) = app.tasks.task_rows.values()
            assert row.tokens > 0 and row.elapsed(app.clock()) is not None
            assert app.tasks.row_count == 1


async def test_cancel_stops_the_running_turn(tmp_path: Path) -> None:
    long_answer = " ".join(f"word{i}" for i in range(400))
    async with running_server(tmp_path, [long_answer], delay=0.02) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await send(pilot, app, "Talk")
            await until(pilot, lambda: bool(answers(app)) and bool(app.tasks.live), "streaming")
            await send(pilot, app, "/cancel")
            await until(pilot, lambda: any(t.done for t in app.chat.turns.values()), "the end")
            (answer,) = answers(app)
            assert 0 < len(answer.entry.text) < len(long_answer)
            notices = [str(n.render()) for n in app.chat.query(".notice")]
            assert any("cancelled" in n for n in notices)


async def test_the_task_monitor_cancels_the_highlighted_task(tmp_path: Path) -> None:
    long_answer = " ".join(f"word{i}" for i in range(400))
    async with running_server(tmp_path, [long_answer], delay=0.02) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await pilot.press("ctrl+t")
            await send(pilot, app, "Talk")
            await until(pilot, lambda: bool(answers(app)) and bool(app.tasks.live), "streaming")
            app.tasks.focus()
            await pilot.press("x")
            await until(
                pilot,
                lambda: [r.state for r in app.tasks.task_rows.values()] == ["cancelled"],
                "the cancelled task",
            )
            (answer,) = answers(app)
            assert len(answer.entry.text) < len(long_answer)


async def test_slash_commands_complete_and_the_input_keeps_its_history(tmp_path: Path) -> None:
    async with running_server(tmp_path, ["One."]) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            app.prompt.load_text("/se")
            app.prompt.move_cursor(app.prompt.document.end)
            await pilot.press("tab")
            assert app.prompt.text == "/sessions "
            app.prompt.load_text("/c")
            await pilot.press("tab")
            await pilot.pause()
            assert app.prompt.text == "/c"
            assert app.hint.display and "/compact" in str(app.hint.render())
            app.prompt.load_text("line one")
            app.prompt.move_cursor(app.prompt.document.end)
            await pilot.press("ctrl+j")
            app.prompt.insert("line two")
            assert app.prompt.text == "line one\nline two"  # a new line, not a send
            await pilot.press("enter")
            await until(pilot, lambda: any(t.done for t in app.chat.turns.values()), "the end")
            assert app.prompt.text == ""
            app.prompt.move_cursor((0, 0))
            await pilot.press("up")
            assert app.prompt.text == "line one\nline two"
            await send(pilot, app, "/nonsense")
            await pilot.pause()
            assert app.prompt.text == ""  # an unknown command is said, not sent


async def test_a_server_that_is_down_gets_a_clear_screen_not_a_traceback(
    tmp_path: Path,
) -> None:
    import socket

    from agent_template.frontend.app import AgentClientApp
    from agent_template.frontend.connection import Connection
    from agent_template.frontend.rest import Api
    from agent_template.frontend.screens.error import ErrorScreen

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    url = f"http://127.0.0.1:{port}"
    app = AgentClientApp(Connection(url, reconnect=False), Api(url))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen), "the error screen")
        text = " ".join(str(w.render()) for w in app.screen.query("Static"))
        assert "server_unreachable" in text or "reach" in text.lower()
        await pilot.press("q")
    assert app.return_value == ""


async def test_sessions_list_search_switch_rename_and_delete(tmp_path: Path) -> None:
    from agent_template.frontend.screens.sessions import SessionsScreen
    from tests.tui_helpers import seed_session

    async with running_server(tmp_path) as served:
        await seed_session(served, "alpha", 10, title="Alpha work")
        await seed_session(served, "beta", 4, title="Beta")
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await send(pilot, app, "/sessions")
            await until(pilot, lambda: isinstance(app.screen, SessionsScreen), "the screen")
            screen = app.screen
            assert isinstance(screen, SessionsScreen)
            await until(pilot, lambda: len(screen.sessions) == 2, "the list")
            await pilot.press(*"Beta")
            await until(
                pilot, lambda: [s.session_id for s in screen.sessions] == ["beta"], "search"
            )
            await pilot.press("enter")
            await until(pilot, lambda: app.session_id == "beta", "the switch")
            await until(pilot, lambda: len(app.chat.transcript.entries()) == 4, "the history")
            assert app.chat.transcript.entries()[0].text.startswith("Question 0")
            assert app.status.status.session == "beta"
            # rename and delete
            await pilot.press("ctrl+s")
            await until(pilot, lambda: isinstance(app.screen, SessionsScreen), "the screen")
            screen = app.screen
            assert isinstance(screen, SessionsScreen)
            await until(pilot, lambda: len(screen.sessions) == 2, "the list")
            options = screen.query_one("#session-list")
            options.focus()
            first = screen.sessions[0].session_id
            await pilot.press("ctrl+r")
            box = screen.query_one("#session-rename")
            assert box.has_focus
            box.value = "Renamed"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(
                pilot,
                lambda: any(s.title == "Renamed" for s in screen.sessions),
                "the new title",
            )
            assert next(s for s in screen.sessions if s.title == "Renamed").session_id == first
            options.focus()
            await pilot.press("ctrl+d", "ctrl+d")
            await until(pilot, lambda: len(screen.sessions) == 1, "the deletion")
            remaining = {s.session_id for s in await app.api.sessions()}
            assert first not in remaining and len(remaining) == 1


async def test_history_loads_newest_first_and_older_pages_as_you_scroll_up(
    tmp_path: Path,
) -> None:
    from tests.tui_helpers import seed_session, stored_conversation

    async with running_server(tmp_path) as served:
        await seed_session(served, "long", 130)
        app = served.client(session_id="long")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await until(pilot, lambda: app.chat.max_scroll_y > 0, "the first page")
            await pilot.pause()
            first_page = len(app.chat.query(".message"))
            assert 0 < first_page <= 50
            assert app.chat.older is not None
            expected = stored_conversation(130)
            assert app.chat.transcript.entries()[-1].text == expected[-1].text
            assert app.chat.scroll_y == app.chat.max_scroll_y  # the end is shown
            app.chat.focus()
            for _ in range(5):
                app.action_older()
                await until(pilot, lambda: not app.chat.loading_older, "a page")
            await until(pilot, lambda: app.chat.older is None, "the start")
            entries = app.chat.transcript.entries()
            assert entries[0].text == expected[0].text
            assert len(app.chat.query(".message")) > first_page  # nothing was pruned
            await app.action_quit()
        text = app.return_value or ""
        assert "Question 0:" in text and text.index("Question 0:") < text.index("Question 20:")


async def test_long_history_stays_reachable_while_far_pages_are_parked(tmp_path: Path) -> None:
    from agent_template.frontend.widgets.chat import HistoryPage
    from tests.tui_helpers import seed_session, stored_conversation

    async with running_server(tmp_path) as served:
        await seed_session(served, "long", 600)
        app = served.client(session_id="long")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await until(pilot, lambda: app.chat.max_scroll_y > 0, "the first page")
            app.chat.focus()
            while app.chat.older is not None:
                app.action_older()
                await until(pilot, lambda: not app.chat.loading_older, "a page")
            await pilot.pause(0.3)
            pages = app.chat.pages
            assert len(pages) >= 10
            # at the top: the first messages are built, the pages far below are parked
            assert not pages[0].parked and pages[-1].parked
            first = app.chat.query(MessageView).first()
            assert "Question 0:" in first.entry.text
            mounted = len(app.chat.query(MessageView))
            assert mounted < 200  # a few pages' worth, not 600 messages
            assert len(app.chat.transcript.entries()) > 500  # yet all of it is kept

            # back at the end: the newest messages are rebuilt where they were
            height = app.chat.virtual_size.height
            app.chat.scroll_end(animate=False)
            await pilot.pause(0.3)
            assert pages[-1].parked is False and pages[0].parked is True
            assert app.chat.virtual_size.height == height  # parking kept every height
            last = list(app.chat.query(MessageView))[-1]
            assert last.entry.text == stored_conversation(600)[-1].text
            assert all(isinstance(p, HistoryPage) for p in pages)

            # the middle: the text at the top of the screen stays where it was
            app.chat.scroll_to(y=height // 2, animate=False)
            await pilot.pause(0.3)
            before = app.chat.scroll_y
            view = app.chat.content_region
            on_screen = [p for p in pages if p.region.overlaps(view)]
            assert on_screen and not any(p.parked for p in on_screen)
            assert any(p.parked for p in pages)  # both ends are far from the middle
            await pilot.pause(0.3)
            assert app.chat.scroll_y == before

            # scrolled, then another session shown before the pages were placed
            app.chat.scroll_home(animate=False)
            await app.switch_session("long")
            await pilot.pause(0.3)
            assert app.is_running and app.chat.pages[0].parked is False
            await app.action_quit()


async def test_live_turns_go_in_boxes_and_far_ones_are_parked(tmp_path: Path) -> None:
    from agent_template.frontend.widgets.chat import LIVE_TURNS

    words = "\n\n".join(f"Paragraph {i} of a long answer." for i in range(12))
    async with running_server(tmp_path, lambda request: words) as served:
        app = served.client()
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            turns = LIVE_TURNS * 4
            for i in range(turns):
                await send(pilot, app, f"question {i}")
                await until(
                    pilot,
                    lambda i=i: len([t for t in app.chat.turns.values() if t.done]) == i + 1,
                    f"answer {i}",
                )
            await pilot.pause(0.3)
            boxes = app.chat.live_pages
            assert len(boxes) == 4
            assert boxes[0].parked and not boxes[-1].parked
            assert not any(child.display for child in boxes[0].children)  # hidden, kept
            # a parked box's answers are one widget each, as in the stored history
            assert not boxes[0].query(AnswerView)
            compact = [m for m in boxes[0].query(MessageView) if m.entry.role == "assistant"]
            assert [m.entry.text for m in compact] == [words] * LIVE_TURNS
            roles = [e.role for e in app.chat.transcript.entries()]
            assert roles.count("assistant") == turns
            height = app.chat.virtual_size.height

            app.chat.scroll_home(animate=False)
            await pilot.pause(0.3)
            assert not boxes[0].parked and boxes[-2].parked  # the last box is never parked
            assert all(child.display for child in boxes[0].children)
            # (the compact answers may differ from the streamed ones by a line or so)
            assert abs(app.chat.virtual_size.height - height) <= LIVE_TURNS * 2
            assert app.chat.scroll_y == 0
            first = app.chat.query(MessageView).first()
            assert first.entry.text == "question 0"
            await app.action_quit()
