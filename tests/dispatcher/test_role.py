"""One dispatching process per database file, and the hand-over between them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from builders import ALICE_TG, message
from notifier.app import start_services, stop_services
from notifier.config import (
    Config,
    DatabaseConfig,
    DispatcherConfig,
    EmulatorConfig,
    ServerConfig,
)
from notifier.messengers.emulator import EmulatorSettings
from notifier.services import Services


def two_worker_config(tmp_path: Path, poll_interval_s: float = 0.05) -> Config:
    instant = EmulatorSettings(latency_ms=0)
    return Config(
        server=ServerConfig(workers=2),
        database=DatabaseConfig(path=str(tmp_path / "outbox.db")),
        dispatcher=DispatcherConfig(
            poll_interval_s=poll_interval_s, shutdown_grace_s=1
        ),
        emulator=EmulatorConfig(
            inbox_path=str(tmp_path / "inbox.db"),
            telegram=instant,
            whatsapp=instant,
            viber=instant,
        ),
    )


class Workers:
    """Services on one database, as the worker processes of one server have."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._running: list[Services] = []

    async def start(self) -> Services:
        """Start one more worker's services."""
        services = await start_services(self.config)
        self._running.append(services)
        return services

    async def stop(self, services: Services) -> None:
        """Stop one worker cleanly, as SIGTERM does."""
        self._running.remove(services)
        await stop_services(services)

    async def stop_all(self) -> None:
        """Stop the workers still running, the last started first."""
        while self._running:
            await self.stop(self._running[-1])


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    """Workers whose dispatcher polls every 0.05 s; all stopped at the end."""
    pool = Workers(two_worker_config(tmp_path))
    yield pool
    await pool.stop_all()


async def send_one(services: Services) -> None:
    """Accept one delivery through ``services``; wait until some worker sent it."""
    accepted = await services.outbox.accept(message(ALICE_TG, at_ms=now_ms()))
    (delivery,) = accepted.deliveries
    for _ in range(250):
        found = await services.outbox.get_delivery(delivery.delivery.id)
        if found.status == "sent":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"delivery {delivery.delivery.id} was never sent")


def now_ms() -> int:
    return int(time.time() * 1000)


async def wait_active(services: Services, polls: int = 50) -> bool:
    for _ in range(polls):  # a retry every poll interval, 0.05 s
        if services.role.active:
            return True
        await asyncio.sleep(0.02)
    return False


def crash(services: Services) -> None:
    """Let the lock go as a killed process does: closed, and nothing said."""
    fd = services.role._fd
    assert fd is not None
    os.close(fd)
    services.role._fd = None


async def test_role_lets_one_of_two_workers_dispatch(workers: Workers) -> None:
    first = await workers.start()
    second = await workers.start()

    assert first.role.active
    assert not second.role.active


async def test_role_dispatches_what_the_standby_worker_accepted(
    tmp_path: Path,
) -> None:
    """The standby's notify reaches no dispatcher: the watcher must see the commit.

    The dispatcher's own poll is 30 s away, so only the watcher can wake it.
    """
    workers = Workers(two_worker_config(tmp_path, poll_interval_s=30))
    await workers.start()
    second = await workers.start()

    try:
        await send_one(second)
    finally:
        await workers.stop_all()


async def test_role_hands_over_when_the_dispatching_worker_dies(
    workers: Workers,
) -> None:
    first = await workers.start()
    second = await workers.start()

    crash(first)

    assert await wait_active(second)
    await send_one(second)


async def test_role_standby_does_not_take_over_from_a_clean_stop(
    workers: Workers,
) -> None:
    """A clean stop means shutdown or a restart: a standby would drain twice."""
    first = await workers.start()
    second = await workers.start()

    await workers.stop(first)

    assert not await wait_active(second, polls=15)  # 0.3 s, 6 retries


async def test_role_standby_takes_over_once_a_clean_stop_is_old(
    workers: Workers,
) -> None:
    """No successor came within handback_s: the standby dispatches after all."""
    first = await workers.start()
    second = await workers.start()
    second.role._handback_s = 0.2

    await workers.stop(first)

    assert await wait_active(second)


async def test_role_successor_takes_the_lock_at_start_after_a_clean_stop(
    workers: Workers,
) -> None:
    await workers.stop(await workers.start())

    successor = await workers.start()

    assert successor.role.active


async def test_role_without_a_file_dispatches_alone(tmp_path: Path) -> None:
    config = two_worker_config(tmp_path)
    alone = Workers(
        msgspec.structs.replace(config, database=DatabaseConfig(path=":memory:"))
    )

    services = await alone.start()

    try:
        assert services.role.active
    finally:
        await alone.stop_all()
