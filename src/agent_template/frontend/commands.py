"""Slash commands of the terminal client: their names, help, parsing and completion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from agent_template.frontend.app import AgentClientApp

__all__ = ["COMMANDS", "Command", "SlashCommand", "complete", "help_text", "parse", "run_command"]


@dataclass(frozen=True, slots=True)
class Command:
    """A slash command the input understands."""

    name: str
    usage: str
    summary: str


COMMANDS: Final[tuple[Command, ...]] = (
    Command("new", "/new [title]", "start a new session"),
    Command("sessions", "/sessions", "list, search, switch, rename and delete sessions"),
    Command("compact", "/compact", "compact the session's context now"),
    Command("model", "/model [provider:model]", "show the model, or use another for new turns"),
    Command("cancel", "/cancel", "cancel the running turn of this session"),
    Command("approve", "/approve [deny|always]", "answer the oldest pending approval"),
    Command("help", "/help", "show keys and commands"),
    Command("quit", "/quit", "leave; the transcript is printed to the terminal"),
)
_NAMES: Final = tuple(command.name for command in COMMANDS)


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """A parsed slash command: its name and the rest of the line."""

    name: str
    argument: str


def parse(text: str) -> SlashCommand | None:
    """The slash command ``text`` is, or None when it is a chat message.

    A line that starts with ``//`` is a message that starts with ``/`` (the first slash is
    removed by :func:`chat_text`). Unknown names are returned too, so the caller can say so.
    """
    stripped = text.strip()
    if not stripped.startswith("/") or stripped.startswith("//") or "\n" in stripped:
        return None
    head, _, rest = stripped[1:].partition(" ")
    return SlashCommand(head.lower(), rest.strip())


def chat_text(text: str) -> str:
    """The message to send for ``text`` (``//x`` sends ``/x``)."""
    stripped = text.strip()
    return stripped[1:] if stripped.startswith("//") else stripped


def complete(text: str) -> tuple[str, list[str]]:
    """Tab completion of a slash command: the completed text and the candidate names.

    One candidate: the whole name plus a space. Several: their longest common prefix.
    """
    if not text.startswith("/") or " " in text or "\n" in text:
        return text, []
    prefix = text[1:].lower()
    matches = [name for name in _NAMES if name.startswith(prefix)]
    if not matches:
        return text, []
    if len(matches) == 1:
        return f"/{matches[0]} ", matches
    common = matches[0]
    for name in matches[1:]:
        while not name.startswith(common):
            common = common[:-1]
    return f"/{common}", matches


def help_text() -> str:
    """Keys and slash commands, as Markdown."""
    rows = "\n".join(f"| `{c.usage}` | {c.summary} |" for c in COMMANDS)
    return f"""\
## Commands

| command | does |
|---|---|
{rows}

## Keys

| key | does |
|---|---|
| `Enter` | send (`Ctrl+J` or `Shift+Enter`: new line) |
| `Up` / `Down` on the first / last line | previous / next input |
| `Tab` | complete a slash command |
| `Ctrl+S` | sessions |
| `Ctrl+T` | tasks and todos panel |
| `Ctrl+Y` | copy the last answer |
| `Ctrl+B` | copy the last code block |
| `y` / `b` on a focused message | copy it / its code blocks |
| `F2` | mouse mode: release the mouse so the terminal selects text |
| `F3` | dark / light theme |
| `Escape` | back to the input |
| `Ctrl+Q` | quit |
"""


async def run_command(app: AgentClientApp, command: SlashCommand) -> None:
    """Carry out a slash command in ``app``; failures are shown, never raised."""
    from agent_template.frontend.connection import ClientError

    try:
        await _run(app, command)
    except ClientError as error:
        app.notify(f"{error.message} {error.hint}".strip(), severity="error")


async def _run(app: AgentClientApp, command: SlashCommand) -> None:
    name, arg = command.name, command.argument
    if name == "new":
        info = await app.api.create_session(arg or None)
        await app.switch_session(info.session_id)
        app.notify(f"New session {info.session_id}.", timeout=2)
    elif name == "sessions":
        app.action_sessions()
    elif name == "compact":
        if app.session_id is None:
            app.notify("Nothing to compact yet: send a message first.")
            return
        result = await app.api.compact(app.session_id)
        before, after = result.get("tokens_before"), result.get("tokens_after")
        app.chat.notice(f"Compacted: {before} → {after} tokens.")
    elif name == "model":
        if arg:
            app.model = arg
            app.status.status.model = arg
            app.notify(f"New turns use {arg}.", timeout=3)
            app.refresh_status()
        else:
            models = await app.api.models()
            app.chat.notice("Models: " + json.dumps(models, ensure_ascii=False))
    elif name == "cancel":
        live = [row for row in app.tasks.live if row.parent_id is None]
        if not live:
            app.notify("Nothing is running in this session.")
        for row in live:
            await app.connection.cancel(row.task_id)
    elif name == "approve":
        request = app.approvals.oldest()
        decision = arg.lower() or "approve"
        if decision not in ("approve", "deny", "always"):
            app.notify("Use /approve, /approve deny or /approve always.", severity="warning")
        elif request is None:
            app.notify("No approval is pending.")
        else:
            await app.answer_approval(str(request["approval_id"]), decision)
    elif name == "help":
        app.action_help()
    elif name == "quit":
        await app.action_quit()
    else:
        app.notify(f"Unknown command /{name}. Type /help for the list.", severity="warning")
