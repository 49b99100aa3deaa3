"""Wiring: build the services from a Config and the Litestar app around them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.types import ControllerRouterHandler

from notifier.api.auth import PUBLIC_PATHS, ApiKeyMiddleware
from notifier.api.docs import ClosedStructs, assets_router, openapi_config
from notifier.api.http_metrics import HttpMetricsMiddleware
from notifier.api.ops import live, ready, scrape
from notifier.api.problems import EXCEPTION_HANDLERS
from notifier.api.routes import v1
from notifier.api.throttle import rate_limits
from notifier.config import Config, load
from notifier.dispatcher import Dispatcher
from notifier.dispatcher.janitor import Janitor
from notifier.dispatcher.role import DispatchRole, lock_path_for
from notifier.domain.models import Messenger
from notifier.domain.retry import RetryPolicy
from notifier.logging import configure
from notifier.messengers.emulator import EmulatedMessenger, follow_shared_settings
from notifier.messengers.inbox import Inbox
from notifier.services import Services
from notifier.storage.sqlite import SqliteOutbox

# How often the dispatching worker of several looks for the others' commits.
_WATCH_S = 0.01
_HANDBACK_MARGIN_S = 10.0
# How soon an emulator change made through one worker reaches the others.
_SETTINGS_S = 0.25


async def start_services(
    config: Config, clock: Callable[[], float] = time.time
) -> Services:
    """Open the outbox and inbox, build the emulators and start the dispatcher."""
    outbox = await SqliteOutbox.open(config.database.path, config.database.synchronous)
    try:
        inbox = await Inbox.open(config.emulator.inbox_path)
    except BaseException:
        await outbox.close()
        raise
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
    r = config.retention
    janitor = Janitor(
        outbox,
        finished_after_days=r.finished_after_days,
        dedupe_window_days=r.dedupe_window_days,
        idempotency_key_hours=r.idempotency_key_hours,
        interval_s=r.interval_s,
        batch_size=r.batch_size,
        clock=clock,
    )
    role = DispatchRole(
        lock_path_for(str(config.database.path)),
        outbox,
        dispatcher,
        janitor,
        retry_s=d.poll_interval_s,
        # One worker hears its own accepts; several must watch the file.
        watch_s=_WATCH_S if config.server.workers > 1 else None,
        # Longer than a worker's own shutdown, which ends a standby first.
        handback_s=d.shutdown_grace_s + _HANDBACK_MARGIN_S,
    )
    await role.start()
    services = Services(config, outbox, inbox, emulators, dispatcher, role, clock)
    if config.server.workers > 1:
        # Another worker may answer PUT /v1/emulator: follow what it saved.
        services.settings_sync = asyncio.create_task(
            follow_shared_settings(inbox, emulators, _SETTINGS_S), name="settings"
        )
    return services


async def stop_services(services: Services) -> None:
    """Drain the dispatcher within the grace period, then close the databases."""
    if services.settings_sync is not None:
        services.settings_sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await services.settings_sync
    await services.role.stop(services.config.dispatcher.shutdown_grace_s)
    await services.outbox.close()
    await services.inbox.close()


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

    handlers: list[ControllerRouterHandler] = [v1, live, ready, scrape]
    if not config.is_production:
        handlers.append(assets_router())
    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=config.api.max_body_bytes,
        openapi_config=None if config.is_production else openapi_config(),
        logging_config=None,
        plugins=[ClosedStructs()],
        middleware=[
            HttpMetricsMiddleware,
            DefineMiddleware(
                ApiKeyMiddleware,
                exclude=PUBLIC_PATHS,
                exclude_http_methods=["OPTIONS"],
            ),
            *(limit.middleware for limit in rate_limits(config.throttle)),
        ],
    )


def create_app_from_env() -> Litestar:
    """Build the app in a worker process of ``serve --workers N``.

    Each worker reads the config again (the parent passes its file through
    NOTIFIER_CONFIG) and accepts requests; a process of its own dispatches,
    and a worker takes over if it dies (see DispatchRole).
    """
    config = load()
    configure(config.logging.level, config.logging.format)
    return create_app(config)
