"""Write deliveries straight into a notifier database, before its server starts.

Loading a million scheduled deliveries through HTTP would take longer than the
rest of the suite, so the drain and backlog scenarios write their rows with
sqlite3 into a file that carries notifier's own schema (its DDL, imported from
notifier.storage.schema). Each message gets what ``_insert_messages`` in
src/notifier/storage/sqlite/accepting.py writes for it: a ``messages`` row, and per
recipient a ``dedupe`` key (computed by notifier's own dedupe_key), a
``deliveries`` row and a ``message_deliveries`` link. Ids come from notifier's
new_id. A server that starts on the file sees ordinary pending deliveries.

If notifier's tables gain a required column, ``check_columns`` says which.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import TEXT, recipient
from notifier.domain.dedupe import dedupe_key, text_digest
from notifier.domain.ids import new_id
from notifier.domain.models import Messenger, Recipient
from notifier.storage.schema import DDL, PRAGMAS

PER_MESSAGE = 1000

_COLUMNS = {
    "messages": ("id", "text", "created_at_ms"),
    "dedupe": ("key", "delivery_id", "created_at_ms"),
    "deliveries": (
        "id",
        "message_id",
        "messenger",
        "recipient",
        "status",
        "send_at_ms",
        "due_at_ms",
        "created_at_ms",
        "updated_at_ms",
    ),
    "message_deliveries": ("message_id", "position", "delivery_id", "duplicate"),
}


def _insert(table: str) -> str:
    columns = _COLUMNS[table]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )


class SchemaChanged(RuntimeError):
    """Raised when notifier's schema needs a column the preload does not write."""


def create_schema(path: Path) -> None:
    """Create an empty notifier database at ``path`` with notifier's own DDL."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in (*PRAGMAS, *DDL):
            db.execute(statement)
        check_columns(db)
    finally:
        db.close()


def check_columns(db: sqlite3.Connection) -> None:
    """Raise SchemaChanged if a table needs a column that the preload leaves out."""
    for table, written in _COLUMNS.items():
        for _, name, _, notnull, default, pk in db.execute(
            f"PRAGMA table_info({table})"
        ):
            if notnull and default is None and not pk and name not in written:
                raise SchemaChanged(
                    f"notifier's {table}.{name} is required and bench/preload.py "
                    "does not write it; teach the preload that column"
                )


def add_deliveries(
    path: Path, count: int, send_at_ms: int, now_ms: int, first: int = 0
) -> None:
    """Add ``count`` pending deliveries, made at ``now_ms``, due at ``send_at_ms``.

    Recipients are numbered from ``first``, so that two calls on one file
    never name the same recipient (and so never share a dedupe key).
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")  # a crash here only loses the preload
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB: the indexes stay hot
        db.execute("BEGIN")
        for start in range(first, first + count, PER_MESSAGE):
            size = min(PER_MESSAGE, first + count - start)
            _add_message(db, range(start, start + size), send_at_ms, now_ms)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    # With synchronous=OFF the rows sit in the OS's dirty pages, and the
    # server's first checkpoint would pay for writing them all out (it halved
    # the drain behind a million rows). A real database is on disk already.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _add_message(
    db: sqlite3.Connection, numbers: range, send_at_ms: int, created_ms: int
) -> None:
    message_id = new_id(created_ms)
    digest = text_digest(TEXT)
    db.execute(_insert("messages"), (message_id, TEXT, created_ms))
    rows = list(_rows(numbers, message_id, digest, send_at_ms, created_ms))
    db.executemany(_insert("dedupe"), [(r[0], r[1], created_ms) for r in rows])
    db.executemany(_insert("deliveries"), [r[1:] for r in rows])
    db.executemany(
        _insert("message_deliveries"),
        [(message_id, i, r[1], 0) for i, r in enumerate(rows)],
    )


def _rows(
    numbers: range, message_id: str, digest: bytes, send_at_ms: int, created_ms: int
) -> Iterator[tuple[object, ...]]:
    for n in numbers:
        messenger, recipient_id = recipient(n)
        key = dedupe_key(Recipient(Messenger(messenger), recipient_id), digest)
        yield (
            key,
            new_id(created_ms),
            message_id,
            messenger,
            recipient_id,
            "pending",
            send_at_ms,
            send_at_ms,
            created_ms,
            created_ms,
        )
