"""Schema versions: a database made before version 1 keeps its dedupe records."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from builders import ALICE_TG, BOB_WA, DAY_MS, LEASE_MS, NOW_MS, message, result
from notifier.domain.dedupe import dedupe_key, legacy_dedupe_key, text_digest
from notifier.domain.errors import StoreError
from notifier.domain.models import Delivery, DeliveryStatus, Recipient
from notifier.storage.sqlite import SqliteOutbox
from notifier.storage.sqlite.migrating import LEGACY_DEDUPE, SCHEMA_VERSION

TEXT = "Your code is 1234"


async def _open(path: Path) -> SqliteOutbox:
    return await SqliteOutbox.open(path, synchronous="normal")


async def _sent(outbox: SqliteOutbox, recipient: Recipient, at_ms: int) -> Delivery:
    accepted = await outbox.accept(message(recipient, text=TEXT, at_ms=at_ms))
    (claim,) = await outbox.claim({recipient.messenger: 10}, at_ms, LEASE_MS)
    await outbox.record([result(claim, DeliveryStatus.SENT, at_ms + 10)], at_ms + 10)
    return accepted.deliveries[0].delivery


def _as_version_0(path: Path, *recipients: Recipient) -> None:
    """Turn the file into what notifier before version 1 left: old keys, version 0."""
    digest = text_digest(TEXT)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for r in recipients:
            db.execute(
                "UPDATE dedupe SET key = ? WHERE key = ?",
                (legacy_dedupe_key(r, digest), dedupe_key(r, digest)),
            )
        db.execute("PRAGMA user_version = 0")


def _tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}


def _version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        return version


async def test_a_new_database_starts_at_the_current_version(tmp_path: Path) -> None:
    outbox = await _open(tmp_path / "o.db")
    await outbox.close()

    assert _version(tmp_path / "o.db") == SCHEMA_VERSION
    assert LEGACY_DEDUPE not in _tables(tmp_path / "o.db")


async def test_a_text_sent_before_the_upgrade_is_a_duplicate_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    outbox = await _open(path)
    old = await _sent(outbox, ALICE_TG, NOW_MS)
    await outbox.close()
    _as_version_0(path, ALICE_TG)

    outbox = await _open(path)
    try:
        again = await outbox.accept(message(ALICE_TG, BOB_WA, text=TEXT, at_ms=NOW_MS))
        once_more = await outbox.accept(message(ALICE_TG, text=TEXT, at_ms=NOW_MS))
    finally:
        await outbox.close()

    alice, bob = again.deliveries
    assert (alice.duplicate, alice.delivery.id) == (True, old.id)
    assert not bob.duplicate
    # The first meeting moved the record to its new key.
    assert once_more.deliveries[0].delivery.id == old.id
    assert _version(path) == SCHEMA_VERSION
    with closing(sqlite3.connect(path)) as db:
        assert db.execute(f"SELECT count(*) FROM {LEGACY_DEDUPE}").fetchone() == (0,)


async def test_a_record_of_a_pruned_delivery_answers_after_the_upgrade(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    outbox = await _open(path)
    old = await _sent(outbox, ALICE_TG, NOW_MS - 40 * DAY_MS)
    await outbox.prune(
        finished_before_ms=NOW_MS,
        dedupe_before_ms=None,
        idempotency_before_ms=0,
        limit=100,
    )
    await outbox.close()
    _as_version_0(path, ALICE_TG)

    outbox = await _open(path)
    try:
        again = await outbox.accept(message(ALICE_TG, text=TEXT, at_ms=NOW_MS))
    finally:
        await outbox.close()

    (answer,) = again.deliveries
    assert answer.duplicate
    assert answer.delivery.id == old.id
    assert answer.delivery.status is DeliveryStatus.SENT


async def test_prune_marks_and_ages_out_old_records_then_drops_their_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    outbox = await _open(path)
    await _sent(outbox, ALICE_TG, NOW_MS - 40 * DAY_MS)
    kept = await _sent(outbox, BOB_WA, NOW_MS - 40 * DAY_MS + 1)
    await outbox.close()
    _as_version_0(path, ALICE_TG, BOB_WA)

    outbox = await _open(path)
    try:
        # Pruned deliveries leave their final status on the old records ...
        await outbox.prune(
            finished_before_ms=NOW_MS,
            dedupe_before_ms=None,
            idempotency_before_ms=0,
            limit=100,
        )
        with closing(sqlite3.connect(path)) as db:
            marked = db.execute(
                f"SELECT final_status FROM {LEGACY_DEDUPE} ORDER BY delivery_id"
            ).fetchall()
        # ... which the dedupe window removes like any other.
        bob = await outbox.accept(message(BOB_WA, text=TEXT, at_ms=NOW_MS))
        pruned = await outbox.prune(
            finished_before_ms=NOW_MS,
            dedupe_before_ms=NOW_MS,
            idempotency_before_ms=0,
            limit=100,
        )
        alice = await outbox.accept(message(ALICE_TG, text=TEXT, at_ms=NOW_MS))
    finally:
        await outbox.close()

    assert marked == [("sent",), ("sent",)]
    assert bob.deliveries[0].delivery.id == kept.id  # moved to the new table
    assert pruned.dedupe_records == 2  # Alice's old record and Bob's moved one
    assert not alice.deliveries[0].duplicate
    assert LEGACY_DEDUPE not in _tables(path)


async def test_a_version_0_database_without_dedupe_records_needs_no_old_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    outbox = await _open(path)
    await outbox.close()
    _as_version_0(path)

    outbox = await _open(path)
    try:
        accepted = await outbox.accept(message(ALICE_TG, text=TEXT, at_ms=NOW_MS))
        again = await outbox.accept(message(ALICE_TG, text=TEXT, at_ms=NOW_MS))
    finally:
        await outbox.close()

    assert again.deliveries[0].delivery.id == accepted.deliveries[0].delivery.id
    assert again.deliveries[0].duplicate
    assert LEGACY_DEDUPE not in _tables(path)
    assert _version(path) == SCHEMA_VERSION


async def test_reopening_a_current_database_moves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    outbox = await _open(path)
    first = await _sent(outbox, ALICE_TG, NOW_MS)
    await outbox.close()

    outbox = await _open(path)
    try:
        again = await outbox.accept(message(ALICE_TG, text=TEXT, at_ms=NOW_MS))
    finally:
        await outbox.close()

    assert again.deliveries[0].delivery.id == first.id
    assert LEGACY_DEDUPE not in _tables(path)


async def test_a_database_from_a_newer_notifier_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match="newer notifier"):
        await _open(path)

    assert _version(path) == SCHEMA_VERSION + 1


async def test_a_new_file_opened_without_upgrading_starts_at_the_current_version(
    tmp_path: Path,
) -> None:
    outbox = await SqliteOutbox.open(tmp_path / "o.db", upgrade=False)
    await outbox.close()

    assert _version(tmp_path / "o.db") == SCHEMA_VERSION
