"""Emulated Telegram, WhatsApp and Viber: configurable latency and failures."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

import msgspec
import structlog

from notifier.domain.models import Messenger, Outcome
from notifier.messengers.base import PermanentError, RateLimited, TransientError
from notifier.messengers.inbox import Inbox

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
log = structlog.get_logger("notifier.emulator")


class EmulatorSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How one emulated messenger behaves; rates are probabilities per attempt."""

    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 20
    transient_error_rate: Rate = 0.0
    rate_limit_rate: Rate = 0.0
    retry_after_s: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 1.0
    permanent_error_rate: Rate = 0.0

    def __post_init__(self) -> None:
        total = self.transient_error_rate + self.rate_limit_rate
        total += self.permanent_error_rate
        # A small tolerance: 0.34 + 0.56 + 0.1 is 1.0000000000000002 in floats.
        if total > 1.0 + 1e-9:
            raise ValueError(
                "transient_error_rate + rate_limit_rate + permanent_error_rate "
                f"must be at most 1, got {total:g}"
            )


# Each test recipient always behaves the same way, whatever the settings say.
# Values are (the outcome until it succeeds, the first attempt that succeeds or 0).
_BEHAVIOURS: dict[str, tuple[Outcome, int]] = {
    "blocked": (Outcome.PERMANENT_ERROR, 0),
    "down": (Outcome.TRANSIENT_ERROR, 0),
    "flaky": (Outcome.TRANSIENT_ERROR, 3),
    "limited": (Outcome.RATE_LIMITED, 2),
    "slow": (Outcome.SENT, 1),
}
_TEST_IDS: dict[Messenger, dict[str, str]] = {
    Messenger.TELEGRAM: {f"@test_{name}": name for name in _BEHAVIOURS},
    Messenger.WHATSAPP: {
        f"+1555010000{i}": name for i, name in enumerate(_BEHAVIOURS, start=1)
    },
    Messenger.VIBER: {f"test-{name}": name for name in _BEHAVIOURS},
}
SLOW_LATENCY_MS = 3000
TEST_RETRY_AFTER_S = 1.0


def scripted_recipients(messenger: Messenger) -> dict[str, str]:
    """Return the messenger's test recipient ids and the behaviour each stands for."""
    return dict(_TEST_IDS[messenger])


class EmulatedMessenger:
    """A messenger in the process: waits, maybe fails, else stores the text."""

    def __init__(
        self,
        messenger: Messenger,
        settings: EmulatorSettings,
        inbox: Inbox,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.messenger = messenger
        self.settings = settings
        self.inbox = inbox
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock

    async def send(
        self, delivery_id: str, recipient: str, text: str, attempt: int
    ) -> None:
        """Deliver the text after the configured latency, or raise a SendError."""
        settings = self.settings
        behaviour = _TEST_IDS[self.messenger].get(recipient)
        latency_ms = SLOW_LATENCY_MS if behaviour == "slow" else settings.latency_ms
        if latency_ms:
            await self._sleep(latency_ms / 1000)
        if behaviour is not None:
            outcome = _scripted(behaviour, attempt)
        else:
            outcome = self._roll(settings)
        # Like a provider honouring an idempotency key: a known delivery id gets
        # the first answer (success) again, whatever the dice say now. A first
        # attempt cannot have been received before, so it skips the lookup.
        if (
            outcome is not Outcome.SENT
            and attempt > 1
            and await self.inbox.has(self.messenger, delivery_id)
        ):
            return
        if outcome is Outcome.PERMANENT_ERROR:
            raise PermanentError(
                f"{self.messenger.value}: the recipient blocked the bot"
            )
        if outcome is Outcome.RATE_LIMITED:
            retry_after_s = TEST_RETRY_AFTER_S if behaviour else settings.retry_after_s
            raise RateLimited(
                f"{self.messenger.value}: too many requests", retry_after_s
            )
        if outcome is Outcome.TRANSIENT_ERROR:
            raise TransientError(f"{self.messenger.value}: service unavailable")
        now_ms = int(self._clock() * 1000)
        await self.inbox.add(self.messenger, delivery_id, recipient, text, now_ms)

    def _roll(self, settings: EmulatorSettings) -> Outcome:
        roll = self._rng.random()
        for outcome, rate in (
            (Outcome.PERMANENT_ERROR, settings.permanent_error_rate),
            (Outcome.RATE_LIMITED, settings.rate_limit_rate),
            (Outcome.TRANSIENT_ERROR, settings.transient_error_rate),
        ):
            if roll < rate:
                return outcome
            roll -= rate
        return Outcome.SENT


async def change_settings(
    emulator: EmulatedMessenger, changes: Mapping[str, object]
) -> EmulatorSettings:
    """Apply ``changes`` over the latest settings any worker saved, and save them.

    Raises msgspec.ValidationError, saving nothing, if the result is invalid.
    """

    def merge(saved: bytes | None) -> bytes:
        current = emulator.settings
        if saved is not None:
            current = msgspec.json.decode(saved, type=EmulatorSettings)
        merged = msgspec.structs.asdict(current) | dict(changes)
        return msgspec.json.encode(msgspec.convert(merged, EmulatorSettings))

    raw = await emulator.inbox.update_settings(emulator.messenger, merge)
    emulator.settings = msgspec.json.decode(raw, type=EmulatorSettings)
    return emulator.settings


async def load_shared_settings(
    inbox: Inbox, emulators: Mapping[Messenger, EmulatedMessenger]
) -> None:
    """Apply the settings any worker saved since the server started."""
    for messenger, raw in (await inbox.load_settings()).items():
        emulators[messenger].settings = msgspec.json.decode(raw, type=EmulatorSettings)


async def follow_shared_settings(
    inbox: Inbox, emulators: Mapping[Messenger, EmulatedMessenger], interval_s: float
) -> None:
    """Load the saved settings every ``interval_s``, until cancelled."""
    while True:
        try:
            await load_shared_settings(inbox, emulators)
        except Exception:
            log.exception("emulator_settings_unread")
        await asyncio.sleep(interval_s)


def _scripted(behaviour: str, attempt: int) -> Outcome:
    failure, succeeds_from = _BEHAVIOURS[behaviour]
    if succeeds_from and attempt >= succeeds_from:
        return Outcome.SENT
    return failure
