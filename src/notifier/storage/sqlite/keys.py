"""API keys in the outbox's SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiosqlite

from notifier.domain.errors import Conflict, NotFound
from notifier.domain.keys import ApiKey, NewKey, Scope

_COLUMNS = "name, key_id, scopes, created_at_ms, last_used_at_ms, revoked_at_ms"


def _key(row: Sequence[Any]) -> ApiKey:
    scopes = frozenset(Scope(s) for s in row[2].split(",") if s)
    return ApiKey(row[0], row[1], scopes, row[3], row[4], row[5])


class SqliteKeyStore:
    """The KeyStore on the outbox's connections and write lock."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        lock: asyncio.Lock,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = lock

    async def create(
        self, name: str, scopes: frozenset[Scope], new: NewKey, now_ms: int
    ) -> ApiKey:
        """Store a new key, or raise Conflict if the name is taken."""
        async with self._lock:
            cursor = await self._writer.execute(
                "INSERT INTO api_keys (name, key_id, secret_hash, scopes, "
                "created_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (name, new.key_id, new.secret_hash, ",".join(sorted(scopes)), now_ms),
            )
        if cursor.rowcount != 1:
            raise Conflict(f"A key named {name!r} exists already.", None)
        return ApiKey(name, new.key_id, scopes, now_ms, None, None)

    async def list_all(self) -> list[ApiKey]:
        """Return every key, revoked ones included, oldest first."""
        rows = await self._reader.execute_fetchall(
            f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at_ms, name"
        )
        return [_key(r) for r in rows]

    async def revoke(self, name: str, now_ms: int) -> ApiKey:
        """Revoke a key at once, or raise NotFound."""
        async with self._lock:
            rows = await self._writer.execute_fetchall(
                "UPDATE api_keys SET revoked_at_ms = coalesce(revoked_at_ms, ?) "
                f"WHERE name = ? RETURNING {_COLUMNS}",
                (now_ms, name),
            )
        if not rows:
            raise NotFound("API key", name, label="name")
        return _key(next(iter(rows)))

    async def find(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        """Return the key with this id and its secret hash, if it exists."""
        rows = await self._reader.execute_fetchall(
            f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = ?",
            (key_id,),
        )
        row = next(iter(rows), None)
        return None if row is None else (_key(row), row[6])

    async def touch(self, key_id: str, now_ms: int) -> None:
        """Record that the key was used."""
        async with self._lock:
            await self._writer.execute(
                "UPDATE api_keys SET last_used_at_ms = ? WHERE key_id = ?",
                (now_ms, key_id),
            )
