"""One dispatching process per database file, and the hand-over between them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

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


async def wait_until_sent(services: Services, delivery_id: str) -> None:
    for _ in range(250):
        if (await services.outbox.get_delivery(delivery_id)).status == "sent":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"delivery {delivery_id} was never sent")


async def test_role_lets_one_of_two_workers_dispatch(tmp_path: Path) -> None:
    config = two_worker_config(tmp_path)

    first = await start_services(config)
    second = await start_services(config)

    try:
        assert first.role.active
        assert not second.role.active
    finally:
        await stop_services(second)
        await stop_services(first)


async def test_role_dispatches_what_the_standby_worker_accepted(
    tmp_path: Path,
) -> None:
    """The standby's notify reaches no dispatcher: the watcher must see the commit.

    The dispatcher's own poll is 30 s away, so only the watcher can wake it.
    """
    config = two_worker_config(tmp_path, poll_interval_s=30)
    first = await start_services(config)
    second = await start_services(config)
    now_ms = int(time.time() * 1000)

    try:
        accepted = await second.outbox.accept(message(ALICE_TG, at_ms=now_ms))
        (delivery,) = accepted.deliveries
        await wait_until_sent(second, delivery.delivery.id)
    finally:
        await stop_services(second)
        await stop_services(first)


async def test_role_hands_over_when_the_dispatching_worker_stops(
    tmp_path: Path,
) -> None:
    config = two_worker_config(tmp_path)
    first = await start_services(config)
    second = await start_services(config)
    now_ms = int(time.time() * 1000)

    await stop_services(first)
    try:
        for _ in range(100):  # a retry every poll interval, 0.05 s
            if second.role.active:
                break
            await asyncio.sleep(0.02)
        accepted = await second.outbox.accept(message(ALICE_TG, at_ms=now_ms))
        (delivery,) = accepted.deliveries
        await wait_until_sent(second, delivery.delivery.id)
    finally:
        await stop_services(second)
    assert second.role.active is False  # stopped, and the lock let go


async def test_role_without_a_file_dispatches_alone(tmp_path: Path) -> None:
    config = two_worker_config(tmp_path)
    config = msgspec.structs.replace(config, database=DatabaseConfig(path=":memory:"))

    services = await start_services(config)

    try:
        assert services.role.active
    finally:
        await stop_services(services)
