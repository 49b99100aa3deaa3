"""POST and GET /v1/messages."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from notifier import metrics
from notifier.api.docs import problems
from notifier.api.params import Injected, parse_time
from notifier.api.schemas import (
    DeliveryOut,
    MessageAccepted,
    MessageOut,
    SendMessage,
    to_datetime,
)
from notifier.domain.errors import FieldError, ValidationFailed
from notifier.domain.keys import ApiKey, Scope
from notifier.domain.validation import build_message
from notifier.storage.base import IdempotencyClaim

_IDEMPOTENCY_KEY_MAX = 255


def _idempotency(
    key: str | None, owner: ApiKey | None, request: SendMessage
) -> IdempotencyClaim | None:
    if key is None:
        return None
    if not 1 <= len(key) <= _IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise ValidationFailed(
            [
                FieldError(
                    "Idempotency-Key",
                    f"must be 1 to 255 printable characters, got {key!r}",
                )
            ]
        )
    # Hash the decoded request, so that whitespace or key order do not matter.
    digest = hashlib.sha256(msgspec.json.encode(request)).digest()
    # Each API key has its own keys; anonymous callers (auth off) share one set.
    namespace = owner.name if owner is not None else ""
    return IdempotencyClaim(f"{namespace}\x00{key}", digest)


@post(
    "/messages",
    status_code=HTTP_202_ACCEPTED,
    summary="Send a message",
    opt={"scope": Scope.SEND},
    responses=problems(400, 401, 403, 413, 415, 422, 429),
)
async def send_message(
    request: Request[Any, ApiKey | None, Any],
    data: JSONBody[SendMessage],
    services: Injected,
    idempotency_key: Annotated[
        str | None, HeaderParameter(name="Idempotency-Key")
    ] = None,
) -> MessageAccepted:
    """Accept one text for many recipients, now or at ``send_at``."""
    claim = _idempotency(idempotency_key, request.auth, data)
    recipients = [
        (r.messenger, r.id, parse_time(r.send_at, f"recipients[{i}].send_at"))
        for i, r in enumerate(data.recipients)
    ]
    api = services.config.api
    message = build_message(
        data.text,
        recipients,
        parse_time(data.send_at, "send_at"),
        now_ms=services.now_ms(),
        max_ahead_ms=int(api.max_schedule_ahead_days * 86_400_000),
        max_recipients=api.max_recipients,
    )

    accepted = await services.outbox.accept(message, claim)
    if not accepted.replayed:
        services.dispatcher.notify()
        for d in accepted.deliveries:
            counter = metrics.DEDUPLICATED if d.duplicate else metrics.ACCEPTED
            metrics.child(counter, d.delivery.messenger.value).inc()

    return MessageAccepted(
        accepted.message_id, [DeliveryOut.of(d) for d in accepted.deliveries]
    )


@get(
    "/messages/{message_id:str}",
    summary="Get a message and its deliveries",
    opt={"scope": Scope.READ},
    responses=problems(401, 403, 404, 429),
)
async def get_message(message_id: FromPath[str], services: Injected) -> MessageOut:
    """Return the message and the current status of each of its deliveries."""
    stored = await services.outbox.get_message(message_id)
    return MessageOut(
        stored.id,
        stored.text,
        to_datetime(stored.created_at_ms),
        [DeliveryOut.of(d) for d in stored.deliveries],
    )
