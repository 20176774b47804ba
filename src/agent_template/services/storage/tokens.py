"""Bearer-token rows in SQL (a part of :class:`SQLStore`).

Only the SQL lives here; making and checking tokens is :class:`agent_template.api.auth.TokenStore`'s
job. A row holds a key-derivation hash of the token's secret, never the secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from agent_template.services.storage import schema as s

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["ApiTokens", "StoredToken", "TokenInfo"]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown about a token: everything but its secret and hash."""

    token_id: str
    user_id: str
    name: str | None
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token row with what checking its secret needs: the KDF and its parameters
    (``kdf``), the salt and the derived hash (both hex)."""

    info: TokenInfo
    kdf: str
    salt: str
    secret_hash: str


_INFO_COLUMNS = (
    s.api_tokens.c.id,
    s.api_tokens.c.user_id,
    s.api_tokens.c.name,
    s.api_tokens.c.created_at,
    s.api_tokens.c.last_used_at,
    s.api_tokens.c.revoked_at,
)


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        token_id=row.id,
        user_id=row.user_id,
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class ApiTokens:
    """Token rows; mixed into :class:`SQLStore`, which provides ``_tx``."""

    if TYPE_CHECKING:

        def _tx(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def insert_token(self, token: StoredToken) -> None:
        """Store a new token (its id must be new)."""
        info = token.info
        async with self._tx(write=True) as conn:
            await conn.execute(
                insert(s.api_tokens).values(
                    id=info.token_id,
                    user_id=info.user_id,
                    name=info.name,
                    kdf=token.kdf,
                    salt=token.salt,
                    secret_hash=token.secret_hash,
                    created_at=info.created_at,
                    last_used_at=info.last_used_at,
                    revoked_at=info.revoked_at,
                )
            )

    async def load_token(self, token_id: str) -> StoredToken | None:
        """The token with this id, revoked or not; None when there is none."""
        t = s.api_tokens
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*_INFO_COLUMNS, t.c.kdf, t.c.salt, t.c.secret_hash).where(
                        t.c.id == token_id
                    )
                )
            ).first()
        if row is None:
            return None
        return StoredToken(_info(row), kdf=row.kdf, salt=row.salt, secret_hash=row.secret_hash)

    async def list_tokens(self, user_id: str | None = None) -> Sequence[TokenInfo]:
        """Tokens (of one user, or everyone's), oldest first."""
        t = s.api_tokens
        query = select(*_INFO_COLUMNS).order_by(t.c.created_at, t.c.id)
        if user_id is not None:
            query = query.where(t.c.user_id == user_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [_info(row) for row in rows]

    async def revoke_token(self, token_id: str, at: float) -> bool:
        """Mark the token revoked at ``at`` (a token revoked before keeps its first time).

        Returns:
            True when the token exists (and is revoked now); False for an unknown id.
        """
        t = s.api_tokens
        async with self._tx(write=True) as conn:
            done = await conn.execute(
                update(t)
                .where(t.c.id == token_id)
                .values(revoked_at=func.coalesce(t.c.revoked_at, at))
            )
        return bool(done.rowcount == 1)

    async def touch_token(self, token_id: str, at: float) -> None:
        """Record that the token was used at ``at``."""
        t = s.api_tokens
        async with self._tx(write=True) as conn:
            await conn.execute(update(t).where(t.c.id == token_id).values(last_used_at=at))
