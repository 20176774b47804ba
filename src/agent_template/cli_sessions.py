"""``agent-template sessions ...`` and ``agent-template db ...``: stored conversations."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from agent_template.services.session_manager import SessionManager

sessions_app = typer.Typer(
    help="List, show and delete stored sessions.", no_args_is_help=True, rich_markup_mode="markdown"
)
db_app = typer.Typer(
    help="Database maintenance.", no_args_is_help=True, rich_markup_mode="markdown"
)


def _manager() -> SessionManager:
    from agent_template.cli import _settings
    from agent_template.services.session_manager import SessionManager

    return SessionManager(_settings())


def _go(job: Any) -> Any:
    from agent_template.errors import AgentTemplateError

    try:
        return asyncio.run(job)
    except AgentTemplateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@sessions_app.command("list")
def list_sessions(
    user: Annotated[str | None, typer.Option(help="Only this user's sessions.")] = None,
    limit: Annotated[int, typer.Option(help="How many to show.")] = 50,
    offset: Annotated[int, typer.Option(help="How many to skip.")] = 0,
) -> None:
    """Sessions, most recently active first."""

    async def job() -> None:
        manager = _manager()
        try:
            rows = await manager.list_sessions(user, limit=limit, offset=offset)
        finally:
            await manager.close()
        if not rows:
            typer.echo("No sessions.")
            return
        typer.echo(f"{'SESSION':<34}{'USER':<16}{'MESSAGES':>9}  {'LAST ACTIVE':<20}TITLE")
        for s in rows:
            typer.echo(
                f"{s.session_id:<34}{s.user_id[:15]:<16}{s.message_count:>9}  "
                f"{_when(s.last_active_at):<20}{s.title or ''}"
            )

    _go(job())


@sessions_app.command("show")
def show_session(
    session_id: Annotated[str, typer.Argument(help="The session to show.")],
    limit: Annotated[int | None, typer.Option(help="Only the last N messages.")] = None,
) -> None:
    """The history of a session, with tool calls, and any interrupted run marked."""
    from agent_template.models import AssistantMessage, ToolResultMessage

    async def job() -> None:
        manager = _manager()
        try:
            session = await manager.get_session(session_id)
            records = await manager.get_history(session_id, limit=limit)
            tasks = await manager.get_tasks(session_id)
        finally:
            await manager.close()
        title = f" - {session.title}" if session.title else ""
        typer.echo(f"Session {session.session_id}{title}")
        typer.echo(
            f"user {session.user_id}, {session.message_count} messages, "
            f"created {_when(session.created_at)}"
        )
        for r in records:
            m = r.message
            mark = "" if r.status == "complete" else f" [{r.status}]"
            packed = " (lz4)" if r.compressed else ""
            typer.echo(f"\n#{r.seq} {m.role}{mark}{packed}")
            if isinstance(m, ToolResultMessage):
                label = "error" if m.is_error else "result"
                typer.echo(f"  {m.name} {label}: {m.text}")
                continue
            if m.text:
                typer.echo(f"  {m.text}")
            if isinstance(m, AssistantMessage):
                for call in m.tool_calls:
                    typer.echo(f"  -> {call.name}({call.arguments})")
        unfinished = [t for t in tasks if t.state not in ("completed",)]
        for t in unfinished:
            why = f": {t.error}" if t.error else ""
            typer.echo(f"\ntask {t.task_id} {t.state}{why}")

    _go(job())


@sessions_app.command("delete")
def delete_session(
    session_id: Annotated[str, typer.Argument(help="The session to delete.")],
) -> None:
    """Delete a session with its messages, tasks and todos."""

    async def job() -> None:
        manager = _manager()
        try:
            await manager.delete_session(session_id)
        finally:
            await manager.close()
        typer.echo(f"Deleted session {session_id}.")

    _go(job())


@sessions_app.command("compact")
def compact_session(
    session_id: Annotated[str, typer.Argument(help="The session whose context to compact.")],
) -> None:
    """Summarise a session's older turns now; the stored history stays whole."""
    from agent_template.cli import _settings
    from agent_template.runtime import AgentLoop

    settings = _settings()

    async def job() -> None:
        loop = AgentLoop(settings)
        try:
            await loop.sessions.get_session(session_id)
            result = await loop.compact_session(session_id)
        finally:
            await loop.sessions.close()
        if result.strategy in ("", "none"):  # nothing was summarised or dropped
            typer.echo(
                f"Nothing to compact: session {session_id} takes about {result.tokens_before} "
                f"tokens, within its limit of {result.limit}."
            )
            return
        typer.echo(
            f"Compacted session {session_id}: about {result.tokens_before} -> "
            f"{result.tokens_after} tokens ({result.strategy}); limit {result.limit}."
        )

    _go(job())


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply the schema migrations to DATABASE_URL (start-up does this too)."""
    import traceback

    from agent_template.cli import _settings
    from agent_template.errors import StorageMigrationError
    from agent_template.services.storage import SQLStore
    from agent_template.services.storage.migrate import current_revision

    settings = _settings()

    async def job() -> None:
        store = SQLStore(settings.database_url)
        try:
            engine = await store.open()
            revision = await current_revision(engine)
        except StorageMigrationError as exc:  # the details are what this command is for
            cause = exc.__cause__ or exc
            typer.echo("".join(traceback.format_exception(cause)), err=True)
            raise
        finally:
            await store.close()
        typer.echo(f"Database {settings.database_url} is at revision {revision}.")

    _go(job())
