"""Fixtures of the outbox contract suite: every test runs once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from notifier.storage.base import Outbox
from notifier.storage.sqlite import SqliteOutbox

Opener = Callable[[Path], Awaitable[Outbox]]
"""Opens an outbox on the store kept in a directory; one directory, one store."""


async def _open_sqlite(directory: Path) -> Outbox:
    # NORMAL skips the fsync per commit; durability across power loss is not
    # what these tests are about, and FULL makes them several times slower.
    return await SqliteOutbox.open(directory / "outbox.db", synchronous="normal")


# A new backend adds one entry here, and the whole suite then runs against it.
BACKENDS: dict[str, Opener] = {
    "sqlite": _open_sqlite,
}


@pytest.fixture(params=sorted(BACKENDS))
def open_outbox(request: pytest.FixtureRequest) -> Opener:
    """The opener of one backend; two calls with one directory share the store."""
    return BACKENDS[request.param]


@pytest.fixture
async def outbox(open_outbox: Opener, tmp_path: Path) -> AsyncIterator[Outbox]:
    """An opened outbox on a fresh store, closed after the test."""
    opened = await open_outbox(tmp_path)
    yield opened
    await opened.close()
