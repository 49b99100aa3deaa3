"""A stateful model of the outbox: leases never overlap and nothing is lost."""

from __future__ import annotations

import asyncio
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from notifier.domain.errors import Conflict
from notifier.domain.ids import new_id
from notifier.domain.models import (
    Claim,
    Delivery,
    DeliveryStatus,
    Messenger,
    NewMessage,
    Outcome,
    Recipient,
    Result,
)
from notifier.storage.base import Outbox

T = TypeVar("T")
Key = tuple[Messenger, str, str]

START_MS = 1_700_000_000_000
LEASE_MS = 30_000

# "café" twice on purpose: NFC and NFD spellings are one text to dedupe.
TEXTS = ("hi", "caf\u00e9", "cafe\u0301", "see you at 5")
RECIPIENTS = (
    Recipient(Messenger.TELEGRAM, "1001"),
    Recipient(Messenger.TELEGRAM, "@alice_bot"),
    Recipient(Messenger.WHATSAPP, "+79991234567"),
    Recipient(Messenger.VIBER, "carol-1"),
)
# Two workers with different slots; B never sends to Viber.
LIMITS = {
    "A": {Messenger.TELEGRAM: 2, Messenger.WHATSAPP: 1, Messenger.VIBER: 1},
    "B": {Messenger.TELEGRAM: 1, Messenger.WHATSAPP: 2},
}
# What a worker can report: (outcome, next status, retry delay, counted).
REPORTS = {
    "sent": (Outcome.SENT, DeliveryStatus.SENT, None, True),
    "transient": (Outcome.TRANSIENT_ERROR, DeliveryStatus.PENDING, 2_000, True),
    "rate_limited": (Outcome.RATE_LIMITED, DeliveryStatus.PENDING, 1_000, False),
    "permanent": (Outcome.PERMANENT_ERROR, DeliveryStatus.FAILED, None, True),
}
UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class Lease:
    """A lease as the worker that took it believes it holds it."""

    worker: str
    claim: Claim
    claimed_at_ms: int


