"""API keys in the outbox's SQLite file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from notifier.domain.errors import Conflict, NotFound
from notifier.domain.keys import ApiKey, NewKey, Scope
from notifier.storage.sqlite.locking import FileLock
from notifier.storage.sqlite.rows import write

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
        lock: FileLock,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = lock

    async def create(
        self, name: str, scopes: frozenset[Scope], new: NewKey, now_ms: int
    ) -> ApiKey:
        """Store a new key, or raise Conflict if the name is taken."""
        row = (name, new.key_id, new.secret_hash, ",".join(sorted(scopes)), now_ms)
        inserted = await write(
            self._writer,
            self._lock,
            lambda db: (
                db.execute(
                    "INSERT INTO api_keys (name, key_id, secret_hash, scopes, "
                    "created_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    row,
                ).rowcount
            ),
        )
        if inserted != 1:
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
        rows = await write(
            self._writer,
            self._lock,
            lambda db: db.execute(
                "UPDATE api_keys SET revoked_at_ms = coalesce(revoked_at_ms, ?) "
                f"WHERE name = ? RETURNING {_COLUMNS}",
                (now_ms, name),
            ).fetchall(),
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
        await write(
            self._writer,
            self._lock,
            lambda db: db.execute(
                "UPDATE api_keys SET last_used_at_ms = ? WHERE key_id = ?",
                (now_ms, key_id),
            ),
        )
