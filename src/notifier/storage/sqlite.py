"""The outbox on SQLite in WAL mode, through aiosqlite."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import msgspec

from notifier.domain.dedupe import dedupe_key, text_digest
from notifier.domain.errors import Conflict, IdempotencyMismatch, NotFound
from notifier.domain.ids import new_id
from notifier.domain.models import (
    AcceptedDelivery,
    Attempt,
    Claim,
    Delivery,
    DeliveryStatus,
    Messenger,
    NewMessage,
    Outcome,
    Result,
)
from notifier.storage.base import Accepted, IdempotencyClaim, StoredMessage
from notifier.storage.schema import DDL, PRAGMAS

Synchronous = Literal["full", "normal"]
T = TypeVar("T")

# Well under SQLite's default limit of 32,766 bound parameters per statement.
_CHUNK = 500

_DELIVERY_COLUMNS = (
    "id, message_id, messenger, recipient, status, send_at_ms, due_at_ms, "
    "attempts_made, attempts_counted, last_error, created_at_ms, updated_at_ms, "
    "sent_at_ms"
)

_INSERT_DELIVERY = """
INSERT INTO deliveries (id, message_id, messenger, recipient, status, send_at_ms,
    due_at_ms, created_at_ms, updated_at_ms)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"""

_CLAIM_ONE = """
SELECT id FROM (SELECT id FROM deliveries
    WHERE messenger = '{messenger}' AND due_at_ms <= :now
    ORDER BY due_at_ms LIMIT :{messenger})"""

_CLAIM = """
UPDATE deliveries
SET status = 'sending', lease_token = :token, due_at_ms = :lease_until,
    attempts_made = attempts_made + 1, updated_at_ms = :now
WHERE id IN ({selects})
RETURNING id, message_id, messenger, recipient, attempts_made, attempts_counted,
    (SELECT text FROM messages WHERE messages.id = deliveries.message_id)"""

_RECORD = """
UPDATE deliveries
SET status = ?, due_at_ms = ?, lease_token = NULL,
    attempts_counted = attempts_counted + ?, last_error = ?, updated_at_ms = ?,
    sent_at_ms = CASE WHEN ? = 'sent' THEN ? ELSE sent_at_ms END
