"""Probes and metrics: routes outside /v1 that operators and orchestrators call."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from notifier import metrics
from notifier.services import Services


class Readiness(msgspec.Struct, omit_defaults=True):
    """The readiness probe's answer; ``reasons`` is there when not ready."""

    status: str
    reasons: list[str] = []


# prometheus-client's CONTENT_TYPE_LATEST without the charset: Litestar adds it.
_EXPOSITION = "text/plain; version=0.0.4"
# The dispatcher ticks at least once per poll interval; allow a few to pass.
_TICKS_MISSED = 3


@get("/health/live", summary="Liveness probe", tags=["operations"])
async def live() -> dict[str, str]:
    """Answer 200 while the process serves requests."""
    return {"status": "ok"}


@get(
    "/health/ready",
    summary="Readiness probe",
    tags=["operations"],
    responses={
        503: ResponseSpec(
            data_container=Readiness,
            generate_examples=False,
            description="Not ready: the reasons say why",
            examples=[
                Example(
                    summary="Not ready",
                    value={
                        "status": "unavailable",
                        "reasons": ["the dispatcher loop has not ticked for 9.2 s"],
                    },
                )
            ],
        )
    },
)
async def ready(state: State) -> Response[Readiness]:
    """Answer 200 when the database answers and the dispatcher, if here, ticks."""
    services: Services = state.services
    problems = []
    try:
        await services.outbox.ping()
    except Exception as exc:
        problems.append(f"the database does not answer: {exc}")
    poll_s = services.config.dispatcher.poll_interval_s
    tick_s = services.dispatcher.last_tick_s
    age_s = None if tick_s is None else services.clock() - tick_s
    # A worker on standby accepts while another one dispatches.
    late = age_s is None or age_s > _TICKS_MISSED * poll_s + 1
    if services.role.active and late:
        problems.append(
            "the dispatcher loop has not ticked "
            + ("yet" if age_s is None else f"for {age_s:.1f} s")
        )
    if problems:
        body = Readiness("unavailable", problems)
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response(Readiness("ok"), status_code=HTTP_200_OK)


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    media_type=_EXPOSITION,
)
async def scrape(state: State) -> Response[bytes]:
    """Return every metric in Prometheus text format, with fresh outbox gauges."""
    services: Services = state.services
    now_ms = services.now_ms()
    metrics.observe_outbox(await services.outbox.stats(now_ms), now_ms)
    return Response(metrics.exposition(), media_type=_EXPOSITION)
