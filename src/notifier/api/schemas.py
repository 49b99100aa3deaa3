"""Request and response bodies of API version 1."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from notifier.domain.models import (
    AcceptedDelivery,
    Attempt,
    Delivery,
    DeliveryStatus,
    Messenger,
)
from notifier.messengers.inbox import InboxItem
from notifier.storage.base import OutboxStats

MessengerName = Literal["telegram", "whatsapp", "viber"]
# Times come in as strings and are parsed strictly by the handler: a number is
# not an RFC 3339 time, and a time without an offset is an error, not a guess.
TimeIn = Annotated[
    str,
    msgspec.Meta(
        description="RFC 3339 date-time with an offset",
        examples=["2026-12-24T18:00:00+01:00"],
        extra_json_schema={"format": "date-time"},
    ),
]
StatusName = Literal["pending", "sending", "sent", "failed", "cancelled"]
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


def to_datetime(ms: int) -> datetime:
    """Return epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def _maybe(ms: int | None) -> datetime | None:
    return None if ms is None else to_datetime(ms)


class RecipientIn(msgspec.Struct, forbid_unknown_fields=True):
    """One recipient, named by its messenger's own kind of id.

    ``send_at``, when given, overrides the message's for this recipient alone.
    """

    messenger: MessengerName
    id: Annotated[str, msgspec.Meta(examples=["@alice_smith", "+44 7700 900123"])]
    send_at: TimeIn | None = None


class SendMessage(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/messages: one text for many recipients, now or at ``send_at``."""

    text: Annotated[str, msgspec.Meta(examples=["Your order has shipped"])]
    recipients: list[RecipientIn]
    send_at: TimeIn | None = None


class DeliveryOut(msgspec.Struct):
    """A delivery as listed under its message."""

    id: str
    messenger: MessengerName
    recipient: str
    status: StatusName
    send_at: datetime
    duplicate: bool

    @classmethod
    def of(cls, accepted: AcceptedDelivery) -> DeliveryOut:
        """Build from an accepted delivery."""
        d = accepted.delivery
        return cls(
            id=d.id,
            messenger=d.messenger.value,
            recipient=d.recipient,
            status=d.status.value,
            send_at=to_datetime(d.send_at_ms),
            duplicate=accepted.duplicate,
        )


class MessageAccepted(msgspec.Struct):
    """The 202 answer to POST /v1/messages."""

    id: str
    deliveries: list[DeliveryOut]


class MessageOut(msgspec.Struct):
    """GET /v1/messages/{id}: the message and its deliveries now."""

    id: str
    text: str
    created_at: datetime
    deliveries: list[DeliveryOut]


class AttemptOut(msgspec.Struct):
    """One attempt at a delivery; ``outcome`` is null while it runs."""

    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        """Build from a stored attempt."""
        outcome = a.outcome.value if a.outcome else None
        return cls(
            a.number,
            to_datetime(a.started_at_ms),
            _maybe(a.finished_at_ms),
            outcome,
            a.error,
        )


class DeliverySummary(msgspec.Struct):
    """A delivery without its attempt history."""

    id: str
    message_id: str
    messenger: MessengerName
    recipient: str
    status: StatusName
    send_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    attempts_made: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def fields_of(cls, d: Delivery) -> dict[str, Any]:
        """Return the fields shared by summaries and details."""
        return {
            "id": d.id,
            "message_id": d.message_id,
            "messenger": d.messenger.value,
            "recipient": d.recipient,
            "status": d.status.value,
            "send_at": to_datetime(d.send_at_ms),
            "next_attempt_at": _maybe(d.due_at_ms) if d.status == "pending" else None,
            "sent_at": _maybe(d.sent_at_ms),
            "attempts_made": d.attempts_made,
            "last_error": d.last_error,
            "created_at": to_datetime(d.created_at_ms),
            "updated_at": to_datetime(d.updated_at_ms),
        }

    @classmethod
    def of(cls, d: Delivery) -> DeliverySummary:
        """Build from a stored delivery."""
        return cls(**cls.fields_of(d))


class DeliveryDetail(DeliverySummary):
    """GET /v1/deliveries/{id}: a delivery with every attempt so far."""

    attempts: list[AttemptOut] = []

    @classmethod
    def with_attempts(cls, d: Delivery, attempts: list[Attempt]) -> DeliveryDetail:
        """Build from a stored delivery and its attempts."""
        return cls(**cls.fields_of(d), attempts=[AttemptOut.of(a) for a in attempts])


class DeliveryPage(msgspec.Struct):
    """A page of deliveries, newest first; pass ``next_cursor`` for the next."""

    items: list[DeliverySummary]
    next_cursor: str | None


class InboxItemOut(msgspec.Struct):
    """One text as the emulated messenger's recipient received it."""

    delivery_id: str
    recipient: str
    text: str
    received_at: datetime

    @classmethod
    def of(cls, item: InboxItem) -> InboxItemOut:
        """Build from a stored inbox item."""
        return cls(
            item.delivery_id,
            item.recipient,
            item.text,
            to_datetime(item.received_at_ms),
        )


class InboxPage(msgspec.Struct):
    """A page of an inbox, oldest first; pass ``next_cursor`` for the next."""

    items: list[InboxItemOut]
    next_cursor: str | None


class EmulatorPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """PUT /v1/emulator/{messenger}: any subset of the emulator's settings."""

    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    transient_error_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    rate_limit_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    retry_after_s: (
        Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] | msgspec.UnsetType
    ) = msgspec.UNSET
    permanent_error_rate: Rate | msgspec.UnsetType = msgspec.UNSET


class StatsOut(msgspec.Struct):
    """GET /v1/stats: where the deliveries are, for people without Prometheus."""

    deliveries: dict[MessengerName, dict[StatusName, int]]
    totals: dict[StatusName, int]
    due_now: int
    scheduled: int
    oldest_due_age_s: float | None
    sent_last_minute: int

    @classmethod
    def of(cls, stats: OutboxStats, now_ms: int) -> StatsOut:
        """Build from the outbox's counts, with a zero for every empty cell."""
        by_messenger: dict[MessengerName, dict[StatusName, int]] = {
            m.value: {s.value: stats.counts.get((m, s), 0) for s in DeliveryStatus}
            for m in Messenger
        }
        totals: dict[StatusName, int] = {
            s.value: sum(stats.counts.get((m, s), 0) for m in Messenger)
            for s in DeliveryStatus
        }
        oldest = stats.oldest_due_ms
        return cls(
            deliveries=by_messenger,
            totals=totals,
            due_now=sum(stats.due.values()),
            scheduled=sum(stats.scheduled.values()),
            oldest_due_age_s=None if oldest is None else max(0, now_ms - oldest) / 1000,
            sent_last_minute=stats.sent_last_minute,
        )


class ProblemDetail(msgspec.Struct):
    """An error, as RFC 9457 problem details (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | msgspec.UnsetType = msgspec.UNSET


class FieldProblem(msgspec.Struct):
    """One field at fault in a validation error, and why."""

    field: str
    reason: str
