"""The /v1/deliveries routes and /v1/stats."""

from __future__ import annotations

from litestar import get, post
from litestar.params import FromPath, FromQuery
from litestar.status_codes import HTTP_200_OK

from notifier import metrics
from notifier.api.docs import problems
from notifier.api.params import DeliveryCursor, Injected, Limit
from notifier.api.schemas import (
    DeliveryDetail,
    DeliveryPage,
    DeliverySummary,
    MessengerName,
    StatsOut,
    StatusName,
)
from notifier.domain.keys import Scope
from notifier.domain.models import DeliveryStatus, Messenger


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
