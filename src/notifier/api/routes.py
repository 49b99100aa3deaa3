"""Route handlers of API version 1."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import (
    FromPath,
    FromQuery,
    HeaderParameter,
    JSONBody,
    QueryParameter,
)
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_202_ACCEPTED,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from notifier import metrics
from notifier.api.auth import require_scope
from notifier.api.docs import SECURITY, problems
from notifier.api.problems import MalformedBody, from_msgspec
from notifier.api.schemas import (
    DeliveryDetail,
    DeliveryOut,
    DeliveryPage,
    DeliverySummary,
    EmulatorPatch,
    InboxItemOut,
    InboxPage,
    MessageAccepted,
    MessageOut,
    MessengerName,
    SendMessage,
    StatsOut,
    StatusName,
    to_datetime,
)
from notifier.domain.errors import FieldError, ValidationFailed
from notifier.domain.keys import ApiKey, Scope
from notifier.domain.models import DeliveryStatus, Messenger
from notifier.domain.recipients import InvalidRecipient, normalise
from notifier.domain.validation import build_message
from notifier.messengers.emulator import EmulatorSettings
from notifier.services import Services
from notifier.storage.base import IdempotencyClaim

_IDEMPOTENCY_KEY_MAX = 255

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size.")]
Cursor = Annotated[
    int, QueryParameter(ge=0, le=2**53, description="The next_cursor of a page.")
]
DeliveryCursor = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="The next_cursor of a page.",
    ),
]
Injected = NamedDependency[Services]


def _services(state: State) -> Services:
    services: Injected = state.services
    return services


async def _require_json(request: Request[Any, Any, Any]) -> None:
    """Refuse, before decoding, a body that is empty or not declared as JSON."""
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    media_type = request.content_type[0]
    if media_type != "application/json" and not media_type.endswith("+json"):
        sent = media_type or "no Content-Type"
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Send the body as application/json, not {sent!r}.",
        )
    if not (await request.body()).strip():
        raise MalformedBody("The request body is empty; send a JSON object.")


def _parse_time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return msgspec.convert(value, datetime)
    except msgspec.ValidationError as exc:
        example = "'2026-12-24T18:00:00+01:00'"
        reason = f"expected an RFC 3339 time such as {example}, got {value!r}"
        if ":60" in value:
            reason += "; leap seconds (:60) are not supported"
        raise ValidationFailed([FieldError(field, reason)]) from exc


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
        (r.messenger, r.id, _parse_time(r.send_at, f"recipients[{i}].send_at"))
        for i, r in enumerate(data.recipients)
    ]
    api = services.config.api
    message = build_message(
        data.text,
        recipients,
        _parse_time(data.send_at, "send_at"),
        now_ms=services.now_ms(),
        max_ahead_ms=int(api.max_schedule_ahead_days * 86_400_000),
        max_recipients=api.max_recipients,
    )

    accepted = await services.outbox.accept(message, claim)
    if not accepted.replayed:
        services.dispatcher.notify()
        for d in accepted.deliveries:
            counter = metrics.DEDUPLICATED if d.duplicate else metrics.ACCEPTED
            counter.labels(d.delivery.messenger.value).inc()

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


@get(
    "/deliveries/{delivery_id:str}",
    summary="Get a delivery with its attempts",
    opt={"scope": Scope.READ},
    responses=problems(401, 403, 404, 429),
)
async def get_delivery(
    delivery_id: FromPath[str], services: Injected
) -> DeliveryDetail:
    """Return one delivery with its attempt history."""
    delivery = await services.outbox.get_delivery(delivery_id)
    attempts = await services.outbox.list_attempts(delivery_id)
    return DeliveryDetail.with_attempts(delivery, attempts)


@get(
    "/deliveries",
    summary="List deliveries, newest first",
    opt={"scope": Scope.READ},
    responses=problems(400, 401, 403, 422, 429),
)
async def list_deliveries(
    services: Injected,
    status: FromQuery[StatusName | None] = None,
    messenger: FromQuery[MessengerName | None] = None,
    limit: Limit = 50,
    cursor: DeliveryCursor = None,
) -> DeliveryPage:
    """Return a page of deliveries, filtered by status and messenger."""
    rows = await services.outbox.list_deliveries(
        status=DeliveryStatus(status) if status else None,
        messenger=Messenger(messenger) if messenger else None,
        limit=limit + 1,
        before_id=cursor,
    )
    items = [DeliverySummary.of(d) for d in rows[:limit]]
    next_cursor = items[-1].id if len(rows) > limit else None
    return DeliveryPage(items, next_cursor)


@post(
    "/deliveries/{delivery_id:str}/cancel",
    status_code=HTTP_200_OK,
    summary="Cancel a pending delivery",
    opt={"scope": Scope.ADMIN},
    responses=problems(401, 403, 404, 409, 429),
)
async def cancel_delivery(
    delivery_id: FromPath[str], services: Injected
) -> DeliverySummary:
    """Cancel a delivery that is still pending; 409 once it is sending or final."""
    delivery = await services.outbox.cancel(delivery_id, services.now_ms())
    metrics.FINISHED.labels(delivery.messenger.value, delivery.status.value).inc()
    return DeliverySummary.of(delivery)


@post(
    "/deliveries/{delivery_id:str}/retry",
    status_code=HTTP_200_OK,
    summary="Retry a failed delivery",
    opt={"scope": Scope.ADMIN},
    responses=problems(401, 403, 404, 409, 429),
)
async def retry_delivery(
    delivery_id: FromPath[str], services: Injected
) -> DeliverySummary:
    """Queue a failed delivery again with a fresh attempt budget; 409 otherwise."""
    delivery = await services.outbox.retry(delivery_id, services.now_ms())
    services.dispatcher.notify()
    return DeliverySummary.of(delivery)


@get(
    "/stats",
    summary="Counts by status and messenger",
    opt={"scope": Scope.READ},
    responses=problems(401, 403, 429),
)
async def get_stats(services: Injected) -> StatsOut:
    """Return delivery counts, what is waiting, and the last minute's throughput."""
    now_ms = services.now_ms()
    return StatsOut.of(await services.outbox.stats(now_ms), now_ms)


