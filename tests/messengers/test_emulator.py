"""Emulated messengers and their inbox: outcomes, latency and idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from notifier.domain.models import Messenger
from notifier.domain.recipients import normalise
from notifier.messengers.base import (
    PermanentError,
    RateLimited,
    SendError,
    TransientError,
)
from notifier.messengers.emulator import (
    SLOW_LATENCY_MS,
    TEST_RETRY_AFTER_S,
    EmulatedMessenger,
    EmulatorSettings,
    change_settings,
    follow_shared_settings,
    load_shared_settings,
    scripted_recipients,
)
from notifier.messengers.inbox import Inbox, InboxItem

NOW_S = 1_767_225_600.0
TEXT = "Your code is 1234"
PLAIN = "+79991234567"


class RecordingSleep:
    """Stands in for asyncio.sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    """An inbox on a fresh file."""
    inbox = await Inbox.open(tmp_path / "inbox.db")
    yield inbox
    await inbox.close()


@pytest.fixture
async def other_inbox(inbox: Inbox, tmp_path: Path) -> AsyncIterator[Inbox]:
    """A second connection to the same inbox file, as another worker has."""
    other = await Inbox.open(tmp_path / "inbox.db")
    yield other
    await other.close()


@pytest.fixture
def sleep() -> RecordingSleep:
    """A sleep that only records."""
    return RecordingSleep()


def emulator(
    inbox: Inbox,
    sleep: RecordingSleep,
    *,
    messenger: Messenger = Messenger.WHATSAPP,
    **settings: Any,
) -> EmulatedMessenger:
    """Return an emulated messenger with a seeded rng and a fixed clock."""
    return EmulatedMessenger(
        messenger,
        EmulatorSettings(**settings),
        inbox,
        rng=random.Random(42),
        sleep=sleep,
        clock=lambda: NOW_S,
    )


async def received(
    inbox: Inbox, messenger: Messenger = Messenger.WHATSAPP
) -> list[InboxItem]:
    """Return everything the messenger's inbox holds."""
    return await inbox.list(messenger, recipient=None, limit=100, after_seq=0)


def scripted_id(messenger: Messenger, behaviour: str) -> str:
    """Return the scripted recipient id that stands for a behaviour."""
    by_behaviour = {b: rid for rid, b in scripted_recipients(messenger).items()}
    return by_behaviour[behaviour]


async def test_emulated_messenger_success_stores_the_text_once(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep, latency_ms=20)

    await sender.send("d-1", PLAIN, TEXT, attempt=1)

    items = await received(inbox)
    assert [(i.delivery_id, i.recipient, i.text) for i in items] == [
        ("d-1", PLAIN, TEXT)
    ]
    assert items[0].received_at_ms == int(NOW_S * 1000)
    assert sleep.delays_s == [0.02]


async def test_emulated_messenger_zero_latency_does_not_sleep(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep, latency_ms=0)

    await sender.send("d-1", PLAIN, TEXT, attempt=1)

    assert sleep.delays_s == []


async def test_emulated_messenger_resend_of_a_delivery_is_stored_once(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep)
    await sender.send("d-1", PLAIN, TEXT, attempt=1)

    await sender.send("d-1", PLAIN, TEXT, attempt=2)

    assert len(await received(inbox)) == 1


