"""Connections, row mapping and chunked IN-lists shared by the SQLite modules."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Literal, TypeVar

import aiosqlite

from notifier.domain.models import Delivery, DeliveryStatus, Messenger
from notifier.storage.schema import PRAGMAS
from notifier.storage.sqlite.locking import FileLock

Synchronous = Literal["full", "normal"]
T = TypeVar("T")

# Well under SQLite's default limit of 32,766 bound parameters per statement.
CHUNK = 500

DELIVERY_COLUMNS = (
    "id, message_id, messenger, recipient, status, send_at_ms, due_at_ms, "
    "attempts_made, attempts_counted, last_error, created_at_ms, updated_at_ms, "
    "sent_at_ms"
)


async def connect(
    path: str | os.PathLike[str], synchronous: Synchronous
) -> aiosqlite.Connection:
    """Open a connection in autocommit mode; transactions are begun explicitly."""
    db = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        for pragma in PRAGMAS:
            await db.execute(pragma)
        await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except BaseException:
        # Its thread would keep the process from exiting ("file is not a database").
        await db.close()
        raise
    return db


async def run(db: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` on the connection's own thread, with the plain connection.

    aiosqlite runs each statement in its own hop to that thread and back, and
    the way back waits for the event loop; a transaction of several statements
    then holds SQLite's write lock for as long as the loop is busy elsewhere.
    Here a whole transaction is one hop. aiosqlite has no public call for it:
    ``_execute`` is the one its own methods queue their work with.
    """
    result: T = await db._execute(lambda: work(db._conn))  # type: ignore[no-untyped-call]
    return result


async def write(
    db: aiosqlite.Connection, lock: FileLock, work: Callable[[sqlite3.Connection], T]
) -> T:
    """Run ``work`` in one write transaction, in one hop to the writer's thread.

    No lock is needed within the process: the thread runs one hop after the
    other, so two transactions never interleave.
    """
    return await run(db, partial(_transact, work=work, lock=lock))


def _transact(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], lock: FileLock
) -> T:
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite ends it by itself after some errors
                conn.execute("ROLLBACK")
            raise
    return result


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Yield slices small enough to bind as one IN-list."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(n: int) -> str:
    """Return n comma-separated placeholders."""
    return ",".join("?" * n)


def delivery(row: Sequence[Any]) -> Delivery:
    """Map a row of DELIVERY_COLUMNS to a Delivery."""
    return Delivery(
        id=row[0],
        message_id=row[1],
        messenger=Messenger(row[2]),
        recipient=row[3],
        status=DeliveryStatus(row[4]),
        send_at_ms=row[5],
        due_at_ms=row[6],
        attempts_made=row[7],
        attempts_counted=row[8],
        last_error=row[9],
        created_at_ms=row[10],
        updated_at_ms=row[11],
        sent_at_ms=row[12],
    )


def select_in(
    db: sqlite3.Connection, sql: str, values: Sequence[Any], *first: Any
) -> list[Sequence[Any]]:
    """Run ``sql`` over ``values`` in chunks and return every row.

    ``sql`` writes its IN-list as ``({marks})``; ``first`` are the parameters
    bound before the list.
    """
    rows: list[Sequence[Any]] = []
    for chunk in chunks(values):
        query = sql.format(marks=marks(len(chunk)))
        rows.extend(db.execute(query, (*first, *chunk)).fetchall())
    return rows


def deliveries_by_id(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Delivery]:
    """Return the deliveries that exist among ``ids``, by id."""
    sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN ({{marks}})"
    return {r[0]: delivery(r) for r in select_in(db, sql, ids)}
