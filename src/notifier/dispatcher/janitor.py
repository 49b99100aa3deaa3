"""The retention loop: prune old final deliveries in small batches, trim the WAL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from notifier.storage.base import Outbox, Pruned

log = structlog.get_logger("notifier.janitor")

_DAY_MS = 86_400_000


class Janitor:
    """Every ``interval_s``, prunes what retention allows, then checkpoints the WAL.

    Ages of 0 keep rows forever. Each batch is its own short transaction, so
    sends and requests interleave with a long prune instead of waiting for it.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        finished_after_days: float,
        dedupe_window_days: float,
        idempotency_key_hours: float,
        interval_s: float,
        batch_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._finished_after_ms = int(finished_after_days * _DAY_MS)
        self._dedupe_window_ms = int(dedupe_window_days * _DAY_MS)
        self._idempotency_ms = int(idempotency_key_hours * 3_600_000)
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Pruned:
        """Prune until a batch comes back short, then checkpoint; return the totals."""
        total = Pruned(0, 0, 0, 0)
        while True:
            now_ms = int(self._clock() * 1000)
            batch = await self._outbox.prune(
                finished_before_ms=_before(now_ms, self._finished_after_ms) or 0,
                dedupe_before_ms=_before(now_ms, self._dedupe_window_ms),
                idempotency_before_ms=now_ms - self._idempotency_ms,
                limit=self._batch_size,
            )
            total += batch
            if batch.largest < self._batch_size:
                break
            await asyncio.sleep(0)
        await self._outbox.checkpoint()
        if total.total:
            log.info(
                "retention_pruned",
                deliveries=total.deliveries,
                messages=total.messages,
                dedupe_records=total.dedupe_records,
                idempotency_keys=total.idempotency_keys,
            )
        return total

    async def start(self) -> None:
        """Start the loop in the background."""
        self._task = asyncio.create_task(self._loop(), name="janitor")

    async def stop(self) -> None:
        """Stop the loop; a batch already handed to the database still commits."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once()
            except Exception:
                log.exception("retention_failed")


def _before(now_ms: int, age_ms: int) -> int | None:
    """Return the cutoff for an age, or None when an age of 0 means forever."""
    return now_ms - age_ms if age_ms else None
