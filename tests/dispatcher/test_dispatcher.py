"""The dispatcher against a real outbox and recording fake senders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from notifier.dispatcher import Dispatcher
from notifier.domain.models import Messenger, NewMessage, Recipient
from notifier.domain.retry import RetryPolicy
from notifier.messengers.base import RateLimited, TransientError
from notifier.storage.sqlite import SqliteOutbox


class FakeSender:
    """Records every send; an optional ``behave`` hook may wait or raise."""

    def __init__(self, behave: Callable[[int], object] | None = None) -> None:
        self.sent: list[tuple[str, int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._behave = behave

    async def send(
        self, delivery_id: str, recipient: str, text: str, attempt: int
    ) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self._behave is not None:
                outcome = self._behave(attempt)
                if asyncio.iscoroutine(outcome):
                    await outcome
            self.sent.append((delivery_id, attempt))
        finally:
            self.in_flight -= 1


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[SqliteOutbox]:
    box = await SqliteOutbox.open(tmp_path / "outbox.db", "normal")
    yield box
    await box.close()


def make_dispatcher(outbox, senders, **overrides) -> Dispatcher:
    settings = dict(
        policy=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02),
        poll_interval_s=0.05,
        batch_size=50,
        lease_s=5.0,
        concurrency=10,
    )
    settings.update(overrides)
    return Dispatcher(outbox, senders, **settings)


async def accept(outbox: SqliteOutbox, messenger: Messenger, count: int) -> list[str]:
    now_ms = int(time.time() * 1000)
    recipients = tuple(Recipient(messenger, f"user{i}") for i in range(count))
    message = NewMessage(
        f"m-{messenger}-{count}-{now_ms}", "hi", recipients, now_ms, now_ms
    )
    accepted = await outbox.accept(message)
    return [d.delivery.id for d in accepted.deliveries]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_dispatcher_sends_each_due_delivery_once(outbox: SqliteOutbox) -> None:
    sender = FakeSender()
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})
    ids = await accept(outbox, Messenger.VIBER, 120)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 120)
    await dispatcher.stop(grace_s=1)

    assert sorted(d for d, _ in sender.sent) == sorted(ids)
    statuses = {(await outbox.get_delivery(i)).status for i in ids}
    assert statuses == {"sent"}


async def test_dispatcher_keeps_to_the_concurrency_limit(outbox: SqliteOutbox) -> None:
    sender = FakeSender(lambda _: asyncio.sleep(0.02))
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender}, concurrency=4)
    await accept(outbox, Messenger.VIBER, 30)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 30)
    await dispatcher.stop(grace_s=1)

    assert sender.most_in_flight == 4


async def test_dispatcher_does_not_let_a_stuck_messenger_delay_others(
    outbox: SqliteOutbox,
) -> None:
    stuck = FakeSender(lambda _: asyncio.sleep(60))
    healthy = FakeSender()
    senders = {Messenger.TELEGRAM: stuck, Messenger.VIBER: healthy}
    dispatcher = make_dispatcher(outbox, senders, concurrency=5)
    await accept(outbox, Messenger.TELEGRAM, 50)
    await accept(outbox, Messenger.VIBER, 50)

    await dispatcher.start()
    await wait_until(lambda: len(healthy.sent) == 50, timeout_s=3)
    await dispatcher.stop(grace_s=0)

    assert stuck.sent == []


async def test_dispatcher_retries_transient_errors_then_succeeds(
    outbox: SqliteOutbox,
) -> None:
    def flaky(attempt: int) -> None:
        if attempt < 3:
            raise TransientError("down")

    sender = FakeSender(flaky)
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})
    [delivery_id] = await accept(outbox, Messenger.VIBER, 1)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 1)
    await dispatcher.stop(grace_s=1)

    attempts = await outbox.list_attempts(delivery_id)
    assert [a.outcome for a in attempts] == [
        "transient_error",
        "transient_error",
        "sent",
    ]


async def test_dispatcher_does_not_count_rate_limits(outbox: SqliteOutbox) -> None:
    def limited(attempt: int) -> None:
        if attempt < 5:
            raise RateLimited("slow down", retry_after_s=0.01)

    sender = FakeSender(limited)
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})
    [delivery_id] = await accept(outbox, Messenger.VIBER, 1)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 1)
    await dispatcher.stop(grace_s=1)

    delivery = await outbox.get_delivery(delivery_id)
    assert delivery.status == "sent"
    assert delivery.attempts_made == 5  # above max_attempts=3: limits are not counted


async def test_dispatcher_releases_unfinished_sends_on_stop(
    outbox: SqliteOutbox,
) -> None:
    sender = FakeSender(lambda _: asyncio.sleep(60))
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})
    ids = await accept(outbox, Messenger.VIBER, 3)
    await dispatcher.start()
    await wait_until(lambda: sender.in_flight == 3)

    await dispatcher.stop(grace_s=0.05)

    for delivery_id in ids:
        delivery = await outbox.get_delivery(delivery_id)
        attempts = await outbox.list_attempts(delivery_id)
        assert delivery.status == "pending"
        assert delivery.attempts_counted == 0
        assert [a.outcome for a in attempts] == ["released"]


async def test_dispatcher_wakes_for_new_work_before_its_poll(
    outbox: SqliteOutbox,
) -> None:
    sender = FakeSender()
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender}, poll_interval_s=30)
    await dispatcher.start()
    await asyncio.sleep(0.05)  # let the loop go idle on its long poll

    await accept(outbox, Messenger.VIBER, 1)
    dispatcher.notify()
    await wait_until(lambda: len(sender.sent) == 1, timeout_s=2)
    await dispatcher.stop(grace_s=1)


async def test_dispatcher_sleeps_until_the_next_due_time(outbox: SqliteOutbox) -> None:
    sender = FakeSender()
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender}, poll_interval_s=30)
    now_ms = int(time.time() * 1000)
    recipients = (Recipient(Messenger.VIBER, "user1"),)
    await outbox.accept(NewMessage("m-later", "hi", recipients, now_ms + 300, now_ms))

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 1, timeout_s=2)
    await dispatcher.stop(grace_s=1)

    sent_at_ms = (await outbox.get_delivery(sender.sent[0][0])).sent_at_ms
    assert sent_at_ms is not None and sent_at_ms >= now_ms + 300


async def test_dispatcher_reclaims_a_dead_workers_lease(outbox: SqliteOutbox) -> None:
    [delivery_id] = await accept(outbox, Messenger.VIBER, 1)
    await outbox.claim({Messenger.VIBER: 1}, int(time.time() * 1000), lease_ms=200)
    sender = FakeSender()
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 1, timeout_s=3)
    await dispatcher.stop(grace_s=1)

    attempts = await outbox.list_attempts(delivery_id)
    assert [a.outcome for a in attempts] == ["lease_expired", "sent"]
    assert sender.sent == [(delivery_id, 2)]


async def test_dispatcher_times_out_a_send_at_half_the_lease(
    outbox: SqliteOutbox,
) -> None:
    sender = FakeSender(lambda _: asyncio.sleep(60))
    policy = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)
    dispatcher = make_dispatcher(
        outbox, {Messenger.VIBER: sender}, lease_s=1.0, policy=policy
    )
    [delivery_id] = await accept(outbox, Messenger.VIBER, 1)
    started = time.monotonic()

    await dispatcher.start()
    await wait_until(lambda: sender.in_flight == 1)
    await wait_until(lambda: sender.in_flight == 0, timeout_s=0.7)  # 0.5 s + a tick
    timed_out_after_s = time.monotonic() - started
    await wait_until(lambda: sender.in_flight == 1, timeout_s=2)  # the retry
    await dispatcher.stop(grace_s=0)

    assert 0.5 <= timed_out_after_s < 0.7
    attempts = await outbox.list_attempts(delivery_id)
    assert [a.outcome for a in attempts] == ["transient_error", "released"]
    assert attempts[0].error == "no answer within 0.5 s"
    assert sender.sent == []


async def test_dispatcher_counts_a_senders_own_timeout_as_transient(
    outbox: SqliteOutbox,
) -> None:
    def times_out(attempt: int) -> None:
        if attempt == 1:
            raise TimeoutError("read timed out")

    sender = FakeSender(times_out)
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})
    [delivery_id] = await accept(outbox, Messenger.VIBER, 1)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 1)
    await dispatcher.stop(grace_s=1)

    attempts = await outbox.list_attempts(delivery_id)
    assert [(a.outcome, a.error) for a in attempts] == [
        ("transient_error", "read timed out"),
        ("sent", None),
    ]


async def test_dispatcher_claims_again_as_slots_free_while_more_is_due(
    outbox: SqliteOutbox,
) -> None:
    sender = FakeSender(lambda _: asyncio.sleep(0.01))
    dispatcher = make_dispatcher(
        outbox, {Messenger.VIBER: sender}, concurrency=4, poll_interval_s=30
    )
    await accept(outbox, Messenger.VIBER, 30)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 30, timeout_s=3)  # no poll helps
    await dispatcher.stop(grace_s=1)

    assert sender.most_in_flight == 4


async def test_dispatcher_does_not_claim_for_freed_slots_when_nothing_more_was_due(
    outbox: SqliteOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = 0
    claim = outbox.claim

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "claim", counted)
    sender = FakeSender(lambda _: asyncio.sleep(0.01))
    dispatcher = make_dispatcher(
        outbox, {Messenger.VIBER: sender}, concurrency=10, poll_interval_s=30
    )
    await accept(outbox, Messenger.VIBER, 5)

    await dispatcher.start()
    await wait_until(lambda: len(sender.sent) == 5)
    await asyncio.sleep(0.1)  # time for any claim the finished sends would cause
    await dispatcher.stop(grace_s=1)

    assert claims == 1


async def test_dispatcher_stop_does_not_release_a_send_that_ended_as_grace_ran_out(
    outbox: SqliteOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sends end in the very turn stop()'s wait times out; none is released.

    Two end a little earlier, so that their results are being recorded (slowly)
    while the three end: the three results and any release of theirs would
    share the next batch.
    """
    loop = asyncio.get_running_loop()
    early: asyncio.Future[None] = loop.create_future()
    gate: asyncio.Future[None] = loop.create_future()
    wait = asyncio.wait
    record = outbox.record

    async def wait_opening_the_gates(
        tasks: list[asyncio.Task[None]], timeout: float
    ) -> object:
        loop.call_later(timeout - 0.02, early.set_result, None)
        # Scheduled before wait's own timer for the same moment, so it runs first.
        loop.call_later(timeout, gate.set_result, None)
        return await wait(tasks, timeout=timeout)

    async def slow_record(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(0.05)
        return await record(*args, **kwargs)  # type: ignore[arg-type]

    class GatedSender(FakeSender):
        async def send(
            self, delivery_id: str, recipient: str, text: str, attempt: int
        ) -> None:
            self.in_flight += 1
            await (early if recipient in ("user0", "user1") else gate)
            self.sent.append((delivery_id, attempt))

    monkeypatch.setattr(asyncio, "wait", wait_opening_the_gates)
    monkeypatch.setattr(outbox, "record", slow_record)
    sender = GatedSender()
    dispatcher = make_dispatcher(outbox, {Messenger.VIBER: sender})
    ids = await accept(outbox, Messenger.VIBER, 5)
    await dispatcher.start()
    await wait_until(lambda: sender.in_flight == 5)

    await dispatcher.stop(grace_s=0.1)

    assert len(sender.sent) == 5
    for delivery_id in ids:
        attempts = await outbox.list_attempts(delivery_id)
        assert [a.outcome for a in attempts] == ["sent"]
        assert (await outbox.get_delivery(delivery_id)).status == "sent"
