"""SqliteOutbox: the Outbox on one SQLite file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import aiosqlite

from notifier.domain.errors import Conflict, IdempotencyMismatch, NotFound
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
from notifier.storage.base import (
    Accepted,
    IdempotencyClaim,
    OutboxStats,
    Pruned,
    StoredMessage,
)
from notifier.storage.schema import DDL
from notifier.storage.sqlite import accepting, leasing, migrating, upkeep
from notifier.storage.sqlite.keys import SqliteKeyStore
from notifier.storage.sqlite.locking import FileLock
from notifier.storage.sqlite.rows import (
    DELIVERY_COLUMNS,
    Synchronous,
    T,
    connect,
    deliveries_by_id,
    delivery,
    run,
    write,
)

# One accept waiting for a group commit, and where its answer goes.
_Queued = tuple[accepting.Job, asyncio.Future[Accepted]]


class SqliteOutbox:
    """The outbox on one SQLite file: one writer connection, one reader connection.

    WAL mode lets the reader see committed state while the writer works. Every
    write transaction runs whole on the writer connection's thread, under a
    file lock beside the database, so processes sharing the file take turns.
    """

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        lock: FileLock | None = None,
    ):
        self._writer = writer
        self._reader = reader
        self._lock = lock or FileLock(None)
        self.keys = SqliteKeyStore(writer, reader, self._lock)
        self._queued: deque[_Queued] = deque()
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        synchronous: Synchronous = "full",
        *,
        upgrade: bool = True,
    ) -> SqliteOutbox:
        """Open (creating if needed) the database at ``path`` and its schema.

        Without ``upgrade``, a file from an older notifier is used as it is
        (see migrating.migrate), for tools that may run beside that notifier.
        """
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await connect(path, synchronous)
        lock = FileLock(None)
        try:
            lock = FileLock(None if str(path) == ":memory:" else f"{path}-lock")
            await write(writer, lock, partial(_prepare_schema, upgrade=upgrade))
            reader = await connect(path, synchronous)
        except BaseException:
            # An open connection's thread would keep the process from exiting.
            await writer.close()
            lock.close()
            raise
        return cls(writer, reader, lock)

    async def close(self) -> None:
        """Finish queued accepts, then close both connections."""
        if self._committer is not None:
            await self._committer
        await self._reader.close()
        await self._writer.close()
        self._lock.close()

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction on the writer's thread.

        A cancelled caller stops waiting, but the transaction, queued on the
        thread already, still runs to COMMIT or ROLLBACK.
        """
        return await write(self._writer, self._lock, work)

    async def accept(
        self, message: NewMessage, idempotency: IdempotencyClaim | None = None
    ) -> Accepted:
        """Store a message and one delivery per new recipient, all or nothing.

        Accepts that arrive while a commit is under way wait for the next one
        and share it (group commit): one transaction, and one fsync, for many.
        """
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._queued.append((accepting.Job(message, idempotency), future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        while self._queued:
            taken: list[_Queued] = []
            answers: list[Accepted | Exception]
            try:
                answers = [
                    *await self._write(partial(_accept_queued, self._queued, taken))
                ]
            except Exception as exc:
                if taken:
                    # One bad job must not sink its neighbours: each goes alone.
                    answers = [await self._accept_alone(job) for job, _ in taken]
                else:
                    # It failed before taking any (BEGIN found the file locked
                    # past busy_timeout, say): the file's error, not a job's, so
                    # the jobs queued by now get it at once, not one wait each.
                    _take(self._queued, taken)
                    answers = [exc] * len(taken)
            for (_, future), answer in zip(taken, answers, strict=True):
                if future.cancelled():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _accept_alone(self, job: accepting.Job) -> Accepted | Exception:
        try:
            [answer] = await self._write(partial(accepting.accept_batch, jobs=[job]))
        except Exception as exc:
            return exc
        return answer

    async def get_message(self, message_id: str) -> StoredMessage:
        """Return a message and its deliveries, or raise NotFound.

        A duplicate whose delivery retention has removed is left out.
        """
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
        ids = [p[0] for p in pairs]
        found = await run(self._reader, partial(deliveries_by_id, ids=ids))
        deliveries = [AcceptedDelivery(found[i], dup) for i, dup in pairs if i in found]
        return StoredMessage(message_id, text, created_at_ms, deliveries)

    async def get_delivery(self, delivery_id: str) -> Delivery:
        """Return one delivery, or raise NotFound."""
        found = await run(self._reader, partial(deliveries_by_id, ids=[delivery_id]))
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
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries {clause} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [delivery(r) for r in rows]

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

        def apply(db: sqlite3.Connection) -> tuple[int, dict[str, Delivery]]:
            cursor = db.execute(f"UPDATE deliveries {update}", (now_ms, delivery_id))
            return cursor.rowcount, deliveries_by_id(db, [delivery_id])

        changed, found = await self._write(apply)
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
        """Lease up to ``limits[m]`` due deliveries per messenger; open attempts.

        One UPDATE ... RETURNING takes the rows, so no two claimers can take the
        same one; a row still 'sending' whose lease ran out is taken again, and
        its open attempt is closed as lease_expired.
        """
        if not any(n > 0 for n in limits.values()):
            return []
        return await self._write(
            partial(leasing.claim, limits=limits, now_ms=now_ms, lease_ms=lease_ms)
        )

    async def record(self, results: Sequence[Result], now_ms: int) -> list[Result]:
        """Write attempt results whose lease still holds; return those applied.

        A result is stale when its delivery was reclaimed after the lease ran out
        (another lease token or attempt number); stale results change nothing.
        """
        if not results:
            return []
        return await self._write(
            partial(leasing.record, results=results, now_ms=now_ms)
        )

    async def next_due_ms(self) -> int | None:
        """Return when the earliest unfinished delivery falls due, if any."""
        # One MIN per messenger: each is a single step down the due index.
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

    async def ping(self) -> None:
        """Run a trivial query; raise if the database does not answer."""
        await self._reader.execute_fetchall("SELECT count(*) FROM messages LIMIT 1")

    async def data_version(self) -> int:
        """Return SQLite's data_version: it moves when any other connection commits.

        Asked of the writer, so it moves for other processes' commits only, not
        for this one's claims and records. It reads shared memory, not the file.
        """
        return await run(self._writer, _data_version)

    async def stats(self, now_ms: int) -> OutboxStats:
        """Count deliveries by messenger and status, and what is waiting."""
        return await upkeep.stats(self._reader, now_ms)

    async def prune(
        self,
        *,
        finished_before_ms: int,
        dedupe_before_ms: int | None,
        idempotency_before_ms: int,
        limit: int,
    ) -> Pruned:
        """Remove one batch of old final deliveries; keep their dedupe records."""
        return await self._write(
            partial(
                upkeep.prune,
                finished_before_ms=finished_before_ms,
                dedupe_before_ms=dedupe_before_ms,
                idempotency_before_ms=idempotency_before_ms,
                limit=limit,
            )
        )

    async def checkpoint(self) -> None:
        """Fold the write-ahead log into the database and truncate it."""

        def fold(db: sqlite3.Connection) -> None:
            with self._lock:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        await run(self._writer, fold)


_GROUP_MAX = 256


def _prepare_schema(conn: sqlite3.Connection, *, upgrade: bool) -> None:
    """Bring an older schema up to date, then create what is missing: all or nothing."""
    migrating.migrate(conn, upgrade=upgrade)
    for statement in DDL:
        conn.execute(statement)


def _accept_queued(
    queued: deque[_Queued], taken: list[_Queued], conn: sqlite3.Connection
) -> list[Accepted | IdempotencyMismatch]:
    """Take the accepts queued by now and store them, on the writer's thread.

    The write lock is held already, so under ``serve --workers N`` the batch
    also holds what arrived while another process had the lock.
    """
    _take(queued, taken)
    return accepting.accept_batch(conn, [job for job, _ in taken])


def _take(queued: deque[_Queued], taken: list[_Queued]) -> None:
    """Move the queue's head to ``taken``, stopping before a second use of one key.

    A repeated Idempotency-Key must see the first one's answer, so it waits
    for a later transaction. The event loop only appends to ``queued`` and
    there is one taker at a time, so peeking at the head and popping it is safe
    from the writer's thread.
    """
    keys: set[str] = set()
    while queued and len(taken) < _GROUP_MAX:
        job = queued[0][0]
        if job.idempotency is not None:
            if job.idempotency.key in keys:
                break
            keys.add(job.idempotency.key)
        taken.append(queued.popleft())


def _data_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version
