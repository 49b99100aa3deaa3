"""Messages, recipients and attempt results that the storage and janitor tests share."""

from __future__ import annotations

from notifier.domain.ids import new_id
from notifier.domain.models import (
    Claim,
    DeliveryStatus,
    Messenger,
    NewMessage,
    Outcome,
    Recipient,
    Result,
)

NOW_MS = 1_700_000_000_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LEASE_MS = 30_000

ALICE_TG = Recipient(Messenger.TELEGRAM, "1001")
BOB_WA = Recipient(Messenger.WHATSAPP, "+79991234567")
CAROL_VB = Recipient(Messenger.VIBER, "carol-1")

_OUTCOMES = {
    DeliveryStatus.SENT: Outcome.SENT,
    DeliveryStatus.PENDING: Outcome.TRANSIENT_ERROR,
    DeliveryStatus.FAILED: Outcome.PERMANENT_ERROR,
}


def message(
    *recipients: Recipient,
    text: str = "Your code is 1234",
    at_ms: int = NOW_MS,
    send_at_ms: int | None = None,
) -> NewMessage:
    """A validated message created at ``at_ms``, as the API would build it."""
    return NewMessage(
        id=new_id(at_ms),
        text=text,
        recipients=recipients or (ALICE_TG,),
        send_at_ms=at_ms if send_at_ms is None else send_at_ms,
        created_at_ms=at_ms,
    )


def result(
    claim: Claim,
    status: DeliveryStatus,
    at_ms: int,
    *,
    due_at_ms: int | None = None,
    outcome: Outcome | None = None,
    error: str | None = None,
) -> Result:
    """What the dispatcher writes back after the attempt made under ``claim``."""
    return Result(
        delivery_id=claim.delivery_id,
        messenger=claim.messenger,
        lease_token=claim.lease_token,
        attempt=claim.attempt,
        outcome=outcome or _OUTCOMES[status],
        error=error,
        status=status,
        due_at_ms=due_at_ms,
        counted=True,
        finished_at_ms=at_ms,
    )
