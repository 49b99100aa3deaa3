"""The retention janitor against a real SQLite outbox and an injectable clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from builders import (
    ALICE_TG,
    BOB_WA,
    CAROL_VB,
    DAY_MS,
    HOUR_MS,
    NOW_MS,
    message,
    result,
)
from notifier.dispatcher.janitor import Janitor
from notifier.domain.errors import NotFound
from notifier.domain.models import (
    Delivery,
    DeliveryStatus,
    Messenger,
    Recipient,
)
from notifier.storage.base import IdempotencyClaim, Pruned
from notifier.storage.sqlite import SqliteOutbox


class Clock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


class CountingOutbox:
    """Passes every call to a real outbox and records the limit of each prune."""

    def __init__(self, outbox: SqliteOutbox) -> None:
        self._outbox = outbox
        self.prune_limits: list[int] = []

    async def prune(self, **kwargs: Any) -> Pruned:
        self.prune_limits.append(kwargs["limit"])
        return await self._outbox.prune(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[SqliteOutbox]:
    box = await SqliteOutbox.open(tmp_path / "outbox.db", "normal")
    yield box
    await box.close()


def janitor(outbox: Any, clock: Clock, **overrides: Any) -> Janitor:
    settings: dict[str, Any] = dict(
        finished_after_days=30,
        dedupe_window_days=0,
        idempotency_key_hours=24,
        interval_s=60,
        batch_size=500,
    )
    settings.update(overrides)
    return Janitor(outbox, clock=clock, **settings)


async def finish(
    outbox: SqliteOutbox, status: DeliveryStatus, at_ms: int, *recipients: Recipient
) -> list[Delivery]:
    """Accept one message at ``at_ms`` and walk all its deliveries to ``status``.

    Make these in time order: each claim must find only this message's rows due
    on its messengers (an expired lease elsewhere on them would be taken too).
    """
    accepted = await outbox.accept(message(*recipients, at_ms=at_ms))
    ids = [d.delivery.id for d in accepted.deliveries]
    if status is DeliveryStatus.CANCELLED:
        for delivery_id in ids:
            await outbox.cancel(delivery_id, at_ms + 10)
    else:
        limits = {r.messenger: len(ids) for r in recipients}
        claims = await outbox.claim(limits, at_ms, 30_000)
        assert sorted(c.delivery_id for c in claims) == sorted(ids)
        if status is not DeliveryStatus.SENDING:
            results = [result(c, status, at_ms + 10) for c in claims]
            await outbox.record(results, at_ms + 10)
    return [await outbox.get_delivery(i) for i in ids]


async def exists(outbox: SqliteOutbox, delivery_id: str) -> bool:
    try:
        await outbox.get_delivery(delivery_id)
    except NotFound:
        return False
    return True


async def test_janitor_prunes_final_deliveries_older_than_the_retention(
    outbox: SqliteOutbox,
) -> None:
    old_ms = NOW_MS - 31 * DAY_MS
    (sent,) = await finish(outbox, DeliveryStatus.SENT, old_ms, ALICE_TG)
    (failed,) = await finish(outbox, DeliveryStatus.FAILED, old_ms + 1, BOB_WA)
    (cancelled,) = await finish(outbox, DeliveryStatus.CANCELLED, old_ms + 2, CAROL_VB)

    pruned = await janitor(outbox, Clock()).run_once()

    assert pruned.deliveries == 3
    for gone in (sent, failed, cancelled):
        assert not await exists(outbox, gone.id)
        assert await outbox.list_attempts(gone.id) == []


async def test_janitor_keeps_unfinished_and_recent_deliveries(
    outbox: SqliteOutbox,
) -> None:
    old_ms = NOW_MS - 31 * DAY_MS
    (sending,) = await finish(outbox, DeliveryStatus.SENDING, old_ms, ALICE_TG)
    (recent,) = await finish(outbox, DeliveryStatus.SENT, NOW_MS - 29 * DAY_MS, BOB_WA)
    accepted = await outbox.accept(
        message(CAROL_VB, at_ms=old_ms, send_at_ms=NOW_MS + DAY_MS)
    )
    pending = accepted.deliveries[0].delivery

    pruned = await janitor(outbox, Clock()).run_once()

    assert pruned.deliveries == 0
    for kept in (sending, recent, pending):
        assert await exists(outbox, kept.id)
    assert len(await outbox.list_attempts(recent.id)) == 1


async def test_janitor_with_zero_days_keeps_final_deliveries_forever(
    outbox: SqliteOutbox,
) -> None:
    (sent,) = await finish(outbox, DeliveryStatus.SENT, NOW_MS - 900 * DAY_MS, ALICE_TG)

    pruned = await janitor(outbox, Clock(), finished_after_days=0).run_once()

    assert pruned.deliveries == 0
    assert await exists(outbox, sent.id)


@pytest.mark.parametrize(
    "status",
    [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED],
)
async def test_janitor_keeps_the_promise_never_twice_after_pruning(
    outbox: SqliteOutbox, status: DeliveryStatus
) -> None:
    (old,) = await finish(outbox, status, NOW_MS - 31 * DAY_MS, ALICE_TG)
    await janitor(outbox, Clock()).run_once()

    again = await outbox.accept(message(ALICE_TG, at_ms=NOW_MS))

    (answer,) = again.deliveries
    assert answer.duplicate
    assert (answer.delivery.id, answer.delivery.status) == (old.id, status)
    assert not await exists(outbox, old.id)


async def test_janitor_prunes_dedupe_records_past_the_window(
    outbox: SqliteOutbox,
) -> None:
    clock = Clock()
    (old,) = await finish(outbox, DeliveryStatus.SENT, NOW_MS - 31 * DAY_MS, ALICE_TG)
    cleaner = janitor(outbox, clock, dedupe_window_days=60)
    first = await cleaner.run_once()
    clock.now_ms += 30 * DAY_MS

    second = await cleaner.run_once()

    assert (first.deliveries, first.dedupe_records) == (1, 0)
    assert second.dedupe_records == 1
    again = await outbox.accept(message(ALICE_TG, at_ms=clock.now_ms))
    (answer,) = again.deliveries
    assert not answer.duplicate
    assert answer.delivery.id != old.id
    assert answer.delivery.status is DeliveryStatus.PENDING


async def test_janitor_keeps_dedupe_records_inside_the_window(
    outbox: SqliteOutbox,
) -> None:
    (old,) = await finish(outbox, DeliveryStatus.SENT, NOW_MS - 59 * DAY_MS, ALICE_TG)

    pruned = await janitor(outbox, Clock(), dedupe_window_days=60).run_once()

    assert (pruned.deliveries, pruned.dedupe_records) == (1, 0)
    again = await outbox.accept(message(ALICE_TG, at_ms=NOW_MS))
    assert again.deliveries[0].delivery.id == old.id


async def test_janitor_prunes_idempotency_keys_older_than_the_setting(
    outbox: SqliteOutbox,
) -> None:
    stale = IdempotencyClaim("stale", b"h" * 32)
    fresh = IdempotencyClaim("fresh", b"h" * 32)
    await outbox.accept(message(ALICE_TG, at_ms=NOW_MS - 25 * HOUR_MS), stale)
    await outbox.accept(message(BOB_WA, at_ms=NOW_MS - 23 * HOUR_MS), fresh)

    pruned = await janitor(outbox, Clock(), idempotency_key_hours=24).run_once()

    assert pruned.idempotency_keys == 1
    assert not (await outbox.accept(message(ALICE_TG, at_ms=NOW_MS), stale)).replayed
    assert (await outbox.accept(message(BOB_WA, at_ms=NOW_MS), fresh)).replayed


async def test_janitor_prunes_messages_with_no_delivery_left(
    outbox: SqliteOutbox,
) -> None:
    old_ms = NOW_MS - 31 * DAY_MS
    gone = await outbox.accept(message(ALICE_TG, BOB_WA, at_ms=old_ms))
    for d in gone.deliveries:
        await outbox.cancel(d.delivery.id, old_ms + 10)
    half = await outbox.accept(message(CAROL_VB, ALICE_TG, text="b", at_ms=old_ms))
    await outbox.cancel(half.deliveries[0].delivery.id, old_ms + 10)

    pruned = await janitor(outbox, Clock()).run_once()

    assert pruned.messages == 1
    with pytest.raises(NotFound):
        await outbox.get_message(gone.message_id)
    kept = await outbox.get_message(half.message_id)
    assert [d.delivery.recipient for d in kept.deliveries] == [ALICE_TG.id]


async def test_janitor_prunes_a_backlog_in_bounded_batches(
    outbox: SqliteOutbox,
) -> None:
    recipients = [Recipient(Messenger.TELEGRAM, str(10_000 + i)) for i in range(1200)]
    await finish(outbox, DeliveryStatus.SENT, NOW_MS - 31 * DAY_MS, *recipients)
    counting = CountingOutbox(outbox)

    pruned = await janitor(counting, Clock(), batch_size=500).run_once()

    assert pruned.deliveries == 1200
    assert pruned.messages == 1
    assert len(counting.prune_limits) >= 3
    assert set(counting.prune_limits) == {500}
    stats = await outbox.stats(NOW_MS)
    assert sum(stats.counts.values()) == 0


async def test_janitor_shrinks_the_wal_after_a_burst(tmp_path: Path) -> None:
    outbox = await SqliteOutbox.open(tmp_path / "outbox.db", "normal")
    wal = tmp_path / "outbox.db-wal"
    try:
        for batch in range(4):
            recipients = [
                Recipient(Messenger.TELEGRAM, f"{batch}-{i}") for i in range(2500)
            ]
            await outbox.accept(message(*recipients, at_ms=NOW_MS + batch))
        grown = wal.stat().st_size

        await janitor(outbox, Clock()).run_once()

        shrunk = wal.stat().st_size
    finally:
        await outbox.close()
    assert grown > 4 * 1024 * 1024
    assert shrunk <= 4096


async def test_janitor_prunes_in_the_background_once_started(
    outbox: SqliteOutbox,
) -> None:
    (old,) = await finish(outbox, DeliveryStatus.SENT, NOW_MS - 31 * DAY_MS, ALICE_TG)
    cleaner = janitor(outbox, Clock(), interval_s=0.01)

    await cleaner.start()
    try:
        deadline = time.monotonic() + 5
        while await exists(outbox, old.id) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await cleaner.stop()

    assert not await exists(outbox, old.id)