class OutboxMachine(RuleBasedStateMachine):
    """Two workers, a fake clock and clients, against one outbox."""

    def __init__(self, open_outbox: Callable[[Path], Awaitable[Outbox]]) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.TemporaryDirectory()
        self.outbox = self.run(open_outbox(Path(self.directory.name)))
        self.now_ms = START_MS
        self.owners: dict[Key, str] = {}
        self.keys: dict[str, Key] = {}
        self.texts: dict[str, str] = {}
        self.leases: list[Lease] = []
        self.latest: dict[str, Claim] = {}
        self.superseded: list[Claim] = []
        self.sent: dict[str, Delivery] = {}
        self.failed: set[Key] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def deliveries(self) -> dict[str, Delivery]:
        listed = self.run(
            self.outbox.list_deliveries(
                status=None, messenger=None, limit=10_000, before_id=None
            )
        )
        return {d.id: d for d in listed}

    # Ids are random, so choices are drawn from lists in an order that does not
    # depend on them, or Hypothesis could not replay a failing example.
    def claim_order(self, claim: Claim) -> tuple[Key, int]:
        return self.keys[claim.delivery_id], claim.attempt

    def lease_order(self, lease: Lease) -> tuple[str, Key, int]:
        return lease.worker, *self.claim_order(lease.claim)

    def teardown(self) -> None:
        try:
            self.run(self.outbox.close())
        finally:
            self.loop.close()
            self.directory.cleanup()

    @rule(
        text=st.sampled_from(TEXTS),
        recipients=st.lists(
            st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True
        ),
        delay_ms=st.sampled_from([0, 0, 5_000]),
    )
    def accept(self, text: str, recipients: list[Recipient], delay_ms: int) -> None:
        msg = NewMessage(
            id=new_id(self.now_ms),
            text=text,
            recipients=tuple(recipients),
            send_at_ms=self.now_ms + delay_ms,
            created_at_ms=self.now_ms,
        )

        accepted = self.run(self.outbox.accept(msg))

        self.texts[msg.id] = text
        for recipient, answer in zip(recipients, accepted.deliveries, strict=True):
            key = (recipient.messenger, recipient.id, nfc(text))
            owner = self.owners.get(key)
            assert answer.duplicate == (owner is not None)
            if owner is not None:
                assert answer.delivery.id == owner
                continue
            self.owners[key] = answer.delivery.id
            self.keys[answer.delivery.id] = key
            assert answer.delivery.status is DeliveryStatus.PENDING
            assert answer.delivery.due_at_ms == msg.send_at_ms

    @rule(worker=st.sampled_from(sorted(LIMITS)))
    def claim(self, worker: str) -> None:
        limits = LIMITS[worker]
        before = self.deliveries()
        due = [
            d
            for d in before.values()
            if d.due_at_ms is not None and d.due_at_ms <= self.now_ms
        ]

        claims = self.run(self.outbox.claim(limits, self.now_ms, LEASE_MS))

        for messenger in Messenger:
            waiting = sum(d.messenger is messenger for d in due)
            taken = sum(c.messenger is messenger for c in claims)
            assert taken == min(limits.get(messenger, 0), waiting)
        assert len({c.delivery_id for c in claims}) == len(claims)
        for claim in claims:
            was = before[claim.delivery_id]
            assert was in due
            assert claim.reclaimed == (was.status is DeliveryStatus.SENDING)
            assert claim.attempt == was.attempts_made + 1
            assert claim.attempts_counted == was.attempts_counted
            assert claim.text == self.texts[was.message_id]
            if claim.delivery_id in self.latest:
                self.superseded.append(self.latest[claim.delivery_id])
            self.latest[claim.delivery_id] = claim
            self.leases.append(Lease(worker, claim, self.now_ms))

    @rule(ms=st.sampled_from([1_000, 5_000, LEASE_MS, 2 * LEASE_MS]))
    def advance_clock(self, ms: int) -> None:
        self.now_ms += ms

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), report=st.sampled_from(sorted(REPORTS)))
    def record(self, data: st.DataObject, report: str) -> None:
        leases = sorted(self.leases, key=self.lease_order)
        lease = data.draw(st.sampled_from(leases), label="lease")
        claim = lease.claim
        result = self.result(claim, report)
        is_current = self.latest.get(claim.delivery_id) == claim
        before = self.run(self.outbox.get_delivery(claim.delivery_id))

        applied = self.run(self.outbox.record([result], self.now_ms))

        self.leases.remove(lease)
        after = self.run(self.outbox.get_delivery(claim.delivery_id))
        if not is_current:
            assert applied == []
            assert after == before
            return
        assert applied == [result]
        del self.latest[claim.delivery_id]
        assert after.status is result.status
        assert after.due_at_ms == result.due_at_ms
        assert after.attempts_counted == claim.attempts_counted + result.counted
        if result.status is DeliveryStatus.SENT:
            assert after.sent_at_ms == result.finished_at_ms
        if result.status is DeliveryStatus.FAILED:
            self.failed.add(self.keys[claim.delivery_id])

    @precondition(lambda self: self.superseded)
    @rule(data=st.data())
    def record_stale(self, data: st.DataObject) -> None:
        """A worker whose lease ran out and was taken over reports at last."""
        stale = sorted(self.superseded, key=self.claim_order)
        claim = data.draw(st.sampled_from(stale), label="stale")
        before = self.run(self.outbox.get_delivery(claim.delivery_id))

        applied = self.run(
            self.outbox.record([self.result(claim, "sent")], self.now_ms)
        )

        assert applied == []
        assert self.run(self.outbox.get_delivery(claim.delivery_id)) == before

    @precondition(lambda self: self.owners)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        delivery_id = self.owners[data.draw(st.sampled_from(sorted(self.owners)))]
        before = self.run(self.outbox.get_delivery(delivery_id))

        if before.status is not DeliveryStatus.PENDING:
            with pytest.raises(Conflict) as raised:
                self.run(self.outbox.cancel(delivery_id, self.now_ms))
            assert raised.value.current == before
            return
        after = self.run(self.outbox.cancel(delivery_id, self.now_ms))

        assert after.status is DeliveryStatus.CANCELLED
        assert after.due_at_ms is None

    @precondition(lambda self: self.owners)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.owners)))
        self.retry_one(key)

    @precondition(lambda self: self.failed)
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        """Retry a delivery known to have failed, which a random pick rarely is."""
        key = data.draw(st.sampled_from(sorted(self.failed)))
        self.retry_one(key)

    def retry_one(self, key: Key) -> None:
        delivery_id = self.owners[key]
        before = self.run(self.outbox.get_delivery(delivery_id))

        if before.status is not DeliveryStatus.FAILED:
            with pytest.raises(Conflict) as raised:
                self.run(self.outbox.retry(delivery_id, self.now_ms))
            assert raised.value.current == before
            return
        after = self.run(self.outbox.retry(delivery_id, self.now_ms))

        self.failed.discard(key)
        assert after.status is DeliveryStatus.PENDING
        assert (after.due_at_ms, after.attempts_counted) == (self.now_ms, 0)
        assert after.attempts_made == before.attempts_made

    def result(self, claim: Claim, report: str) -> Result:
        outcome, status, delay_ms, counted = REPORTS[report]
        return Result(
            delivery_id=claim.delivery_id,
            messenger=claim.messenger,
            lease_token=claim.lease_token,
            attempt=claim.attempt,
            outcome=outcome,
            error=None if outcome is Outcome.SENT else f"{report} error",
            status=status,
            due_at_ms=None if delay_ms is None else self.now_ms + delay_ms,
            counted=counted,
            finished_at_ms=self.now_ms,
        )

    @invariant()
    def no_delivery_is_held_under_two_live_leases(self) -> None:
        deliveries = self.deliveries()
        by_delivery: dict[str, list[Lease]] = defaultdict(list)
        for lease in self.leases:
            by_delivery[lease.claim.delivery_id].append(lease)
        for delivery_id, leases in by_delivery.items():
            delivery = deliveries[delivery_id]
            unexpired = [
                lease
                for lease in leases
                if self.now_ms < lease.claimed_at_ms + LEASE_MS
            ]
            current = [
                lease
                for lease in leases
                if delivery.status is DeliveryStatus.SENDING
                and delivery.attempts_made == lease.claim.attempt
            ]
            assert len(unexpired) <= 1, unexpired
            assert len(current) <= 1, current
            if current:
                assert current[0].claim == self.latest[delivery_id]

    @invariant()
    def no_delivery_is_lost(self) -> None:
        deliveries = self.deliveries()
        assert set(deliveries) == set(self.owners.values())
        for delivery in deliveries.values():
            assert delivery.status in DeliveryStatus
            unfinished = delivery.status in UNFINISHED
            assert (delivery.due_at_ms is not None) == unfinished, delivery
            if delivery.status is DeliveryStatus.SENDING:
                assert delivery.id in self.latest

    @invariant()
    def each_text_has_one_delivery_per_recipient(self) -> None:
        deliveries = self.deliveries().values()
        keys = Counter(
            (d.messenger, d.recipient, nfc(self.texts[d.message_id]))
            for d in deliveries
        )
        assert set(keys.values()) <= {1}
        assert {
            (d.messenger, d.recipient, nfc(self.texts[d.message_id])): d.id
            for d in deliveries
        } == self.owners

    @invariant()
    def a_sent_delivery_never_changes(self) -> None:
        deliveries = self.deliveries()
        for delivery in deliveries.values():
            if delivery.status is DeliveryStatus.SENT:
                assert delivery.sent_at_ms is not None
                self.sent.setdefault(delivery.id, delivery)
        for delivery_id, first_seen in self.sent.items():
            assert deliveries[delivery_id] == first_seen


def test_outbox_keeps_its_invariants_under_any_schedule(
    open_outbox: Callable[[Path], Awaitable[Outbox]],
) -> None:
    run_state_machine_as_test(
        lambda: OutboxMachine(open_outbox),
        settings=settings(max_examples=50, stateful_step_count=50, deadline=None),
    )
