"""Ceilings (b) and (c): raw sqlite3 on a table shaped like notifier's deliveries.

(b) ``insert``: batched inserts, one transaction per batch.
(c) ``claim``: claim due rows with one UPDATE ... RETURNING per batch, commit,
then complete the batch with one UPDATE, commit; until no row is due.

Both run in WAL mode with synchronous=FULL, as notifier's outbox does. Rows
are generated before the clock starts: the figures are SQLite's work alone.
Run by the suite as ``python bench/sqlite_ceilings.py insert --rows N ...``;
prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time

from notifier.domain.ids import new_id

_INSERT = """
INSERT INTO deliveries (id, message_id, messenger, recipient, status, send_at_ms,
    due_at_ms, created_at_ms, updated_at_ms)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"""

_CLAIM = """
UPDATE deliveries
SET status = 'sending', lease_token = ?, due_at_ms = ?,
    attempts_made = attempts_made + 1, updated_at_ms = ?
WHERE id IN (SELECT id FROM deliveries
    WHERE messenger = ? AND due_at_ms <= ? ORDER BY due_at_ms LIMIT ?)
RETURNING id"""

_COMPLETE = """
UPDATE deliveries
SET status = 'sent', due_at_ms = NULL, lease_token = NULL,
    updated_at_ms = ?1, sent_at_ms = ?1
WHERE id IN ({marks})"""

MESSENGERS = ("telegram", "whatsapp", "viber")


def connect(path: str) -> sqlite3.Connection:
    """Open the database as notifier's outbox does: WAL, synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA temp_store = MEMORY")
    return db


Row = tuple[str, str, str, str, int, int, int, int]


def make_rows(count: int, now_ms: int, per_message: int = 100) -> list[Row]:
    """Return delivery rows due at ``now_ms``, ``per_message`` to a message id.

    Ids come from notifier's own new_id, as for a stream of fan-out requests:
    the rows of one message share a millisecond, and each message is 1 ms later.
    """
    rows = []
    message_id = ""
    for i in range(count):
        created_ms = now_ms + i // per_message
        if i % per_message == 0:
            message_id = new_id(created_ms)
        rows.append(
            (
                new_id(created_ms),
                message_id,
                MESSENGERS[i % 3],
                f"bench-{i}",
                now_ms,
                now_ms,
                now_ms,
                now_ms,
            )
        )
    return rows


def deliveries_ddl() -> tuple[str, ...]:
    """Return notifier's own DDL for the deliveries table and its indexes.

    The table then has the same shape as the one notifier writes in the same
    run, indexes included, even as the schema changes.
    """
    from notifier.storage.schema import DDL

    mine = re.compile(r"\bTABLE IF NOT EXISTS deliveries\b|\bON deliveries\b")
    return tuple(s for s in DDL if mine.search(s))


def create(path: str) -> sqlite3.Connection:
    """Create the table in a new file and return a connection to it."""
    db = connect(path)
    for statement in deliveries_ddl():
        db.execute(statement)
    return db


def insert_ceiling(path: str, rows: int, batch: int) -> dict[str, object]:
    """Time batched inserts of ``rows`` rows; return rows per second."""
    db = create(path)
    data = make_rows(rows, int(time.time() * 1000))

    started = time.perf_counter()
    for at in range(0, len(data), batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(_INSERT, data[at : at + batch])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started

    db.close()
    return {"rows": rows, "batch": batch, "seconds": elapsed, "rate": rows / elapsed}


def claim_ceiling(path: str, rows: int, batch: int) -> dict[str, object]:
    """Time claiming and completing ``rows`` due rows; return rows per second."""
    now_ms = int(time.time() * 1000) - 1000
    db = create(path)
    db.execute("PRAGMA synchronous = OFF")  # the preload is not measured
    db.execute("BEGIN")
    db.executemany(_INSERT, make_rows(rows, now_ms))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA synchronous = FULL")

    started = time.perf_counter()
    done = _claim_all(db, batch)
    elapsed = time.perf_counter() - started

    db.close()
    if done != rows:
        raise SystemExit(f"claimed {done} rows, expected {rows}")
    return {"rows": rows, "batch": batch, "seconds": elapsed, "rate": rows / elapsed}


def _claim_all(db: sqlite3.Connection, batch: int) -> int:
    done = 0
    idle = 0
    turn = 0
    # Each turn takes one messenger's batch; stop after a round of empty claims.
    while idle < len(MESSENGERS):
        messenger = MESSENGERS[turn % len(MESSENGERS)]
        turn += 1
        now_ms = int(time.time() * 1000)
        db.execute("BEGIN IMMEDIATE")
        ids = [
            r[0]
            for r in db.execute(
                _CLAIM, ("token", now_ms + 30_000, now_ms, messenger, now_ms, batch)
            )
        ]
        db.execute("COMMIT")
        if not ids:
            idle += 1
            continue
        idle = 0
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            _COMPLETE.format(marks=",".join("?" * len(ids))),
            (int(time.time() * 1000), *ids),
        )
        db.execute("COMMIT")
        done += len(ids)
    return done


def main() -> None:
    """Run one ceiling and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["insert", "claim"])
    parser.add_argument("--path", required=True, help="a database file to create")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if os.path.exists(args.path):
        raise SystemExit(f"--path must name a new file, {args.path!r} exists")
    run = insert_ceiling if args.kind == "insert" else claim_ceiling
    result = run(args.path, args.rows, args.batch)
    result["sqlite_version"] = sqlite3.sqlite_version
    result["statements"] = len(deliveries_ddl())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
