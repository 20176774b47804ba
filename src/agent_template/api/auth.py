"""Bearer tokens: created by ``agent-template token create``, stored hashed, checked per request.

A token reads ``at_<id>_<secret>``. The id (16 hex digits) is public: it names the token in
``token list`` and finds its row. The secret (``secrets.token_urlsafe(32)``) is shown once, at
creation; the database keeps only its scrypt hash with a per-token salt, so a copy of the
database lets nobody in. This module imports no web framework: the CLI uses it too.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent_template.errors import ConfigurationError, StorageError
from agent_template.services.storage.tokens import StoredToken, TokenInfo

__all__ = [
    "CACHE_SIZE",
    "CACHE_TTL_S",
    "TOKEN_PREFIX",
    "TOUCH_INTERVAL_S",
    "TokenInfo",
    "TokenStore",
    "token_id_of",
]

log = logging.getLogger("agent_template.auth")

TOKEN_PREFIX = "at_"
# How long a verified token is trusted without asking the database again: the longest a token
# revoked by another process (the CLI, another replica) keeps working here.
CACHE_TTL_S = 30.0
CACHE_SIZE = 1024  # verified tokens remembered per process (the least recently used go first)
TOUCH_INTERVAL_S = 60.0  # ``last_used_at`` is written at most this often per token
_ID_BYTES = 8
_SECRET_BYTES = 32
_SALT_BYTES = 16
# scrypt with n=2**14, r=8, p=1 takes 16 MiB and some tens of milliseconds: cheap once per
# token (the cache covers the rest), costly for whoever guesses secrets from a stolen database.
# The parameters are stored with each hash, so raising them later keeps old tokens working.
_KDF = "scrypt:n=16384,r=8,p=1"
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_HASH_BYTES = 32
# A secret of another length never came from here: refuse it before running the KDF on it.
_TOKEN_RE = re.compile(r"at_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_MAX_USER_CHARS = 128  # the width of ``api_tokens.user_id``


@runtime_checkable
class TokenRows(Protocol):
    """The token SQL a store provides (``SQLStore`` through ``storage.tokens.ApiTokens``)."""

    async def insert_token(self, token: StoredToken) -> None: ...
    async def load_token(self, token_id: str) -> StoredToken | None: ...
    async def list_tokens(self, user_id: str | None = None) -> Sequence[TokenInfo]: ...
    async def revoke_token(self, token_id: str, at: float) -> bool: ...
    async def touch_token(self, token_id: str, at: float) -> None: ...


@dataclass(slots=True)
class _Verified:
    """A token whose secret matched ``secret_hash`` (clock times for the cache)."""

    token_id: str
    user_id: str
    secret_hash: str
    checked_at: float
    touched_at: float | None = None


def token_id_of(token: str) -> str | None:
    """The id part of a well-formed token (None for anything else)."""
    match = _TOKEN_RE.fullmatch(token)
    return match.group(1) if match else None


class TokenStore:
    """API tokens of the database behind ``store`` (the server's ``SQLStore``).

    Checking a secret runs scrypt, slow on purpose, in a worker thread. A verified token is
    then remembered in this process (by the SHA-256 of the whole token, never the token) for
    ``cache_ttl`` seconds; after that one query confirms the row is still there, unrevoked
    and unchanged, without running scrypt again. So a token revoked elsewhere (the CLI,
    another replica) keeps working for at most ``cache_ttl`` seconds; one revoked through
    this object stops at once.

    Args:
        store: the session store; tokens need one with the token SQL (``SQLStore``).
            With another store nothing verifies and creating a token raises.
        cache_ttl: seconds a verified token is trusted without the database.
        cache_size: how many verified tokens to remember.
        touch_interval: ``last_used_at`` is written at most once per this many seconds per
            token (by this process).
        clock: a monotonic clock, for the cache and the interval above.
    """

    def __init__(
        self,
        store: object,
        *,
        cache_ttl: float = CACHE_TTL_S,
        cache_size: int = CACHE_SIZE,
        touch_interval: float = TOUCH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.touch_interval = touch_interval
        self._clock = clock
        self._rows = store if isinstance(store, TokenRows) else None
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._revoked_here: set[str] = set()

    def _require_rows(self) -> TokenRows:
        if self._rows is None:
            raise ConfigurationError(
                f"API tokens need a SQL database, and this server's session store "
                f"({type(self.store).__name__}) keeps none. Set DATABASE_URL to a SQLite "
                "or PostgreSQL database."
            )
        return self._rows

    async def create(self, user_id: str, name: str | None = None) -> tuple[TokenInfo, str]:
        """Make a token for ``user_id``, labelled ``name``.

        Returns:
            The token's info and the token itself: show it to the user now, since only its
            hash is kept.

        Raises:
            ValueError: ``user_id`` is empty or longer than 128 characters.
            ConfigurationError: the store keeps no tokens.
            StorageError: the database failed.
        """
        rows = self._require_rows()
        if not user_id.strip() or len(user_id) > _MAX_USER_CHARS:
            raise ValueError(
                f"A token's user must be 1 to {_MAX_USER_CHARS} characters, not {user_id!r}."
            )
        token_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        salt = secrets.token_bytes(_SALT_BYTES)
        digest = await asyncio.to_thread(_derive, secret, salt, _KDF)
        assert digest is not None  # _KDF is ours
        info = TokenInfo(token_id, user_id, (name or "").strip() or None, time.time())
        await rows.insert_token(StoredToken(info, _KDF, salt.hex(), digest.hex()))
        log.info("created API token %s for user %s", token_id, user_id)
        return info, f"{TOKEN_PREFIX}{token_id}_{secret}"

    async def list(self, user_id: str | None = None) -> builtins.list[TokenInfo]:
        """Tokens (one user's, or everyone's), oldest first; revoked ones included."""
        return builtins.list(await self._require_rows().list_tokens(user_id))

    async def revoke(self, token_id: str) -> bool:
        """Revoke a token for good; this process refuses it from now on, others within
        ``cache_ttl`` seconds.

        Returns:
            True when the token exists (revoked now, or already); False for an unknown id.
        """
        found = await self._require_rows().revoke_token(token_id, time.time())
        if found:
            self._revoked_here.add(token_id)
            for key in [k for k, v in self._cache.items() if v.token_id == token_id]:
                del self._cache[key]
            log.info("revoked API token %s", token_id)
        return found

    async def verify(self, token: str) -> str | None:
        """The user id a token belongs to; None for an unknown, revoked or malformed one.

        Raises:
            StorageError: the database could not be asked (the caller answers 503).
        """
        match = _TOKEN_RE.fullmatch(token)
        if match is None or self._rows is None:
            return None
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None and now - entry.checked_at < self.cache_ttl:
            self._cache.move_to_end(key)
        else:
            entry = await self._check(key, match.group(1), match.group(2), entry, now)
        # Checked last: a revocation here may land while the database was being asked.
        if entry is None or entry.token_id in self._revoked_here:
            return None
        if entry.touched_at is None or now - entry.touched_at >= self.touch_interval:
            entry.touched_at = now  # before the write: concurrent requests do not write too
            await self._touch(entry.token_id)
        return entry.user_id

    async def _check(
        self, key: bytes, token_id: str, secret: str, cached: _Verified | None, now: float
    ) -> _Verified | None:
        """Ask the database about the token; run the KDF unless ``cached`` vouches for the
        same hash already."""
        assert self._rows is not None
        stored = await self._rows.load_token(token_id)
        if stored is None or stored.info.revoked:
            self._cache.pop(key, None)
            return None
        if cached is None or cached.secret_hash != stored.secret_hash:
            if not await asyncio.to_thread(_matches, stored, secret):
                self._cache.pop(key, None)
                log.debug("refused a wrong secret for API token %s", token_id)
                return None
            cached = _Verified(token_id, stored.info.user_id, stored.secret_hash, now)
        cached.checked_at = now
        self._cache[key] = cached
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return cached

    async def _touch(self, token_id: str) -> None:
        assert self._rows is not None
        try:
            await self._rows.touch_token(token_id, time.time())
        except StorageError:
            # Bookkeeping only: a valid token is not refused because this write failed.
            log.warning("could not record the use of API token %s", token_id, exc_info=True)


def _derive(secret: str, salt: bytes, kdf: str) -> bytes | None:
    """The hash of ``secret`` under ``kdf`` (``scrypt:n=..,r=..,p=..``); None for a KDF
    description this version cannot read."""
    name, _, spec = kdf.partition(":")
    if name != "scrypt":
        return None
    try:
        params = {k: int(v) for k, _, v in (part.partition("=") for part in spec.split(","))}
        return hashlib.scrypt(
            secret.encode(),
            salt=salt,
            n=params["n"],
            r=params["r"],
            p=params["p"],
            maxmem=_SCRYPT_MAXMEM,
            dklen=_HASH_BYTES,
        )
    except (KeyError, ValueError):  # missing or impossible parameters
        return None


def _matches(stored: StoredToken, secret: str) -> bool:
    """Whether ``secret`` is the token's, compared in constant time."""
    try:
        salt, expected = bytes.fromhex(stored.salt), bytes.fromhex(stored.secret_hash)
    except ValueError:  # a damaged row matches nothing
        return False
    derived = _derive(secret, salt, stored.kdf)
    if derived is None:
        log.warning("API token %s has a hash this version cannot check", stored.info.token_id)
        return False
    return hmac.compare_digest(derived, expected)