async def test_emulated_messenger_same_text_in_two_deliveries_is_stored_twice(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    """Dedupe is the outbox's job; the messenger keys on the delivery id only."""
    sender = emulator(inbox, sleep)

    await sender.send("d-1", PLAIN, TEXT, attempt=1)
    await sender.send("d-2", PLAIN, TEXT, attempt=1)

    assert [i.delivery_id for i in await received(inbox)] == ["d-1", "d-2"]


@pytest.mark.parametrize("messenger", list(Messenger))
def test_scripted_recipients_cover_every_behaviour_in_canonical_form(
    messenger: Messenger,
) -> None:
    scripted = scripted_recipients(messenger)

    assert sorted(scripted.values()) == ["blocked", "down", "flaky", "limited", "slow"]
    assert all(normalise(messenger, rid).id == rid for rid in scripted)


@pytest.mark.parametrize("messenger", list(Messenger))
@pytest.mark.parametrize(
    ("behaviour", "attempt", "error"),
    [
        ("blocked", 1, PermanentError),  # a blocked bot fails at once
        ("blocked", 4, PermanentError),  # and on every later attempt
        ("down", 1, TransientError),  # a messenger that is down
        ("down", 10, TransientError),  # stays down
        ("flaky", 1, TransientError),  # fails first
        ("flaky", 2, TransientError),  # fails again
        ("flaky", 3, None),  # then succeeds on the third attempt
        ("limited", 1, RateLimited),  # asks to slow down first
        ("limited", 2, None),  # then succeeds
        ("slow", 1, None),  # succeeds, slowly
    ],
)
async def test_emulated_messenger_scripted_recipient(
    inbox: Inbox,
    sleep: RecordingSleep,
    messenger: Messenger,
    behaviour: str,
    attempt: int,
    error: type[SendError] | None,
) -> None:
    sender = emulator(inbox, sleep, messenger=messenger)
    recipient = scripted_id(messenger, behaviour)

    if error is None:
        await sender.send("d-1", recipient, TEXT, attempt)
    else:
        with pytest.raises(error):
            await sender.send("d-1", recipient, TEXT, attempt)

    stored = [i.recipient for i in await received(inbox, messenger)]
    assert stored == ([] if error else [recipient])


async def test_emulated_messenger_scripted_recipients_ignore_the_rates(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep, permanent_error_rate=1.0)

    await sender.send("d-1", scripted_id(Messenger.WHATSAPP, "flaky"), TEXT, attempt=3)

    assert len(await received(inbox)) == 1


async def test_emulated_messenger_limited_recipient_asks_for_the_test_retry_after(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep, retry_after_s=30.0)
    recipient = scripted_id(Messenger.WHATSAPP, "limited")

    with pytest.raises(RateLimited) as caught:
        await sender.send("d-1", recipient, TEXT, attempt=1)

    assert caught.value.retry_after_s == TEST_RETRY_AFTER_S


async def test_emulated_messenger_slow_recipient_takes_three_seconds(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep, latency_ms=20)

    await sender.send("d-1", scripted_id(Messenger.WHATSAPP, "slow"), TEXT, attempt=1)

    assert sleep.delays_s == [SLOW_LATENCY_MS / 1000]
    assert SLOW_LATENCY_MS == 3000


@pytest.mark.parametrize(
    ("rates", "error"),
    [
        ({"transient_error_rate": 1.0}, TransientError),  # always unavailable
        ({"rate_limit_rate": 1.0}, RateLimited),  # always too many requests
        ({"permanent_error_rate": 1.0}, PermanentError),  # always blocked
    ],
)
async def test_emulated_messenger_rate_one_always_fails(
    inbox: Inbox,
    sleep: RecordingSleep,
    rates: dict[str, float],
    error: type[SendError],
) -> None:
    sender = emulator(inbox, sleep, messenger=Messenger.WHATSAPP, **rates)

    for n in range(20):
        with pytest.raises(error):
            await sender.send(f"d-{n}", PLAIN, TEXT, attempt=1)

    assert await received(inbox) == []


async def test_emulated_messenger_rate_limit_carries_the_configured_retry_after(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(inbox, sleep, rate_limit_rate=1.0, retry_after_s=2.5)

    with pytest.raises(RateLimited) as caught:
        await sender.send("d-1", PLAIN, TEXT, attempt=1)

    assert caught.value.retry_after_s == 2.5


async def test_emulated_messenger_mixed_rates_produce_every_outcome(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    sender = emulator(
        inbox,
        sleep,
        latency_ms=0,
        transient_error_rate=0.25,
        rate_limit_rate=0.25,
        permanent_error_rate=0.25,
    )
    outcomes: set[str] = set()

    for n in range(200):
        try:
            await sender.send(f"d-{n}", PLAIN, TEXT, attempt=1)
        except SendError as exc:
            outcomes.add(type(exc).__name__)
        else:
            outcomes.add("sent")

    assert outcomes == {"sent", "TransientError", "RateLimited", "PermanentError"}
    assert len(await received(inbox)) < 200


async def test_inbox_add_keeps_the_first_of_a_repeat(inbox: Inbox) -> None:
    await inbox.add(Messenger.VIBER, "d-1", "u", TEXT, 1)

    await inbox.add(Messenger.VIBER, "d-1", "u", "other text", 2)

    assert [i.text for i in await received(inbox, Messenger.VIBER)] == [TEXT]
    assert await inbox.has(Messenger.VIBER, "d-1")


async def test_inbox_add_batches_concurrent_writes(inbox: Inbox) -> None:
    """Concurrent adds share transactions; every one is stored, repeats once."""
    ids = [f"d-{n % 150}" for n in range(200)]

    await asyncio.gather(*(inbox.add(Messenger.VIBER, i, "u", TEXT, 1) for i in ids))

    stored = await inbox.list(Messenger.VIBER, recipient=None, limit=500, after_seq=0)
    assert sorted(i.delivery_id for i in stored) == sorted(set(ids))


async def test_inbox_list_filters_by_recipient_oldest_first(inbox: Inbox) -> None:
    for n, recipient in enumerate(["alice", "bob", "alice", "bob", "alice"]):
        await inbox.add(Messenger.VIBER, f"d-{n}", recipient, f"text {n}", n)
    await inbox.add(Messenger.TELEGRAM, "d-9", "alice", "elsewhere", 9)

    items = await inbox.list(Messenger.VIBER, recipient="alice", limit=10, after_seq=0)

    assert [i.text for i in items] == ["text 0", "text 2", "text 4"]


async def test_inbox_list_pages_by_seq_cursor(inbox: Inbox) -> None:
    for n in range(5):
        await inbox.add(Messenger.VIBER, f"d-{n}", "alice", f"text {n}", n)
    pages: list[list[str]] = []
    after_seq = 0

    for _ in range(5):
        page = await inbox.list(
            Messenger.VIBER, recipient=None, limit=2, after_seq=after_seq
        )
        if not page:
            break
        pages.append([i.delivery_id for i in page])
        after_seq = page[-1].seq

    assert pages == [["d-0", "d-1"], ["d-2", "d-3"], ["d-4"]]


async def test_inbox_keeps_items_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    first = await Inbox.open(path)
    await first.add(Messenger.TELEGRAM, "d-1", "@durov", TEXT, 1)
    await first.close()

    reopened = await Inbox.open(path)
    items = await received(reopened, Messenger.TELEGRAM)
    await reopened.close()

    assert [i.delivery_id for i in items] == ["d-1"]


@pytest.mark.parametrize(
    "rates",
    [
        (0.6, 0.3, 0.2),  # 1.1
        (1.0, 0.0, 0.01),  # just over
        (0.0, 0.7, 0.7),  # two rates
    ],
)
def test_emulator_settings_rejects_rates_summing_above_one(
    rates: tuple[float, float, float],
) -> None:
    transient, limited, permanent = rates

    with pytest.raises(ValueError, match="must be at most 1"):
        EmulatorSettings(
            transient_error_rate=transient,
            rate_limit_rate=limited,
            permanent_error_rate=permanent,
        )


def test_emulator_settings_rejects_rates_summing_above_one_when_decoded() -> None:
    data = {"transient_error_rate": 0.5, "permanent_error_rate": 0.6}

    with pytest.raises(msgspec.ValidationError, match="at most 1"):
        msgspec.convert(data, EmulatorSettings)


def test_emulator_settings_accepts_rates_summing_to_one() -> None:
    settings = EmulatorSettings(
        transient_error_rate=0.5, rate_limit_rate=0.25, permanent_error_rate=0.25
    )

    assert settings.transient_error_rate == 0.5


def test_emulator_settings_accepts_decimal_rates_summing_to_one() -> None:
    settings = EmulatorSettings(
        transient_error_rate=0.34, rate_limit_rate=0.56, permanent_error_rate=0.1
    )

    assert settings.permanent_error_rate == 0.1


async def test_shared_settings_reach_an_emulator_on_another_inbox_connection(
    inbox: Inbox, other_inbox: Inbox, sleep: RecordingSleep
) -> None:
    """Two workers: each opens the inbox file; a PUT on one reaches the other."""
    ours = emulator(inbox, sleep, latency_ms=20)
    theirs = {Messenger.WHATSAPP: emulator(other_inbox, sleep, latency_ms=20)}

    await change_settings(ours, {"latency_ms": 1500})
    await load_shared_settings(other_inbox, theirs)

    assert ours.settings.latency_ms == 1500
    assert theirs[Messenger.WHATSAPP].settings.latency_ms == 1500


async def test_shared_settings_follow_changes_until_cancelled(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    emulators = {Messenger.VIBER: emulator(inbox, sleep, messenger=Messenger.VIBER)}
    follower = asyncio.create_task(follow_shared_settings(inbox, emulators, 0.01))
    elsewhere = emulator(inbox, sleep, messenger=Messenger.VIBER)

    await change_settings(elsewhere, {"transient_error_rate": 0.5})
    for _ in range(100):
        if emulators[Messenger.VIBER].settings.transient_error_rate == 0.5:
            break
        await asyncio.sleep(0.01)
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower

    assert emulators[Messenger.VIBER].settings.transient_error_rate == 0.5


async def test_inbox_forget_settings_leaves_the_configured_ones(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    ours = emulator(inbox, sleep, latency_ms=20)
    await change_settings(ours, {"latency_ms": 1500})

    await inbox.forget_settings()

    assert await inbox.load_settings() == {}


async def test_change_settings_keeps_what_the_change_does_not_name(
    inbox: Inbox, other_inbox: Inbox, sleep: RecordingSleep
) -> None:
    """Two workers change two fields at once: both changes stay."""
    ours = emulator(inbox, sleep, latency_ms=35, retry_after_s=4.0)
    theirs = emulator(other_inbox, sleep, latency_ms=35, retry_after_s=4.0)

    await asyncio.gather(
        change_settings(ours, {"transient_error_rate": 0.3}),
        change_settings(theirs, {"rate_limit_rate": 0.1}),
    )
    final = await change_settings(ours, {})

    assert final == EmulatorSettings(
        latency_ms=35,
        transient_error_rate=0.3,
        rate_limit_rate=0.1,
        retry_after_s=4.0,
    )


async def test_change_settings_that_break_a_rule_save_nothing(
    inbox: Inbox, sleep: RecordingSleep
) -> None:
    ours = emulator(inbox, sleep)
    await change_settings(ours, {"transient_error_rate": 0.6})

    with pytest.raises(msgspec.ValidationError, match="at most 1"):
        await change_settings(ours, {"permanent_error_rate": 0.5})

    assert ours.settings.permanent_error_rate == 0.0
    (saved,) = (await inbox.load_settings()).values()
    assert msgspec.json.decode(saved, type=EmulatorSettings).permanent_error_rate == 0
