"""The dispatcher in a process of its own, beside the HTTP workers."""

from __future__ import annotations

import asyncio
import signal

from notifier.config import Config, load
from notifier.logging import configure


def run() -> None:
    """Dispatch from the config the environment names, until SIGTERM or SIGINT.

    ``serve --workers N`` starts this before its HTTP workers, so that it takes
    the dispatch lock and the workers only accept: a worker that dispatched as
    well would serve its share of requests more slowly than the others. Should
    this process die, a worker takes the lock over (see DispatchRole).
    """
    config = load()
    configure(config.logging.level, config.logging.format)
    asyncio.run(_dispatch_until_stopped(config))


async def _dispatch_until_stopped(config: Config) -> None:
    from notifier.app import start_services, stop_services

    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    services = await start_services(config)
    try:
        await stopped.wait()
    finally:
        await stop_services(services)
