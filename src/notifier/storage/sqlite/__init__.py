"""The outbox on SQLite in WAL mode, through aiosqlite."""

from notifier.storage.sqlite.outbox import SqliteOutbox
from notifier.storage.sqlite.rows import Synchronous

__all__ = ["SqliteOutbox", "Synchronous"]
