"""The outbox contract: what every backend must do, seen through Outbox only."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from builders import ALICE_TG, BOB_WA, CAROL_VB, LEASE_MS, NOW_MS, message, result
from notifier.domain.errors import Conflict, IdempotencyMismatch, NotFound
from notifier.domain.ids import new_id
from notifier.domain.models import (
    Attempt,
    Claim,
    Delivery,
    DeliveryStatus,
    Messenger,
    NewMessage,
    Outcome,
    Recipient,
)
from notifier.domain.recipients import normalise
from notifier.storage.base import IdempotencyClaim, Outbox
from notifier.storage.schema import PRAGMAS
from notifier.storage.sqlite import SqliteOutbox, accepting, rows
from notifier.storage.sqlite import outbox as outbox_module
from notifier.storage.sqlite.accepting import Job, accept_batch
from notifier.storage.sqlite.locking import FileLock

EVERY_MESSENGER = {m: 100 for m in Messenger}


async def accept_one(outbox: Outbox, msg: NewMessage | None = None) -> Delivery:
    """Accept a message to one recipient and return its delivery."""
    accepted = await outbox.accept(msg or message())
    return accepted.deliveries[0].delivery


async def claim_one(outbox: Outbox, at_ms: int = NOW_MS) -> Claim:
    """Claim exactly one due delivery."""
    (claim,) = await outbox.claim(EVERY_MESSENGER, at_ms, LEASE_MS)
    return claim


async def delivery_in(outbox: Outbox, status: DeliveryStatus) -> Delivery:
    """Accept one delivery and walk it to ``status`` the way the dispatcher would."""
    delivery = await accept_one(outbox)
    if status is DeliveryStatus.CANCELLED:
        await outbox.cancel(delivery.id, NOW_MS)
    if status in (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.FAILED):
        claim = await claim_one(outbox)
        if status is not DeliveryStatus.SENDING:
            await outbox.record([result(claim, status, at_ms=NOW_MS + 10)], NOW_MS + 10)
    return await outbox.get_delivery(delivery.id)


async def all_deliveries(outbox: Outbox) -> list[Delivery]:
    return await outbox.list_deliveries(
        status=None, messenger=None, limit=1000, before_id=None
    )


# accept


async def test_accept_stores_the_message_and_a_pending_delivery_per_recipient(
    outbox: Outbox,
) -> None:
    msg = message(ALICE_TG, BOB_WA, CAROL_VB, send_at_ms=NOW_MS + 5_000)

    accepted = await outbox.accept(msg)

    assert (accepted.message_id, accepted.created_at_ms) == (msg.id, NOW_MS)
    assert not accepted.replayed
    assert [
        (a.delivery.messenger, a.delivery.recipient) for a in accepted.deliveries
    ] == [(r.messenger, r.id) for r in msg.recipients]
    for answer in accepted.deliveries:
        assert not answer.duplicate
        assert answer.delivery.message_id == msg.id
        assert answer.delivery.status is DeliveryStatus.PENDING
        assert answer.delivery.send_at_ms == NOW_MS + 5_000
        assert answer.delivery.due_at_ms == NOW_MS + 5_000
        assert answer.delivery.attempts_made == 0
    stored = await outbox.get_message(msg.id)
    assert (stored.text, stored.created_at_ms) == (msg.text, NOW_MS)
    assert stored.deliveries == accepted.deliveries
    assert len(await all_deliveries(outbox)) == 3


async def test_accept_gives_a_recipient_its_own_send_at(outbox: Outbox) -> None:
    msg = dataclasses.replace(
        message(ALICE_TG, BOB_WA, send_at_ms=NOW_MS + 1_000),
        send_at_overrides={BOB_WA: NOW_MS + 9_000},
    )

    accepted = await outbox.accept(msg)

    alice, bob = (a.delivery for a in accepted.deliveries)
    assert (alice.send_at_ms, alice.due_at_ms) == (NOW_MS + 1_000, NOW_MS + 1_000)
    assert (bob.send_at_ms, bob.due_at_ms) == (NOW_MS + 9_000, NOW_MS + 9_000)


async def test_accept_answers_a_repeat_with_the_first_delivery(outbox: Outbox) -> None:
    """The same text to one recipient, spelled another way in another message."""
    first = await accept_one(
        outbox, message(normalise(Messenger.WHATSAPP, "+7 999 123-45-67"))
    )

    again = await outbox.accept(
        message(
            normalise(Messenger.WHATSAPP, "79991234567"), ALICE_TG, at_ms=NOW_MS + 1
        )
    )

    repeat, fresh = again.deliveries
    assert repeat.duplicate
    assert repeat.delivery == first
    assert not fresh.duplicate
    assert len(await all_deliveries(outbox)) == 2


async def test_accept_treats_nfc_and_nfd_spellings_as_one_text(outbox: Outbox) -> None:
    first = await accept_one(outbox, message(text="caf\u00e9"))

    again = await outbox.accept(message(text="cafe\u0301", at_ms=NOW_MS + 1))

    assert again.deliveries[0].duplicate
    assert again.deliveries[0].delivery.id == first.id


async def test_accept_answers_a_repeat_whatever_the_first_delivery_became(
    outbox: Outbox,
) -> None:
    """A failed or cancelled delivery is retried through retry, not a new accept."""
    first = await delivery_in(outbox, DeliveryStatus.CANCELLED)

    again = await outbox.accept(message(at_ms=NOW_MS + 1))

    assert again.deliveries[0].duplicate
    assert again.deliveries[0].delivery == first
    assert len(await all_deliveries(outbox)) == 1


async def test_accept_same_text_on_another_messenger_is_not_a_duplicate(
    outbox: Outbox,
) -> None:
    await accept_one(outbox, message(Recipient(Messenger.TELEGRAM, "4242")))

    again = await outbox.accept(
        message(Recipient(Messenger.VIBER, "4242"), at_ms=NOW_MS + 1)
    )

    assert not again.deliveries[0].duplicate
    assert len(await all_deliveries(outbox)) == 2


async def test_accept_with_a_known_idempotency_key_replays_the_first_answer(
    outbox: Outbox,
) -> None:
    key = IdempotencyClaim("key-1", b"hash-of-body")
    first = await outbox.accept(message(ALICE_TG, BOB_WA), key)
    await outbox.claim(EVERY_MESSENGER, NOW_MS, LEASE_MS)
    retried = message(ALICE_TG, BOB_WA, at_ms=NOW_MS + 1)

    replay = await outbox.accept(retried, key)

    assert replay == dataclasses.replace(first, replayed=True)
    with pytest.raises(NotFound):
        await outbox.get_message(retried.id)
    assert len(await all_deliveries(outbox)) == 2


async def test_accept_with_a_reused_idempotency_key_and_another_body_raises(
    outbox: Outbox,
) -> None:
    await outbox.accept(message(), IdempotencyClaim("key-1", b"hash-one"))
    other = message(BOB_WA, text="Another text", at_ms=NOW_MS + 1)

    with pytest.raises(IdempotencyMismatch) as raised:
        await outbox.accept(other, IdempotencyClaim("key-1", b"hash-two"))

    assert raised.value.key == "key-1"
    with pytest.raises(NotFound):
        await outbox.get_message(other.id)
    assert len(await all_deliveries(outbox)) == 1


async def test_accept_that_fails_midway_leaves_nothing_behind(outbox: Outbox) -> None:
    """A send time no backend can store fails after the message row is written."""
    doomed = message(ALICE_TG, BOB_WA, send_at_ms=2**63)

    with pytest.raises(Exception):  # noqa: B017 - each backend has its own error
        await outbox.accept(doomed)

    with pytest.raises(NotFound):
        await outbox.get_message(doomed.id)
    assert await all_deliveries(outbox) == []
    retried = await outbox.accept(message(ALICE_TG, BOB_WA, at_ms=NOW_MS + 1))
    assert [a.duplicate for a in retried.deliveries] == [False, False]


# get


async def test_get_delivery_returns_the_delivery_as_accepted(outbox: Outbox) -> None:
    delivery = await accept_one(outbox)

    found = await outbox.get_delivery(delivery.id)

    assert found == delivery


@pytest.mark.parametrize("kind", ["message", "delivery"])
async def test_get_of_an_unknown_id_raises_not_found(outbox: Outbox, kind: str) -> None:
    await accept_one(outbox)
    unknown = new_id(NOW_MS)
    get = outbox.get_message if kind == "message" else outbox.get_delivery

    with pytest.raises(NotFound) as raised:
        await get(unknown)

    assert (raised.value.kind, raised.value.ident) == (kind, unknown)


# list_deliveries


async def test_list_deliveries_returns_newest_first(outbox: Outbox) -> None:
    ids = [
        (await accept_one(outbox, message(text=f"text {i}", at_ms=NOW_MS + i))).id
        for i in range(4)
    ]

    listed = await all_deliveries(outbox)

    assert [d.id for d in listed] == ids[::-1]


async def test_list_deliveries_filters_by_status_and_messenger(outbox: Outbox) -> None:
    accepted = await outbox.accept(message(ALICE_TG, BOB_WA, CAROL_VB))
    alice, bob, carol = (a.delivery.id for a in accepted.deliveries)
    await outbox.cancel(bob, NOW_MS)

    pending = await outbox.list_deliveries(
        status=DeliveryStatus.PENDING, messenger=None, limit=10, before_id=None
    )
    viber = await outbox.list_deliveries(
        status=None, messenger=Messenger.VIBER, limit=10, before_id=None
    )
    both = await outbox.list_deliveries(
        status=DeliveryStatus.CANCELLED,
        messenger=Messenger.TELEGRAM,
        limit=10,
        before_id=None,
    )

    assert {d.id for d in pending} == {alice, carol}
    assert [d.id for d in viber] == [carol]
    assert both == []


async def test_list_deliveries_pages_with_before_id(outbox: Outbox) -> None:
    for i in range(5):
        await accept_one(outbox, message(text=f"text {i}", at_ms=NOW_MS + i))
    everything = await all_deliveries(outbox)

    pages, before_id = [], None
    for _ in range(5):
        page = await outbox.list_deliveries(
            status=None, messenger=None, limit=2, before_id=before_id
        )
        if not page:
            break
        pages.append([d.id for d in page])
        before_id = page[-1].id

    assert pages == [
        [d.id for d in everything[0:2]],
        [d.id for d in everything[2:4]],
        [d.id for d in everything[4:5]],
    ]


# claim


async def test_claim_takes_no_more_than_each_messengers_limit(outbox: Outbox) -> None:
    await outbox.accept(
        message(*(Recipient(Messenger.TELEGRAM, f"{i}0") for i in range(1, 4)))
    )
    await outbox.accept(
        message(*(Recipient(Messenger.WHATSAPP, f"+4915100000{i}") for i in range(2)))
    )
    await outbox.accept(message(CAROL_VB))

    claims = await outbox.claim(
        {Messenger.TELEGRAM: 2, Messenger.WHATSAPP: 1, Messenger.VIBER: 0},
        NOW_MS,
        LEASE_MS,
    )

    taken = [c.messenger for c in claims]
    assert sorted(taken) == sorted([Messenger.TELEGRAM] * 2 + [Messenger.WHATSAPP])


async def test_claim_takes_only_due_deliveries(outbox: Outbox) -> None:
    later = await accept_one(outbox, message(send_at_ms=NOW_MS + 60_000))

    early = await outbox.claim(EVERY_MESSENGER, NOW_MS + 59_999, LEASE_MS)
    on_time = await outbox.claim(EVERY_MESSENGER, NOW_MS + 60_000, LEASE_MS)

    assert early == []
    assert [c.delivery_id for c in on_time] == [later.id]


async def test_claim_leases_the_delivery_and_opens_an_attempt(outbox: Outbox) -> None:
    msg = message(BOB_WA, text="Hello, Bob")
    delivery = await accept_one(outbox, msg)

    claim = await claim_one(outbox)

    assert (claim.delivery_id, claim.message_id) == (delivery.id, msg.id)
    assert (claim.messenger, claim.recipient) == (BOB_WA.messenger, BOB_WA.id)
    assert claim.text == "Hello, Bob"
    assert (claim.attempt, claim.attempts_counted, claim.reclaimed) == (1, 0, False)
    leased = await outbox.get_delivery(delivery.id)
    assert leased.status is DeliveryStatus.SENDING
    assert leased.due_at_ms == NOW_MS + LEASE_MS
    assert leased.attempts_made == 1
    assert await outbox.list_attempts(delivery.id) == [
        Attempt(1, NOW_MS, None, None, None)
    ]


async def test_claim_does_not_take_a_delivery_whose_lease_holds(outbox: Outbox) -> None:
    await accept_one(outbox)
    await claim_one(outbox)

    again = await outbox.claim(EVERY_MESSENGER, NOW_MS + LEASE_MS - 1, LEASE_MS)

    assert again == []


async def test_claim_takes_back_a_delivery_whose_lease_ran_out(outbox: Outbox) -> None:
    await accept_one(outbox)
    first = await claim_one(outbox)

    second = await claim_one(outbox, at_ms=NOW_MS + LEASE_MS)

    assert second.delivery_id == first.delivery_id
    assert second.reclaimed
    assert second.attempt == 2
    assert second.lease_token != first.lease_token
    attempts = await outbox.list_attempts(first.delivery_id)
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, Outcome.LEASE_EXPIRED),
        (2, None),
    ]
    assert attempts[0].finished_at_ms == NOW_MS + LEASE_MS


# record


@pytest.mark.parametrize(
    ("token_of", "attempt_of"),
    [
        ("first", "first"),  # a worker that lost its lease reports late
        ("first", "second"),  # right attempt number, someone else's token
        ("second", "first"),  # right token, an old attempt number
    ],
)
async def test_record_discards_a_result_without_the_current_lease(
    outbox: Outbox, token_of: str, attempt_of: str
) -> None:
    await accept_one(outbox)
    claims = {"first": await claim_one(outbox)}
    claims["second"] = await claim_one(outbox, at_ms=NOW_MS + LEASE_MS)
    before = await outbox.get_delivery(claims["first"].delivery_id)
    stale = dataclasses.replace(
        result(claims["first"], DeliveryStatus.SENT, at_ms=NOW_MS + LEASE_MS + 5),
        lease_token=claims[token_of].lease_token,
        attempt=claims[attempt_of].attempt,
    )

    applied = await outbox.record([stale], NOW_MS + LEASE_MS + 5)

    assert applied == []
    assert await outbox.get_delivery(before.id) == before
    attempts = await outbox.list_attempts(before.id)
    assert [a.outcome for a in attempts] == [Outcome.LEASE_EXPIRED, None]


async def test_record_applies_the_result_of_the_current_lease(outbox: Outbox) -> None:
    await accept_one(outbox)
    await claim_one(outbox)
    current = await claim_one(outbox, at_ms=NOW_MS + LEASE_MS)
    sent = result(current, DeliveryStatus.SENT, at_ms=NOW_MS + LEASE_MS + 5)

    applied = await outbox.record([sent], NOW_MS + LEASE_MS + 5)

    assert applied == [sent]


async def test_record_applies_only_the_first_of_two_results_of_one_lease(
    outbox: Outbox,
) -> None:
    delivery = await accept_one(outbox)
    claim = await claim_one(outbox)
    sent = result(claim, DeliveryStatus.SENT, at_ms=NOW_MS + 5)
    released = result(
        claim, DeliveryStatus.PENDING, at_ms=NOW_MS + 6, outcome=Outcome.RELEASED
    )

    applied = await outbox.record([sent, released], NOW_MS + 6)

    assert applied == [sent]
    assert (await outbox.get_delivery(delivery.id)).status == DeliveryStatus.SENT
    attempts = await outbox.list_attempts(delivery.id)
    assert [a.outcome for a in attempts] == [Outcome.SENT]


async def test_record_sent_sets_sent_at_and_clears_due(outbox: Outbox) -> None:
    await accept_one(outbox)
    claim = await claim_one(outbox)

    await outbox.record(
        [result(claim, DeliveryStatus.SENT, at_ms=NOW_MS + 7)], NOW_MS + 9
    )

    delivery = await outbox.get_delivery(claim.delivery_id)
    assert delivery.status is DeliveryStatus.SENT
    assert delivery.sent_at_ms == NOW_MS + 7
    assert delivery.due_at_ms is None
    assert delivery.attempts_counted == 1
    assert await outbox.list_attempts(claim.delivery_id) == [
        Attempt(1, NOW_MS, NOW_MS + 7, Outcome.SENT, None)
    ]
    assert await outbox.claim(EVERY_MESSENGER, NOW_MS + 10 * LEASE_MS, LEASE_MS) == []


async def test_record_pending_schedules_the_retry_at_due_at(outbox: Outbox) -> None:
    await accept_one(outbox)
    claim = await claim_one(outbox)
    retry = result(
        claim,
        DeliveryStatus.PENDING,
        at_ms=NOW_MS + 7,
        due_at_ms=NOW_MS + 2_000,
        error="the messenger timed out",
    )

    await outbox.record([retry], NOW_MS + 7)

    delivery = await outbox.get_delivery(claim.delivery_id)
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.due_at_ms == NOW_MS + 2_000
    assert delivery.last_error == "the messenger timed out"
    assert await outbox.claim(EVERY_MESSENGER, NOW_MS + 1_999, LEASE_MS) == []
    again = await claim_one(outbox, at_ms=NOW_MS + 2_000)
    assert (again.attempt, again.attempts_counted, again.reclaimed) == (2, 1, False)


async def test_record_failed_makes_the_delivery_final(outbox: Outbox) -> None:
    await accept_one(outbox)
    claim = await claim_one(outbox)

    await outbox.record(
        [result(claim, DeliveryStatus.FAILED, at_ms=NOW_MS + 7, error="blocked")],
        NOW_MS + 7,
    )

    delivery = await outbox.get_delivery(claim.delivery_id)
    assert (delivery.status, delivery.due_at_ms) == (DeliveryStatus.FAILED, None)
    assert delivery.last_error == "blocked"
    assert delivery.sent_at_ms is None


# cancel


async def test_cancel_of_a_pending_delivery_takes_it_out_of_the_queue(
    outbox: Outbox,
) -> None:
    delivery = await accept_one(outbox)

    cancelled = await outbox.cancel(delivery.id, NOW_MS + 3)

    assert cancelled.status is DeliveryStatus.CANCELLED
    assert cancelled.due_at_ms is None
    assert cancelled.updated_at_ms == NOW_MS + 3
    assert await outbox.get_delivery(delivery.id) == cancelled
    assert await outbox.claim(EVERY_MESSENGER, NOW_MS + 5, LEASE_MS) == []


@pytest.mark.parametrize("status", [DeliveryStatus.SENDING, DeliveryStatus.SENT])
async def test_cancel_too_late_raises_conflict_with_the_current_delivery(
    outbox: Outbox, status: DeliveryStatus
) -> None:
    delivery = await delivery_in(outbox, status)

    with pytest.raises(Conflict) as raised:
        await outbox.cancel(delivery.id, NOW_MS + 20)

    assert raised.value.current == delivery
    assert await outbox.get_delivery(delivery.id) == delivery


async def test_cancel_of_an_unknown_delivery_raises_not_found(outbox: Outbox) -> None:
    unknown = new_id(NOW_MS)

    with pytest.raises(NotFound):
        await outbox.cancel(unknown, NOW_MS)


# retry


async def test_retry_of_a_failed_delivery_queues_it_with_a_fresh_budget(
    outbox: Outbox,
) -> None:
    failed = await delivery_in(outbox, DeliveryStatus.FAILED)

    queued = await outbox.retry(failed.id, NOW_MS + 50)

    assert queued.status is DeliveryStatus.PENDING
    assert (queued.attempts_counted, queued.last_error) == (0, None)
    assert queued.due_at_ms == NOW_MS + 50
    again = await claim_one(outbox, at_ms=NOW_MS + 50)
    assert (again.delivery_id, again.attempt, again.attempts_counted) == (
        failed.id,
        2,
        0,
    )


@pytest.mark.parametrize(
    "status",
    [
        DeliveryStatus.PENDING,
        DeliveryStatus.SENDING,
        DeliveryStatus.SENT,
        DeliveryStatus.CANCELLED,
    ],
)
async def test_retry_of_a_delivery_that_has_not_failed_raises_conflict(
    outbox: Outbox, status: DeliveryStatus
) -> None:
    delivery = await delivery_in(outbox, status)

    with pytest.raises(Conflict) as raised:
        await outbox.retry(delivery.id, NOW_MS + 20)

    assert raised.value.current == delivery
    assert await outbox.get_delivery(delivery.id) == delivery


# next_due_ms


async def test_next_due_ms_is_none_with_nothing_to_do(outbox: Outbox) -> None:
    await delivery_in(outbox, DeliveryStatus.SENT)

    due = await outbox.next_due_ms()

    assert due is None


async def test_next_due_ms_returns_the_earliest_due_time(outbox: Outbox) -> None:
    await accept_one(outbox, message(ALICE_TG, send_at_ms=NOW_MS + 9_000))
    await accept_one(outbox, message(BOB_WA, send_at_ms=NOW_MS + 4_000))
    await accept_one(outbox, message(CAROL_VB, send_at_ms=NOW_MS + 6_000))

    due = await outbox.next_due_ms()

    assert due == NOW_MS + 4_000


async def test_next_due_ms_counts_a_lease_expiry(outbox: Outbox) -> None:
    """A delivery under lease falls due again when its lease runs out."""
    await accept_one(outbox, message(ALICE_TG))
    await accept_one(outbox, message(BOB_WA, send_at_ms=NOW_MS + LEASE_MS * 2))
    await outbox.claim({Messenger.TELEGRAM: 1}, NOW_MS, LEASE_MS)

    due = await outbox.next_due_ms()

    assert due == NOW_MS + LEASE_MS


# concurrency


async def test_accept_of_one_text_from_many_callers_makes_one_delivery(
    outbox: Outbox,
) -> None:
    messages = [message(BOB_WA, at_ms=NOW_MS + i) for i in range(20)]

    answers = await asyncio.gather(*(outbox.accept(m) for m in messages))

    ids = {a.deliveries[0].delivery.id for a in answers}
    assert len(ids) == 1
    assert [d.id for d in await all_deliveries(outbox)] == list(ids)
    assert sum(not a.deliveries[0].duplicate for a in answers) == 1


async def test_accept_from_two_outboxes_on_one_store_makes_one_delivery(
    open_outbox: Callable[[Path], Awaitable[Outbox]], tmp_path: Path
) -> None:
    """Two writers on one store, as two processes would be."""
    first, second = await open_outbox(tmp_path), await open_outbox(tmp_path)
    messages = [message(BOB_WA, at_ms=NOW_MS + i) for i in range(20)]

    try:
        answers = await asyncio.gather(
            *((first, second)[i % 2].accept(m) for i, m in enumerate(messages))
        )
        stored = await all_deliveries(first)
    finally:
        await first.close()
        await second.close()

    ids = {a.deliveries[0].delivery.id for a in answers}
    assert len(ids) == 1
    assert [d.id for d in stored] == list(ids)
    assert sum(not a.deliveries[0].duplicate for a in answers) == 1


# SQLite only: the rows themselves, after a failure late in accept.


async def test_sqlite_accept_that_fails_at_its_last_insert_rolls_all_back(
    tmp_path: Path,
) -> None:
    """The idempotency record is written last; a failure there undoes the rest."""
    path = tmp_path / "outbox.db"
    outbox = await SqliteOutbox.open(path, synchronous="normal")
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TRIGGER fail_late BEFORE INSERT ON idempotency_keys "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        db.commit()

    try:
        with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
            await outbox.accept(message(ALICE_TG, BOB_WA), IdempotencyClaim("k", b"h"))
    finally:
        await outbox.close()

    with closing(sqlite3.connect(path)) as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in (
                "messages",
                "deliveries",
                "dedupe",
                "message_deliveries",
                "attempts",
                "idempotency_keys",
            )
        }
    assert counts == dict.fromkeys(counts, 0)


async def test_sqlite_write_cancelled_while_waiting_for_the_lock_leaves_no_trace(
    tmp_path: Path,
) -> None:
    """A caller may give up while another process holds the write lock."""
    path = tmp_path / "outbox.db"
    outbox = await SqliteOutbox.open(path, synchronous="normal")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waiting = asyncio.create_task(outbox.accept(message(ALICE_TG)))
    await asyncio.sleep(0.1)  # long enough to reach BEGIN, which waits for the lock
    waiting.cancel()
    other.execute("COMMIT")
    with pytest.raises(asyncio.CancelledError):
        await waiting

    try:
        accepted = await outbox.accept(message(BOB_WA))
    finally:
        other.close()
        await outbox.close()

    assert not accepted.deliveries[0].duplicate


async def test_sqlite_accepts_queued_while_another_process_writes_share_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is taken once the lock is held, not before waiting for it."""
    path = tmp_path / "outbox.db"
    outbox = await SqliteOutbox.open(path, synchronous="normal")
    batches: list[int] = []

    def counted(db: sqlite3.Connection, jobs: Sequence[Job]) -> list[object]:
        batches.append(len(jobs))
        return [*accept_batch(db, jobs)]

    monkeypatch.setattr(accepting, "accept_batch", counted)
    other = FileLock(f"{path}-lock")  # another process's turn to write
    other.__enter__()
    first = asyncio.create_task(outbox.accept(message(ALICE_TG)))
    await asyncio.sleep(0.1)  # its commit is on the writer's thread, waiting
    later = [asyncio.create_task(outbox.accept(message(r))) for r in (BOB_WA, CAROL_VB)]
    await asyncio.sleep(0)
    other.__exit__(None, None, None)

    try:
        answers = await asyncio.gather(first, *later)
    finally:
        other.close()
        await outbox.close()

    assert batches == [3]
    assert [a.deliveries[0].delivery.recipient for a in answers] == [
        r.id for r in (ALICE_TG, BOB_WA, CAROL_VB)
    ]


