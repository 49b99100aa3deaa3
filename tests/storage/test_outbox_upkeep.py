"""The outbox contract for upkeep: ping, stats, prune and checkpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from builders import (
    ALICE_TG,
    BOB_WA,
    CAROL_VB,
    DAY_MS,
    LEASE_MS,
    NOW_MS,
    message,
    result,
)
from notifier.domain.errors import NotFound
from notifier.domain.models import (
    Claim,
    Delivery,
    DeliveryStatus,
    Messenger,
    Recipient,
)
from notifier.storage.base import IdempotencyClaim, Outbox, Pruned

Opener = Callable[[Path], Awaitable[Outbox]]


async def claim_all(outbox: Outbox, messenger: Messenger, at_ms: int) -> list[Claim]:
    """Lease every due delivery of one messenger."""
    return await outbox.claim({messenger: 10_000}, at_ms, LEASE_MS)


async def delivery_at(
    outbox: Outbox,
    status: DeliveryStatus,
    at_ms: int,
    recipient: Recipient = ALICE_TG,
    text: str = "Your code is 1234",
) -> Delivery:
    """Accept a delivery at ``at_ms`` and walk it to ``status`` 10 ms later.

    Creating deliveries in time order keeps each claim to the new one alone.
    """
    accepted = await outbox.accept(message(recipient, text=text, at_ms=at_ms))
    delivery = accepted.deliveries[0].delivery
    done_ms = at_ms + 10
    if status is DeliveryStatus.CANCELLED:
        await outbox.cancel(delivery.id, done_ms)
    if status in (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.FAILED):
        (claim,) = await claim_all(outbox, recipient.messenger, at_ms)
        assert claim.delivery_id == delivery.id
        if status is not DeliveryStatus.SENDING:
            await outbox.record([result(claim, status, done_ms)], done_ms)
    return await outbox.get_delivery(delivery.id)


async def prune_all(
    outbox: Outbox,
    finished_before_ms: int,
    dedupe_before_ms: int | None = None,
    idempotency_before_ms: int = 0,
) -> Pruned:
    """Prune in one batch large enough for everything the test made."""
    return await outbox.prune(
        finished_before_ms=finished_before_ms,
        dedupe_before_ms=dedupe_before_ms,
        idempotency_before_ms=idempotency_before_ms,
        limit=1000,
    )


async def exists(outbox: Outbox, delivery_id: str) -> bool:
    try:
        await outbox.get_delivery(delivery_id)
    except NotFound:
        return False
    return True


# ping


async def test_ping_answers_on_an_open_store(outbox: Outbox) -> None:
    await outbox.ping()


async def test_ping_raises_once_the_store_is_closed(
    open_outbox: Opener, tmp_path: Path
) -> None:
    closed = await open_outbox(tmp_path / "closed")
    await closed.close()

    with pytest.raises(Exception):  # noqa: B017 - any error means "not answering"
        await closed.ping()


# stats


async def test_stats_of_an_empty_store_are_zero(outbox: Outbox) -> None:
    stats = await outbox.stats(NOW_MS)

    assert sum(stats.counts.values()) == 0
    assert sum(stats.due.values()) == 0
    assert sum(stats.scheduled.values()) == 0
    assert stats.oldest_due_ms is None
    assert stats.sent_last_minute == 0


async def test_stats_count_deliveries_by_messenger_and_status(outbox: Outbox) -> None:
    start = NOW_MS - 120_000
    vibers = [Recipient(Messenger.VIBER, f"v{i}") for i in range(5)]
    accepted = await outbox.accept(message(*vibers, at_ms=start))
    await outbox.cancel(accepted.deliveries[4].delivery.id, start)
    sent, sent_too, failed, _sending = await claim_all(outbox, Messenger.VIBER, start)
    results = [
        result(sent, DeliveryStatus.SENT, start + 10),
        result(sent_too, DeliveryStatus.SENT, start + 10),
        result(failed, DeliveryStatus.FAILED, start + 10),
    ]
    await outbox.record(results, start + 10)
    await outbox.accept(message(ALICE_TG, BOB_WA, at_ms=NOW_MS - 1000))

    stats = await outbox.stats(NOW_MS)

    counts = {k: n for k, n in stats.counts.items() if n}
    assert counts == {
        (Messenger.VIBER, DeliveryStatus.SENT): 2,
        (Messenger.VIBER, DeliveryStatus.FAILED): 1,
        (Messenger.VIBER, DeliveryStatus.SENDING): 1,
        (Messenger.VIBER, DeliveryStatus.CANCELLED): 1,
        (Messenger.TELEGRAM, DeliveryStatus.PENDING): 1,
        (Messenger.WHATSAPP, DeliveryStatus.PENDING): 1,
    }


async def test_stats_split_pending_into_due_and_scheduled(outbox: Outbox) -> None:
    await outbox.accept(message(ALICE_TG, at_ms=NOW_MS - 20_000))
    await outbox.accept(message(ALICE_TG, text="second", at_ms=NOW_MS - 5_000))
    # Due at exactly now counts as due.
    await outbox.accept(message(BOB_WA, at_ms=NOW_MS))
    await outbox.accept(message(BOB_WA, text="later", send_at_ms=NOW_MS + 60_000))
    await outbox.accept(message(CAROL_VB, send_at_ms=NOW_MS + 1))

    stats = await outbox.stats(NOW_MS)

    assert {m: stats.due.get(m, 0) for m in Messenger} == {
        Messenger.TELEGRAM: 2,
        Messenger.WHATSAPP: 1,
        Messenger.VIBER: 0,
    }
    assert {m: stats.scheduled.get(m, 0) for m in Messenger} == {
        Messenger.TELEGRAM: 0,
        Messenger.WHATSAPP: 1,
        Messenger.VIBER: 1,
    }


async def test_stats_oldest_due_is_the_earliest_pending_due_time(
    outbox: Outbox,
) -> None:
    await outbox.accept(message(BOB_WA, at_ms=NOW_MS - 5_000))
    await outbox.accept(message(ALICE_TG, at_ms=NOW_MS - 20_000))
    await outbox.accept(message(CAROL_VB, send_at_ms=NOW_MS + 60_000))

    stats = await outbox.stats(NOW_MS)

    assert stats.oldest_due_ms == NOW_MS - 20_000


async def test_stats_oldest_due_ignores_scheduled_and_final_deliveries(
    outbox: Outbox,
) -> None:
    await delivery_at(outbox, DeliveryStatus.SENT, NOW_MS - 50_000)
    await outbox.accept(message(CAROL_VB, send_at_ms=NOW_MS + 60_000))

    stats = await outbox.stats(NOW_MS)

    assert stats.oldest_due_ms is None


async def test_stats_count_only_the_last_minutes_sends(outbox: Outbox) -> None:
    vibers = [Recipient(Messenger.VIBER, f"v{i}") for i in range(3)]
    start = NOW_MS - 120_000
    await outbox.accept(message(*vibers, at_ms=start))
    old, recent, failed = await claim_all(outbox, Messenger.VIBER, start)
    results = [
        result(old, DeliveryStatus.SENT, NOW_MS - 90_000),
        result(recent, DeliveryStatus.SENT, NOW_MS - 30_000),
        result(failed, DeliveryStatus.FAILED, NOW_MS - 30_000),
    ]
    await outbox.record(results, NOW_MS - 30_000)

    stats = await outbox.stats(NOW_MS)

    assert stats.sent_last_minute == 1


# prune


async def test_prune_removes_old_final_deliveries_and_their_attempts(
    outbox: Outbox,
) -> None:
    old = NOW_MS - 40 * DAY_MS
    sent = await delivery_at(outbox, DeliveryStatus.SENT, old, ALICE_TG)
    failed = await delivery_at(outbox, DeliveryStatus.FAILED, old + 1, BOB_WA)
    cancelled = await delivery_at(outbox, DeliveryStatus.CANCELLED, old + 2, CAROL_VB)

    pruned = await prune_all(outbox, finished_before_ms=NOW_MS - 30 * DAY_MS)

    assert pruned.deliveries == 3
    for gone in (sent, failed, cancelled):
        assert not await exists(outbox, gone.id)
        assert await outbox.list_attempts(gone.id) == []


async def test_prune_keeps_unfinished_and_recently_finished_deliveries(
    outbox: Outbox,
) -> None:
    old = NOW_MS - 40 * DAY_MS
    recent_sent = await delivery_at(
        outbox, DeliveryStatus.SENT, NOW_MS - DAY_MS, ALICE_TG
    )
    sending = await delivery_at(outbox, DeliveryStatus.SENDING, old, BOB_WA)
    pending = await delivery_at(outbox, DeliveryStatus.PENDING, old, CAROL_VB)

    pruned = await prune_all(outbox, finished_before_ms=NOW_MS - 30 * DAY_MS)

    assert pruned.deliveries == 0
    for kept in (recent_sent, sending, pending):
        assert await exists(outbox, kept.id)
    assert len(await outbox.list_attempts(recent_sent.id)) == 1


async def test_prune_removes_messages_with_no_delivery_left(outbox: Outbox) -> None:
    old = NOW_MS - 40 * DAY_MS
    both_done = await outbox.accept(message(ALICE_TG, BOB_WA, at_ms=old))
    for d in both_done.deliveries:
        await outbox.cancel(d.delivery.id, old + 10)
    half_done = await outbox.accept(message(ALICE_TG, CAROL_VB, text="b", at_ms=old))
    done, waiting = (d.delivery for d in half_done.deliveries)
    await outbox.cancel(done.id, old + 10)

    pruned = await prune_all(outbox, finished_before_ms=NOW_MS - 30 * DAY_MS)

    assert pruned.messages == 1
    with pytest.raises(NotFound):
        await outbox.get_message(both_done.message_id)
    kept = await outbox.get_message(half_done.message_id)
    assert [d.delivery.id for d in kept.deliveries] == [waiting.id]


async def test_prune_keeps_a_duplicate_message_while_its_delivery_lives(
    outbox: Outbox,
) -> None:
    """A message whose only recipient was a duplicate shows the original delivery."""
    first = await outbox.accept(
        message(ALICE_TG, at_ms=NOW_MS - 40 * DAY_MS, send_at_ms=NOW_MS + DAY_MS)
    )
    repeat = await outbox.accept(message(ALICE_TG, at_ms=NOW_MS - 39 * DAY_MS))

    await prune_all(outbox, finished_before_ms=NOW_MS - 30 * DAY_MS)

    shown = await outbox.get_message(repeat.message_id)
    assert [d.delivery.id for d in shown.deliveries] == [
        first.deliveries[0].delivery.id
    ]


async def test_prune_takes_at_most_limit_deliveries_per_batch(outbox: Outbox) -> None:
    old = NOW_MS - 40 * DAY_MS
    recipients = [Recipient(Messenger.TELEGRAM, str(1000 + i)) for i in range(5)]
    accepted = await outbox.accept(message(*recipients, at_ms=old))
    for d in accepted.deliveries:
        await outbox.cancel(d.delivery.id, old + 10)

    batches = [
        await outbox.prune(
            finished_before_ms=NOW_MS,
            dedupe_before_ms=None,
            idempotency_before_ms=0,
            limit=2,
        )
        for _ in range(4)
    ]

    assert [b.deliveries for b in batches] == [2, 2, 1, 0]
    assert [b.messages for b in batches] == [0, 0, 1, 0]


@pytest.mark.parametrize(
    "status",
    [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED],
)
async def test_prune_keeps_the_dedupe_record_of_a_pruned_delivery(
    outbox: Outbox, status: DeliveryStatus
) -> None:
    old = await delivery_at(outbox, status, NOW_MS - 40 * DAY_MS)
    await prune_all(outbox, finished_before_ms=NOW_MS - 30 * DAY_MS)

    again = await outbox.accept(message(ALICE_TG, at_ms=NOW_MS))

    (answer,) = again.deliveries
    assert answer.duplicate
    assert answer.delivery.id == old.id
    assert answer.delivery.status is status
    assert answer.delivery.send_at_ms == old.send_at_ms
    assert not await exists(outbox, old.id)


async def test_prune_with_a_dedupe_cutoff_removes_only_old_tombstones(
    outbox: Outbox,
) -> None:
    dave, erin = Recipient(Messenger.TELEGRAM, "d"), Recipient(Messenger.TELEGRAM, "e")
    # Pruned 10 days after creation: its record is past the dedupe cutoff.
    await delivery_at(outbox, DeliveryStatus.SENT, NOW_MS - 10 * DAY_MS, ALICE_TG)
    # Never finished: its record keeps guarding it, however old.
    waiting = await outbox.accept(
        message(BOB_WA, at_ms=NOW_MS - 10 * DAY_MS, send_at_ms=NOW_MS + DAY_MS)
    )
    # Finished but too recently to prune: the delivery is still there.
    recent = await outbox.accept(
        message(dave, at_ms=NOW_MS - 10 * DAY_MS, send_at_ms=NOW_MS - 1000)
    )
    (claim,) = await claim_all(outbox, Messenger.TELEGRAM, NOW_MS - 1000)
    await outbox.record([result(claim, DeliveryStatus.SENT, NOW_MS - 900)], NOW_MS)
    # Pruned, but its record is newer than the dedupe cutoff.
    young = await delivery_at(outbox, DeliveryStatus.SENT, NOW_MS - 2 * DAY_MS, erin)

    pruned = await prune_all(
        outbox,
        finished_before_ms=NOW_MS - DAY_MS,
        dedupe_before_ms=NOW_MS - 5 * DAY_MS,
    )

    assert pruned.dedupe_records == 1
    again = await outbox.accept(message(ALICE_TG, BOB_WA, dave, erin, at_ms=NOW_MS))
    answers = [(a.duplicate, a.delivery.id) for a in again.deliveries]
    assert answers[0][0] is False
    assert answers[1:] == [
        (True, waiting.deliveries[0].delivery.id),
        (True, recent.deliveries[0].delivery.id),
        (True, young.id),
    ]


async def test_prune_without_a_dedupe_cutoff_keeps_every_dedupe_record(
    outbox: Outbox,
) -> None:
    old = await delivery_at(outbox, DeliveryStatus.SENT, NOW_MS - 400 * DAY_MS)

    pruned = await prune_all(outbox, finished_before_ms=NOW_MS)

    assert pruned.dedupe_records == 0
    again = await outbox.accept(message(ALICE_TG, at_ms=NOW_MS))
    assert again.deliveries[0].delivery.id == old.id


async def test_prune_removes_idempotency_keys_older_than_the_cutoff(
    outbox: Outbox,
) -> None:
    old_key = IdempotencyClaim("old", b"h" * 32)
    new_key = IdempotencyClaim("new", b"h" * 32)
    await outbox.accept(message(ALICE_TG, at_ms=NOW_MS - 25 * 3_600_000), old_key)
    await outbox.accept(message(BOB_WA, at_ms=NOW_MS - 3_600_000), new_key)

    pruned = await prune_all(
        outbox, finished_before_ms=0, idempotency_before_ms=NOW_MS - 24 * 3_600_000
    )

    assert pruned.idempotency_keys == 1
    assert not (await outbox.accept(message(ALICE_TG), old_key)).replayed
    assert (await outbox.accept(message(BOB_WA), new_key)).replayed


async def test_prune_of_nothing_old_changes_nothing(outbox: Outbox) -> None:
    kept = await delivery_at(outbox, DeliveryStatus.SENT, NOW_MS)

    pruned = await prune_all(outbox, finished_before_ms=NOW_MS - DAY_MS)

    assert pruned == Pruned(0, 0, 0, 0)
    assert await exists(outbox, kept.id)


# checkpoint


async def test_checkpoint_keeps_every_committed_row(
    open_outbox: Opener, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = await open_outbox(store)
    accepted = await first.accept(message(ALICE_TG, BOB_WA))

    await first.checkpoint()
    await first.close()

    reopened = await open_outbox(store)
    try:
        stored = await reopened.get_message(accepted.message_id)
    finally:
        await reopened.close()
    assert len(stored.deliveries) == 2