@get(
    "/emulator/{messenger:str}/inbox",
    summary="Read an emulated messenger's inbox",
    opt={"scope": Scope.READ},
    responses=problems(400, 401, 403, 422, 429),
)
async def read_inbox(
    messenger: FromPath[MessengerName],
    services: Injected,
    recipient: FromQuery[str | None] = None,
    limit: Limit = 50,
    cursor: Cursor = 0,
) -> InboxPage:
    """Return what the emulated messenger received, oldest first."""
    kind = Messenger(messenger)
    wanted = None
    if recipient is not None:
        try:
            wanted = normalise(kind, recipient).id
        except InvalidRecipient as exc:
            raise ValidationFailed([FieldError("recipient", str(exc))]) from exc
    items = await services.inbox.list(
        kind, recipient=wanted, limit=limit + 1, after_seq=cursor
    )
    page = items[:limit]
    next_cursor = str(page[-1].seq) if len(items) > limit else None
    return InboxPage([InboxItemOut.of(i) for i in page], next_cursor)


@get(
    "/emulator/{messenger:str}",
    summary="Read an emulator's settings",
    opt={"scope": Scope.READ},
    responses=problems(400, 401, 403, 422, 429),
)
async def get_emulator(
    messenger: FromPath[MessengerName], services: Injected
) -> EmulatorSettings:
    """Return the emulated messenger's current latency and failure rates."""
    return services.emulators[Messenger(messenger)].settings


@put(
    "/emulator/{messenger:str}",
    summary="Change an emulator's settings",
    opt={"scope": Scope.ADMIN},
    responses=problems(400, 401, 403, 413, 415, 422, 429),
)
async def put_emulator(
    messenger: FromPath[MessengerName],
    data: JSONBody[EmulatorPatch],
    services: Injected,
) -> EmulatorSettings:
    """Change any subset of the settings until the next restart."""
    patch = data
    emulator = services.emulators[Messenger(messenger)]
    merged = msgspec.structs.asdict(emulator.settings) | msgspec.structs.asdict(patch)
    merged = {k: v for k, v in merged.items() if v is not msgspec.UNSET}
    try:
        emulator.settings = msgspec.convert(merged, EmulatorSettings)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from exc
    return emulator.settings


v1 = Router(
    path="/v1",
    route_handlers=[
        send_message,
        get_message,
        get_delivery,
        list_deliveries,
        cancel_delivery,
        retry_delivery,
        get_stats,
        read_inbox,
        get_emulator,
        put_emulator,
    ],
    dependencies={"services": Provide(_services, sync_to_thread=False)},
    guards=[require_scope],
    before_request=_require_json,
    security=SECURITY,
    tags=["v1"],
)
