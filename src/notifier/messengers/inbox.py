"""The emulated messengers' durable inbox: what each recipient has received."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiosqlite

from notifier.domain.models import Messenger
from notifier.storage.sqlite.locking import FileLock
from notifier.storage.sqlite.rows import write

_CREATE_INBOX = """
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    messenger TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (messenger, delivery_id)
)"""

_INSERT = """
INSERT INTO inbox (messenger, delivery_id, recipient, text, received_at_ms)
VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"""

# Settings changed through the API, kept here so that every worker process
# of one server reads the same; a server start empties the table.
_CREATE_SETTINGS = """
CREATE TABLE IF NOT EXISTS emulator_settings (
    messenger TEXT PRIMARY KEY,
    settings BLOB NOT NULL
)"""

_CREATE_RECIPIENT_INDEX = """
CREATE INDEX IF NOT EXISTS inbox_recipient ON inbox (messenger, recipient, seq)"""


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One text as a recipient received it."""

    seq: int
    delivery_id: str
    recipient: str
    text: str
    received_at_ms: int


class Inbox:
    """Received texts of all emulated messengers, one SQLite file of their own.

    The file is kept apart from the outbox: it stands for the messengers' side,
    which would not share a database with notifier.
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._queued: list[tuple[tuple[str, str, str, str, int], asyncio.Future[None]]]
        self._queued = []
        self._writer: asyncio.Task[None] | None = None
        # A write between another's BEGIN and COMMIT would join its transaction.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Inbox:
        """Open (creating if needed) the inbox database at ``path``."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            for statement in (
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA busy_timeout = 10000",
                _CREATE_INBOX,
                _CREATE_RECIPIENT_INDEX,
                _CREATE_SETTINGS,
            ):
                await db.execute(statement)
        except BaseException:
            # Its thread would keep the process from exiting.
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        """Finish queued writes, then close the connection."""
        if self._writer is not None:
            await self._writer
        await self._db.close()

    async def add(
        self,
        messenger: Messenger,
        delivery_id: str,
        recipient: str,
        text: str,
        now_ms: int,
    ) -> None:
        """Store a received text durably, once per delivery id.

        Texts that arrive while a write is under way share the next one.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row = (messenger.value, delivery_id, recipient, text, now_ms)
        self._queued.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await future

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                rows = [row for row, _ in batch]
                async with self._lock:
                    await write(self._db, _NO_FILE_LOCK, partial(_insert, rows=rows))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def update_settings(
        self, messenger: Messenger, change: Callable[[bytes | None], bytes]
    ) -> bytes:
        """Replace an emulator's saved settings by ``change(saved)``, atomically.

        One transaction from read to write, so that changes made at once
        through two workers both land; if ``change`` raises, nothing is saved.
        """
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = list(
                    await self._db.execute_fetchall(
                        "SELECT settings FROM emulator_settings WHERE messenger = ?",
                        (messenger.value,),
                    )
                )
                settings = change(rows[0][0] if rows else None)
                await self._db.execute(
                    "INSERT INTO emulator_settings (messenger, settings) "
                    "VALUES (?, ?) ON CONFLICT (messenger) "
                    "DO UPDATE SET settings = excluded.settings",
                    (messenger.value, settings),
                )
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        return settings

    async def load_settings(self) -> dict[Messenger, bytes]:
        """Return the settings saved since the server started, by messenger."""
        rows = await self._db.execute_fetchall(
            "SELECT messenger, settings FROM emulator_settings"
        )
        return {Messenger(m): settings for m, settings in rows}

    async def forget_settings(self) -> None:
        """Drop every saved setting: the configured ones apply again."""
        async with self._lock:
            await self._db.execute("DELETE FROM emulator_settings")

    async def has(self, messenger: Messenger, delivery_id: str) -> bool:
        """Return whether this delivery id was already received."""
        rows = await self._db.execute_fetchall(
            "SELECT 1 FROM inbox WHERE messenger = ? AND delivery_id = ?",
            (messenger.value, delivery_id),
        )
        return bool(rows)

    async def list(
        self,
        messenger: Messenger,
        *,
        recipient: str | None,
        limit: int,
        after_seq: int,
    ) -> list[InboxItem]:
        """Return up to ``limit`` items oldest first, after the ``after_seq`` cursor."""
        where = "messenger = ? AND seq > ?"
        params: list[object] = [messenger.value, after_seq]
        if recipient is not None:
            where += " AND recipient = ?"
            params.append(recipient)
        rows = await self._db.execute_fetchall(
            "SELECT seq, delivery_id, recipient, text, received_at_ms FROM inbox "
            f"WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [InboxItem(*row) for row in rows]


# The inbox has one writer per process, and SQLite's own lock between processes.
_NO_FILE_LOCK = FileLock(None)


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    conn.executemany(_INSERT, rows)
