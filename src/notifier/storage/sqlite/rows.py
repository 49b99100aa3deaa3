"""Connections, row mapping and chunked IN-lists shared by the SQLite modules."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TypeVar

import aiosqlite

from notifier.domain.models import Delivery, DeliveryStatus, Messenger
from notifier.storage.schema import PRAGMAS

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
    for pragma in PRAGMAS:
        await db.execute(pragma)
    await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return db


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


async def select_in(
    db: aiosqlite.Connection, sql: str, values: Sequence[Any], *first: Any
) -> list[Sequence[Any]]:
    """Run ``sql`` over ``values`` in chunks and return every row.

    ``sql`` writes its IN-list as ``({marks})``; ``first`` are the parameters
    bound before the list.
    """
    rows: list[Sequence[Any]] = []
    for chunk in chunks(values):
        query = sql.format(marks=marks(len(chunk)))
        rows.extend(await db.execute_fetchall(query, (*first, *chunk)))
    return rows


async def deliveries_by_id(
    db: aiosqlite.Connection, ids: Sequence[str]
) -> dict[str, Delivery]:
    """Return the deliveries that exist among ``ids``, by id."""
    sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN ({{marks}})"
    return {r[0]: delivery(r) for r in await select_in(db, sql, ids)}
