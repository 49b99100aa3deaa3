"""An app client on a temporary database, with instant emulators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from notifier.app import create_app
from notifier.config import Config, DatabaseConfig, DispatcherConfig, EmulatorConfig
from notifier.messengers.emulator import EmulatorSettings


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A config whose emulators answer at once and whose dispatcher polls often."""
    instant = EmulatorSettings(latency_ms=0)
    return Config(
        database=DatabaseConfig(path=str(tmp_path / "outbox.db")),
        dispatcher=DispatcherConfig(
            poll_interval_s=0.05,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
            max_attempts=3,
        ),
        emulator=EmulatorConfig(
            inbox_path=str(tmp_path / "inbox.db"),
            telegram=instant,
            whatsapp=instant,
            viber=instant,
        ),
    )


@pytest.fixture
async def client(config: Config) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """A test client whose lifespan runs the dispatcher."""
    async with AsyncTestClient(create_app(config)) as client:
        yield client


WaitStatus = Callable[[str, set[str]], Awaitable[dict[str, Any]]]


@pytest.fixture
def wait_status(client: AsyncTestClient) -> WaitStatus:  # type: ignore[type-arg]
    """Return a poller: wait until a delivery's status is one of the given ones."""

    async def wait(delivery_id: str, statuses: set[str]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for _ in range(250):
            body = (await client.get(f"/v1/deliveries/{delivery_id}")).json()
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.02)
        raise AssertionError(f"delivery {delivery_id} stayed {body.get('status')!r}")

    return wait