WHERE id = ?"""

_FINISH_ATTEMPT = """
UPDATE attempts SET finished_at_ms = ?, outcome = ?, error = ?
WHERE delivery_id = ? AND number = ? AND outcome IS NULL"""


class _Snapshot(msgspec.Struct, array_like=True):
    """An accepted answer as kept for Idempotency-Key replays."""

    message_id: str
    created_at_ms: int
    deliveries: list[tuple[Delivery, bool]]


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _delivery(row: Sequence[Any]) -> Delivery:
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


class SqliteOutbox:
    """The outbox on one SQLite file: one writer connection, one reader connection.

    WAL mode lets the reader see committed state while the writer works; all
    writes go through one connection, behind a lock, in BEGIN IMMEDIATE
    transactions so that several processes on one file queue instead of failing.
    """

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], synchronous: Synchronous = "full"
    ) -> SqliteOutbox:
        """Open (creating if needed) the database at ``path`` and its schema."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path, synchronous)
        for statement in DDL:
            await writer.execute(statement)
        reader = await _connect(path, synchronous)
        return cls(writer, reader)

    async def close(self) -> None:
        """Close both connections."""
        await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run the body in one write transaction: commit, or roll back and re-raise."""
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def accept(
        self, message: NewMessage, idempotency: IdempotencyClaim | None = None
    ) -> Accepted:
        """Store a message and one delivery per new recipient, all or nothing."""
        async with self._transaction() as db:
            if idempotency is not None:
                replay = await _replay(db, idempotency)
                if replay is not None:
                    return replay
            accepted = await _insert_message(db, message)
            if idempotency is not None:
                await _remember(db, idempotency, accepted)
        return accepted

    async def get_message(self, message_id: str) -> StoredMessage:
        """Return a message and its deliveries, or raise NotFound."""
        rows = await self._reader.execute_fetchall(
            "SELECT text, created_at_ms FROM messages WHERE id = ?", (message_id,)
        )
        if not rows:
            raise NotFound("message", message_id)
        text, created_at_ms = next(iter(rows))
        links = await self._reader.execute_fetchall(
            "SELECT delivery_id, duplicate FROM message_deliveries "
            "WHERE message_id = ? ORDER BY position",
            (message_id,),
        )
        pairs = [(row[0], bool(row[1])) for row in links]
        found = await _deliveries_by_id(self._reader, [p[0] for p in pairs])
        deliveries = [AcceptedDelivery(found[i], dup) for i, dup in pairs if i in found]
        return StoredMessage(message_id, text, created_at_ms, deliveries)

    async def get_delivery(self, delivery_id: str) -> Delivery:
        """Return one delivery, or raise NotFound."""
        found = await _deliveries_by_id(self._reader, [delivery_id])
        if delivery_id not in found:
            raise NotFound("delivery", delivery_id)
        return found[delivery_id]

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        """Return a delivery's attempts, oldest first."""
        rows = await self._reader.execute_fetchall(
            "SELECT number, started_at_ms, finished_at_ms, outcome, error "
            "FROM attempts WHERE delivery_id = ? ORDER BY number",
            (delivery_id,),
        )
        return [
            Attempt(r[0], r[1], r[2], Outcome(r[3]) if r[3] else None, r[4])
            for r in rows
        ]

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None,
        messenger: Messenger | None,
        limit: int,
        before_id: str | None,
    ) -> list[Delivery]:
        """Return up to ``limit`` deliveries newest first, older than ``before_id``."""
        where, params = [], []
        for column, value in (
            ("status = ?", status),
            ("messenger = ?", messenger),
            ("id < ?", before_id),
        ):
            if value is not None:
                where.append(column)
                params.append(str(value))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._reader.execute_fetchall(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries {clause} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [_delivery(r) for r in rows]

    async def cancel(self, delivery_id: str, now_ms: int) -> Delivery:
        """Cancel a pending delivery, or raise Conflict with its current record."""
        return await self._transition(
            delivery_id,
            "SET status = 'cancelled', due_at_ms = NULL, updated_at_ms = ? "
            "WHERE id = ? AND status = 'pending'",
            now_ms,
            "only a pending delivery can be cancelled",
        )

    async def retry(self, delivery_id: str, now_ms: int) -> Delivery:
        """Queue a failed delivery again with a fresh budget, or raise Conflict."""
        return await self._transition(
            delivery_id,
            "SET status = 'pending', due_at_ms = ?1, attempts_counted = 0, "
            "last_error = NULL, updated_at_ms = ?1 WHERE id = ?2 AND status = 'failed'",
            now_ms,
            "only a failed delivery can be retried",
        )

    async def _transition(
        self, delivery_id: str, update: str, now_ms: int, rule: str
    ) -> Delivery:
        async with self._transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries {update}", (now_ms, delivery_id)
            )
            changed = cursor.rowcount
            found = await _deliveries_by_id(db, [delivery_id])
        if delivery_id not in found:
            raise NotFound("delivery", delivery_id)
        current = found[delivery_id]
        if not changed:
            raise Conflict(
                f"Delivery {delivery_id!r} is {current.status.value}; {rule}.", current
            )
        return current

    async def claim(
        self, limits: Mapping[Messenger, int], now_ms: int, lease_ms: int
    ) -> list[Claim]:
        """Lease up to ``limits[m]`` due deliveries of each messenger and open attempts.

        One UPDATE ... RETURNING takes the rows, so no two claimers can take the
        same one; a row still 'sending' whose lease ran out is taken again, and
        its open attempt is closed as lease_expired.
        """
        wanted = {m: n for m, n in limits.items() if n > 0}
        if not wanted:
            return []
        token = secrets.token_hex(8)
        selects = " UNION ALL ".join(_CLAIM_ONE.format(messenger=m) for m in wanted)
        params: dict[str, object] = {m.value: n for m, n in wanted.items()}
        params.update(token=token, lease_until=now_ms + lease_ms, now=now_ms)
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(_CLAIM.format(selects=selects), params)
            )
            if not rows:
                return []
            ids = [r[0] for r in rows]
            reclaimed = await _expire_open_attempts(db, ids, now_ms)
            await db.executemany(
                "INSERT INTO attempts (delivery_id, number, lease_token, started_at_ms)"
                " VALUES (?, ?, ?, ?)",
                [(r[0], r[4], token, now_ms) for r in rows],
            )
        return [
            Claim(
                delivery_id=r[0],
                message_id=r[1],
                messenger=Messenger(r[2]),
                recipient=r[3],
                text=r[6],
                lease_token=token,
                attempt=r[4],
                attempts_counted=r[5],
                reclaimed=r[0] in reclaimed,
            )
            for r in rows
        ]

    async def record(self, results: Sequence[Result], now_ms: int) -> list[Result]:
        """Write attempt results whose lease still holds; return those applied.

        A result is stale when its delivery was reclaimed after the lease ran out
        (another lease token or attempt number); stale results change nothing.
        """
        if not results:
            return []
        async with self._transaction() as db:
            held = await _held_leases(db, [r.delivery_id for r in results])
            fresh = [
                r
                for r in results
                if held.get(r.delivery_id) == (r.lease_token, r.attempt)
            ]
            await db.executemany(
                _RECORD,
                [
                    (
                        r.status.value,
                        r.due_at_ms,
                        int(r.counted),
                        r.error,
                        now_ms,
                        r.status.value,
                        r.finished_at_ms,
                        r.delivery_id,
                    )
                    for r in fresh
                ],
            )
            await db.executemany(
                _FINISH_ATTEMPT,
                [
                    (
                        r.finished_at_ms,
                        r.outcome.value,
                        r.error,
                        r.delivery_id,
                        r.attempt,
                    )
                    for r in fresh
                ],
            )
        return fresh

    async def next_due_ms(self) -> int | None:
        """Return when the earliest unfinished delivery falls due, if any."""
        best: int | None = None
        for messenger in Messenger:
            rows = await self._reader.execute_fetchall(
                "SELECT min(due_at_ms) FROM deliveries "
                "WHERE messenger = ? AND due_at_ms IS NOT NULL",
                (messenger.value,),
            )
            value = next(iter(rows))[0]
            if value is not None and (best is None or value < best):
                best = value
        return best


