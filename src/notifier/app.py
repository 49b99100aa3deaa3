"""Wiring: build the services from a Config and the Litestar app around them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar, get
from litestar.openapi import OpenAPIConfig

from notifier import __version__
from notifier.api.problems import EXCEPTION_HANDLERS
from notifier.api.routes import v1
from notifier.config import Config
from notifier.dispatcher import Dispatcher
from notifier.domain.models import Messenger
from notifier.domain.retry import RetryPolicy
from notifier.messengers.emulator import EmulatedMessenger
from notifier.messengers.inbox import Inbox
from notifier.services import Services
from notifier.storage.sqlite import SqliteOutbox

log = structlog.get_logger("notifier.app")

MAX_BODY_BYTES = 1024 * 1024


async def start_services(
    config: Config, clock: Callable[[], float] = time.time
) -> Services:
    """Open the outbox and inbox, build the emulators and start the dispatcher."""
    outbox = await SqliteOutbox.open(config.database.path, config.database.synchronous)
    inbox = await Inbox.open(config.emulator.inbox_path)
    emulators = {
        m: EmulatedMessenger(m, getattr(config.emulator, m.value), inbox, clock=clock)
        for m in Messenger
    }
    d = config.dispatcher
    dispatcher = Dispatcher(
        outbox,
        emulators,
        policy=RetryPolicy(d.max_attempts, d.backoff_base_s, d.backoff_max_s),
        poll_interval_s=d.poll_interval_s,
        batch_size=d.batch_size,
        lease_s=d.lease_s,
        concurrency=d.concurrency,
        clock=clock,
    )
    await dispatcher.start()
    return Services(config, outbox, inbox, emulators, dispatcher, clock)


async def stop_services(services: Services) -> None:
    """Drain the dispatcher within the grace period, then close the databases."""
    await services.dispatcher.stop(services.config.dispatcher.shutdown_grace_s)
    await services.outbox.close()
    await services.inbox.close()


@get("/health/live", summary="Liveness probe", include_in_schema=True)
async def live() -> dict[str, str]:
    """Answer 200 while the process serves requests."""
    return {"status": "ok"}


def create_app(config: Config, clock: Callable[[], float] = time.time) -> Litestar:
    """Return the Litestar app; its lifespan starts and stops the services."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await start_services(config, clock)
        app.state.services = services
        try:
            yield
        finally:
            await stop_services(services)

    return Litestar(
        route_handlers=[v1, live],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(title="notifier", version=__version__),
        logging_config=None,
    )