async def test_sqlite_accepts_get_the_error_of_a_write_that_fails_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such as the lock file failing: the queue must not wait on it forever."""
    outbox = await SqliteOutbox.open(tmp_path / "outbox.db", synchronous="normal")

    def broken(self: FileLock) -> None:
        raise OSError("the lock file is gone")

    monkeypatch.setattr(FileLock, "__enter__", broken)
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(outbox.accept(message(r)) for r in (ALICE_TG, BOB_WA, CAROL_VB)),
                return_exceptions=True,
            ),
            timeout=10,
        )
    finally:
        monkeypatch.undo()
        await outbox.close()

    assert [str(a) for a in answers] == ["the lock file is gone"] * 3


async def test_sqlite_accepts_queued_behind_a_locked_file_all_fail_after_one_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not one busy_timeout after another: the lock is the file's, not a job's."""
    monkeypatch.setattr(rows, "PRAGMAS", (*PRAGMAS, "PRAGMA busy_timeout = 100"))
    path = tmp_path / "outbox.db"
    outbox = await SqliteOutbox.open(path, synchronous="normal")
    writes = 0
    real_write = outbox_module.write

    async def counted(*args: Any) -> Any:
        nonlocal writes
        writes += 1
        return await real_write(*args)

    monkeypatch.setattr(outbox_module, "write", counted)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an outside program holds the write lock
    recipients = [Recipient(Messenger.TELEGRAM, str(1000 + i)) for i in range(6)]
    try:
        answers = await asyncio.gather(
            *(outbox.accept(message(r)) for r in recipients), return_exceptions=True
        )
    finally:
        other.execute("ROLLBACK")
        other.close()
        await outbox.close()

    assert all(isinstance(a, sqlite3.OperationalError) for a in answers)
    assert writes == 1


async def test_data_version_moves_for_another_outboxs_commit_not_its_own(
    open_outbox: Callable[[Path], Awaitable[Outbox]], tmp_path: Path
) -> None:
    mine, theirs = await open_outbox(tmp_path), await open_outbox(tmp_path)
    try:
        start = await mine.data_version()
        await accept_one(mine)
        after_own = await mine.data_version()
        await accept_one(theirs, message(BOB_WA))
        after_other = await mine.data_version()
    finally:
        await mine.close()
        await theirs.close()

    assert after_own == start
    assert after_other != start