async def _connect(
    path: str | os.PathLike[str], synchronous: Synchronous
) -> aiosqlite.Connection:
    db = await aiosqlite.connect(str(path), isolation_level=None)
    for pragma in PRAGMAS:
        await db.execute(pragma)
    await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return db


async def _deliveries_by_id(
    db: aiosqlite.Connection, ids: Sequence[str]
) -> dict[str, Delivery]:
    found: dict[str, Delivery] = {}
    for chunk in _chunks(ids):
        rows = await db.execute_fetchall(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "
            f"WHERE id IN ({_marks(len(chunk))})",
            chunk,
        )
        found.update((r[0], _delivery(r)) for r in rows)
    return found


async def _held_leases(
    db: aiosqlite.Connection, ids: Sequence[str]
) -> dict[str, tuple[str, int]]:
    held: dict[str, tuple[str, int]] = {}
    for chunk in _chunks(ids):
        rows = await db.execute_fetchall(
            "SELECT id, lease_token, attempts_made FROM deliveries "
            f"WHERE status = 'sending' AND id IN ({_marks(len(chunk))})",
            chunk,
        )
        held.update((r[0], (r[1], r[2])) for r in rows)
    return held


async def _expire_open_attempts(
    db: aiosqlite.Connection, ids: Sequence[str], now_ms: int
) -> set[str]:
    expired: set[str] = set()
    for chunk in _chunks(ids):
        rows = await db.execute_fetchall(
            "UPDATE attempts SET finished_at_ms = ?, outcome = 'lease_expired', "
            "error = 'the lease ran out before the attempt reported' "
            f"WHERE outcome IS NULL AND delivery_id IN ({_marks(len(chunk))}) "
            "RETURNING delivery_id",
            (now_ms, *chunk),
        )
        expired.update(r[0] for r in rows)
    return expired


