"""``agent-template token ...``: the server's bearer tokens, in the database of DATABASE_URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from agent_template.api.auth import TokenStore

token_app = typer.Typer(
    help="Create, list and revoke the bearer tokens of agent-server.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

_T = TypeVar("_T")


def _with_tokens(job: Callable[[TokenStore], Awaitable[_T]]) -> _T:
    """Run ``job`` with the tokens of DATABASE_URL; a storage or argument error exits 1."""
    from agent_template.api.auth import TokenStore
    from agent_template.cli import _settings
    from agent_template.errors import AgentTemplateError
    from agent_template.services.storage import SQLStore

    store = SQLStore(_settings().database_url)

    async def run() -> _T:
        try:
            return await job(TokenStore(store))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (AgentTemplateError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@token_app.command("create")
def create_token(
    user: Annotated[str, typer.Option(help="The user the token acts as.")],
    name: Annotated[
        str | None, typer.Option(help="A label to recognise it by, such as 'laptop'.")
    ] = None,
) -> None:
    """Create a token and print it; it is shown only this once."""
    info, token = _with_tokens(lambda tokens: tokens.create(user, name))
    label = f" ({info.name})" if info.name else ""
    typer.echo(
        f"Created token {info.token_id}{label} for user {info.user_id!r}. "
        "Copy it now: it is not shown again.",
        err=True,
    )
    typer.echo(token)  # alone on stdout, so TOKEN=$(agent-template token create ...) works
    typer.echo(
        "Send it as the header 'Authorization: Bearer <token>', or on the WebSocket as "
        "ws://HOST:PORT/ws?token=<token>. Revoke it with "
        f"'agent-template token revoke {info.token_id}'.",
        err=True,
    )


@token_app.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
) -> None:
    """Tokens, oldest first, with when they were last used; never the tokens themselves."""
    rows = _with_tokens(lambda tokens: tokens.list(user))
    if not rows:
        typer.echo(f"No tokens for user {user!r}." if user else "No tokens.")
        return
    typer.echo(f"{'ID':<18}{'USER':<16}{'LABEL':<16}{'CREATED':<21}{'LAST USED':<21}REVOKED")
    for t in rows:
        typer.echo(
            f"{t.token_id:<18}{t.user_id[:15]:<16}{(t.name or '-')[:15]:<16}"
            f"{_when(t.created_at):<21}{_when(t.last_used_at):<21}{_when(t.revoked_at)}"
        )


@token_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (see 'token list').")],
) -> None:
    """Revoke a token; running servers refuse it within 30 seconds."""
    from agent_template.api.auth import CACHE_TTL_S, token_id_of

    wanted = token_id_of(token_id) or token_id  # the whole token works too
    if not _with_tokens(lambda tokens: tokens.revoke(wanted)):
        typer.echo(
            f"No token with id {wanted!r}. 'agent-template token list' shows the ids.", err=True
        )
        raise typer.Exit(1)
    typer.echo(
        f"Revoked token {wanted}. Running servers refuse it within {CACHE_TTL_S:.0f} seconds."
    )
