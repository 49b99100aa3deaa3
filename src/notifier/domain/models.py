"""Records and enumerations shared by every layer."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Messenger(enum.StrEnum):
    """A messenger that notifier delivers to."""

    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"
    VIBER = "viber"


class DeliveryStatus(enum.StrEnum):
    """Where a delivery is in its life."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the dispatcher will never touch a delivery in this status again."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED}
)


class Outcome(enum.StrEnum):
    """How one attempt ended."""

    SENT = "sent"
    TRANSIENT_ERROR = "transient_error"
    RATE_LIMITED = "rate_limited"
    PERMANENT_ERROR = "permanent_error"
    LEASE_EXPIRED = "lease_expired"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A normalised recipient on one messenger."""

    messenger: Messenger
    id: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated message, ready to be written to the outbox.

    ``recipients`` holds each distinct recipient once, in request order; a
    recipient in ``send_at_overrides`` is sent at its own time instead of at
    ``send_at_ms``. Times are epoch milliseconds in UTC.
    """

    id: str
    text: str
    recipients: tuple[Recipient, ...]
    send_at_ms: int
    created_at_ms: int
    send_at_overrides: Mapping[Recipient, int] = field(default_factory=dict)

    def send_at_for(self, recipient: Recipient) -> int:
        """Return when this recipient's delivery is due."""
        return self.send_at_overrides.get(recipient, self.send_at_ms)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one recipient, as the outbox holds it."""

    id: str
    message_id: str
    messenger: Messenger
    recipient: str
    status: DeliveryStatus
    send_at_ms: int
    due_at_ms: int | None
    attempts_made: int
    attempts_counted: int
    last_error: str | None
    created_at_ms: int
    updated_at_ms: int
    sent_at_ms: int | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at sending a delivery; ``outcome`` is None while it runs."""

    number: int
    started_at_ms: int
    finished_at_ms: int | None
    outcome: Outcome | None
    error: str | None


@dataclass(frozen=True, slots=True)
class AcceptedDelivery:
    """The answer for one recipient of an accepted message."""

    delivery: Delivery
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery leased to the dispatcher, with what it needs to send it."""

    delivery_id: str
    message_id: str
    messenger: Messenger
    recipient: str
    text: str
    lease_token: str
    attempt: int
    attempts_counted: int
    reclaimed: bool
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Result:
    """What the dispatcher decided after an attempt, to be written back.

    ``status`` is the delivery's next status; ``due_at_ms`` is set when it goes
    back to ``pending`` for another attempt.
    """

    delivery_id: str
    messenger: Messenger
    lease_token: str
    attempt: int
    outcome: Outcome
    error: str | None
    status: DeliveryStatus
    due_at_ms: int | None
    counted: bool
    finished_at_ms: int