async def _replay(db: aiosqlite.Connection, claim: IdempotencyClaim) -> Accepted | None:
    rows = await db.execute_fetchall(
        "SELECT request_hash, response FROM idempotency_keys WHERE key = ?",
        (claim.key,),
    )
    if not rows:
        return None
    request_hash, response = next(iter(rows))
    if request_hash != claim.request_hash:
        raise IdempotencyMismatch(claim.key)
    snap = msgspec.msgpack.decode(response, type=_Snapshot)
    deliveries = [AcceptedDelivery(d, dup) for d, dup in snap.deliveries]
    return Accepted(snap.message_id, snap.created_at_ms, deliveries, replayed=True)


async def _remember(
    db: aiosqlite.Connection, claim: IdempotencyClaim, accepted: Accepted
) -> None:
    snap = _Snapshot(
        accepted.message_id,
        accepted.created_at_ms,
        [(a.delivery, a.duplicate) for a in accepted.deliveries],
    )
    await db.execute(
        "INSERT INTO idempotency_keys (key, request_hash, response, created_at_ms) "
        "VALUES (?, ?, ?, ?)",
        (
            claim.key,
            claim.request_hash,
            msgspec.msgpack.encode(snap),
            accepted.created_at_ms,
        ),
    )


async def _insert_message(db: aiosqlite.Connection, message: NewMessage) -> Accepted:
    """Insert the message, then claim each recipient's dedupe key for a new delivery.

    The UNIQUE dedupe key decides, inside this transaction, which recipients
    get a new delivery: a key already taken names the delivery to answer with.
    """
    now = message.created_at_ms
    await db.execute(
        "INSERT INTO messages (id, text, created_at_ms) VALUES (?, ?, ?)",
        (message.id, message.text, now),
    )
    digest = text_digest(message.text)
    keys = [dedupe_key(r, digest) for r in message.recipients]
    proposed = [new_id(now) for _ in keys]
    await db.executemany(
        "INSERT INTO dedupe (key, delivery_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        zip(keys, proposed, strict=True),
    )
    owner = await _dedupe_owners(db, keys)
    chosen = [owner[k] for k in keys]
    fresh = [
        (
            pid,
            message.id,
            r.messenger.value,
            r.id,
            message.send_at_for(r),
            message.send_at_for(r),
            now,
            now,
        )
        for r, pid, cid in zip(message.recipients, proposed, chosen, strict=True)
        if pid == cid
    ]
    await db.executemany(_INSERT_DELIVERY, fresh)
    await db.executemany(
        "INSERT INTO message_deliveries (message_id, position, delivery_id, duplicate)"
        " VALUES (?, ?, ?, ?)",
        [
            (message.id, i, cid, int(pid != cid))
            for i, (pid, cid) in enumerate(zip(proposed, chosen, strict=True))
        ],
    )
    found = await _deliveries_by_id(db, chosen)
    deliveries = [
        AcceptedDelivery(found[cid], duplicate=pid != cid)
        for pid, cid in zip(proposed, chosen, strict=True)
        if cid in found
    ]
    return Accepted(message.id, now, deliveries)


async def _dedupe_owners(
    db: aiosqlite.Connection, keys: Iterable[bytes]
) -> dict[bytes, str]:
    owners: dict[bytes, str] = {}
    for chunk in _chunks(list(keys)):
        rows = await db.execute_fetchall(
            f"SELECT key, delivery_id FROM dedupe WHERE key IN ({_marks(len(chunk))})",
            chunk,
        )
        owners.update((r[0], r[1]) for r in rows)
    return owners
