"""Counting and pruning: the outbox's statistics and its retention."""

from __future__ import annotations

import sqlite3

import aiosqlite

from notifier.domain.dedupe import dedupe_key, legacy_dedupe_key, text_digest
from notifier.domain.ids import id_floor
from notifier.domain.models import DeliveryStatus, Messenger, Recipient
from notifier.storage.base import OutboxStats, Pruned
from notifier.storage.sqlite import migrating
from notifier.storage.sqlite.rows import chunks, marks

_FINISHED = """
SELECT d.id, d.messenger, d.recipient, d.status, d.send_at_ms, m.text
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.due_at_ms IS NULL AND d.updated_at_ms < ?
LIMIT ?"""

_TOMBSTONE = """
UPDATE {table} SET final_status = ?, final_send_at_ms = ?
WHERE key = ? AND delivery_id = ?"""

_ORPHAN_MESSAGES = """
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages
    WHERE id < ? AND NOT EXISTS (
        SELECT 1 FROM message_deliveries AS md
        JOIN deliveries AS d ON d.id = md.delivery_id
        WHERE md.message_id = messages.id)
    LIMIT ?)
RETURNING id"""


async def stats(db: aiosqlite.Connection, now_ms: int) -> OutboxStats:
    """Count deliveries by messenger and status, and what is waiting."""
    counts = {
        (Messenger(m), DeliveryStatus(s)): n
        for m, s, n in await db.execute_fetchall(
            "SELECT messenger, status, count(*) FROM deliveries "
            "GROUP BY messenger, status"
        )
    }
    due: dict[Messenger, int] = dict.fromkeys(Messenger, 0)
    scheduled: dict[Messenger, int] = dict.fromkeys(Messenger, 0)
    oldest: int | None = None
    for m, n_due, n_later, first in await db.execute_fetchall(
        # A 'sending' row whose lease ran out is due again: it counts as due.
        "SELECT messenger, sum(due_at_ms <= ?1), "
        "sum(status = 'pending' AND due_at_ms > ?1), "
        "min(CASE WHEN due_at_ms <= ?1 THEN due_at_ms END) "
        "FROM deliveries WHERE status IN ('pending', 'sending') GROUP BY messenger",
        (now_ms,),
    ):
        due[Messenger(m)], scheduled[Messenger(m)] = n_due, n_later
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    rows = await db.execute_fetchall(
        "SELECT count(*) FROM deliveries WHERE sent_at_ms >= ?", (now_ms - 60_000,)
    )
    return OutboxStats(counts, due, scheduled, oldest, next(iter(rows))[0])


def prune(
    db: sqlite3.Connection,
    *,
    finished_before_ms: int,
    dedupe_before_ms: int | None,
    idempotency_before_ms: int,
    limit: int,
) -> Pruned:
    """Remove one batch of old final deliveries and what hangs on them.

    The dedupe record of a removed delivery stays, marked with its final
    status, unless it is older than ``dedupe_before_ms``.
    """
    rows = db.execute(_FINISHED, (finished_before_ms, limit)).fetchall()
    ids = [r[0] for r in rows]
    legacy = migrating.has_legacy_dedupe(db)
    keyings = [(dedupe_key, "dedupe")]
    if legacy:
        keyings.append((legacy_dedupe_key, migrating.LEGACY_DEDUPE))
    for key, table in keyings:
        db.executemany(
            _TOMBSTONE.format(table=table),
            [
                (
                    status,
                    send_at_ms,
                    key(Recipient(Messenger(m), rcpt), text_digest(text)),
                    i,
                )
                for i, m, rcpt, status, send_at_ms, text in rows
            ],
        )
    for chunk in chunks(ids):
        where = f"IN ({marks(len(chunk))})"
        db.execute(f"DELETE FROM attempts WHERE delivery_id {where}", chunk)
        db.execute(f"DELETE FROM deliveries WHERE id {where}", chunk)
    gone = [
        r[0]
        for r in db.execute(_ORPHAN_MESSAGES, (id_floor(finished_before_ms), limit))
    ]
    for chunk in chunks(gone):
        db.execute(
            f"DELETE FROM message_deliveries WHERE message_id IN ({marks(len(chunk))})",
            chunk,
        )
    dedupe = 0
    if dedupe_before_ms is not None:
        for _, table in keyings:
            dedupe += _delete_oldest(
                db,
                table,
                "final_status IS NOT NULL AND created_at_ms < ?",
                dedupe_before_ms,
                limit,
            )
    if legacy:
        migrating.drop_legacy_dedupe_if_empty(db)
    keys = _delete_oldest(
        db, "idempotency_keys", "created_at_ms < ?", idempotency_before_ms, limit
    )
    return Pruned(len(ids), len(gone), dedupe, keys)


def _delete_oldest(
    db: sqlite3.Connection, table: str, where: str, before_ms: int, limit: int
) -> int:
    cursor = db.execute(
        f"DELETE FROM {table} WHERE key IN "
        f"(SELECT key FROM {table} WHERE {where} LIMIT ?)",
        (before_ms, limit),
    )
    return cursor.rowcount
