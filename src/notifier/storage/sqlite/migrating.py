"""Schema versions: bringing a database made by an earlier notifier up to date.

``PRAGMA user_version`` holds the version. Version 1 changed the dedupe key
(see notifier.domain.dedupe): records under the old keys move to the table
``dedupe_v0``, which accept consults and empties as it meets them again, and
retention prunes as it prunes ``dedupe``. Once empty, the table is dropped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from notifier.domain.dedupe import legacy_dedupe_key
from notifier.domain.errors import StoreError
from notifier.domain.models import Recipient
from notifier.storage.sqlite.rows import chunks, marks, select_in

SCHEMA_VERSION = 1
LEGACY_DEDUPE = "dedupe_v0"


def migrate(db: sqlite3.Connection, *, upgrade: bool = True) -> None:
    """Bring the schema to SCHEMA_VERSION, in the caller's write transaction.

    Runs before the idempotent DDL, which then creates what is missing. A new
    file is marked current. Without ``upgrade`` an older file stays as it is:
    ``stats`` and ``keys`` may run while the older notifier still serves it,
    which would go on writing old keys into a renamed table.
    """
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}, and this notifier knows "
            f"versions up to {SCHEMA_VERSION}: run the newer notifier that wrote it"
        )
    if version == SCHEMA_VERSION or (not upgrade and _has_table(db, "deliveries")):
        return
    if version < 1 and _has_table(db, "dedupe"):
        if db.execute("SELECT EXISTS (SELECT 1 FROM dedupe)").fetchone()[0]:
            db.execute(f"ALTER TABLE dedupe RENAME TO {LEGACY_DEDUPE}")
            # The index went along under its old name; the DDL wants that name.
            db.execute("DROP INDEX IF EXISTS dedupe_pruned")
            db.execute(
                f"CREATE INDEX {LEGACY_DEDUPE}_pruned ON {LEGACY_DEDUPE} "
                "(created_at_ms) WHERE final_status IS NOT NULL"
            )
        else:
            db.execute("DROP TABLE dedupe")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def has_legacy_dedupe(db: sqlite3.Connection) -> bool:
    """Whether records under version 0's dedupe keys remain."""
    return _has_table(db, LEGACY_DEDUPE)


def adopt_legacy_dedupe(
    db: sqlite3.Connection,
    wanted: Sequence[tuple[bytes, Recipient, bytes]],
) -> None:
    """Move the old records of these (key, recipient, text digest) to their new keys.

    Called before the new keys are claimed, so that a text sent before the
    upgrade is still a duplicate after it.
    """
    by_old = {legacy_dedupe_key(r, digest): key for key, r, digest in wanted}
    sql = (
        "SELECT key, delivery_id, created_at_ms, final_status, final_send_at_ms "
        f"FROM {LEGACY_DEDUPE} WHERE key IN ({{marks}})"
    )
    found = select_in(db, sql, list(by_old))
    if not found:
        return
    db.executemany(
        "INSERT INTO dedupe (key, delivery_id, created_at_ms, final_status, "
        "final_send_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(by_old[row[0]], *row[1:]) for row in found],
    )
    old = [row[0] for row in found]
    for chunk in chunks(old):
        db.execute(
            f"DELETE FROM {LEGACY_DEDUPE} WHERE key IN ({marks(len(chunk))})", chunk
        )


def drop_legacy_dedupe_if_empty(db: sqlite3.Connection) -> None:
    """Drop the old keys' table once nothing is left in it."""
    if not db.execute(f"SELECT EXISTS (SELECT 1 FROM {LEGACY_DEDUPE})").fetchone()[0]:
        db.execute(f"DROP TABLE {LEGACY_DEDUPE}")


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None
