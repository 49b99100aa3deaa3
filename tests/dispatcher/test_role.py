"""One dispatching process per database file, and the hand-over between them."""

from __future__ import annotations

import asyncio
import os
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


async def test_role_hands_over_when_the_dispatching_worker_dies(
    tmp_path: Path,
) -> None:
    config = two_worker_config(tmp_path)
    first = await start_services(config)
    second = await start_services(config)
    now_ms = int(time.time() * 1000)

    crash(first)
    try:
        assert await wait_active(second)
        accepted = await second.outbox.accept(message(ALICE_TG, at_ms=now_ms))
        (delivery,) = accepted.deliveries
        await wait_until_sent(second, delivery.delivery.id)
    finally:
        await stop_services(second)
        await stop_services(first)


async def test_role_standby_does_not_take_over_from_a_clean_stop(
    tmp_path: Path,
) -> None:
    """A clean stop means shutdown or a restart: a standby would drain twice."""
    config = two_worker_config(tmp_path)
    first = await start_services(config)
    second = await start_services(config)

    await stop_services(first)
    try:
        took_over = await wait_active(second, polls=15)  # 0.3 s, 6 retries
    finally:
        await stop_services(second)
    assert not took_over


async def test_role_standby_takes_over_once_a_clean_stop_is_old(
    tmp_path: Path,
) -> None:
    """No successor came within handback_s: the standby dispatches after all."""
    config = two_worker_config(tmp_path)
    first = await start_services(config)
    second = await start_services(config)
    second.role._handback_s = 0.2

    await stop_services(first)
    try:
        assert await wait_active(second)
    finally:
        await stop_services(second)


async def test_role_successor_takes_the_lock_at_start_after_a_clean_stop(
    tmp_path: Path,
) -> None:
    config = two_worker_config(tmp_path)
    first = await start_services(config)
    await stop_services(first)

    successor = await start_services(config)

    try:
        assert successor.role.active
    finally:
        await stop_services(successor)


async def test_role_without_a_file_dispatches_alone(tmp_path: Path) -> None:
    config = two_worker_config(tmp_path)
    config = msgspec.structs.replace(config, database=DatabaseConfig(path=":memory:"))

    services = await start_services(config)

    try:
        assert services.role.active
    finally:
        await stop_services(services)
