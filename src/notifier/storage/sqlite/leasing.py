"""Claiming due deliveries under leases, and writing back attempt results."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Mapping, Sequence

from notifier.domain.models import Claim, Messenger, Result
from notifier.storage.sqlite.rows import select_in

_CLAIM_ONE = """
SELECT id FROM (SELECT id FROM deliveries
    WHERE messenger = '{messenger}' AND due_at_ms <= :now
    ORDER BY due_at_ms LIMIT :{messenger})"""

# A subquery may stand in RETURNING, so the claim hands back the text too.
_CLAIM = """
UPDATE deliveries
SET status = 'sending', lease_token = :token, due_at_ms = :lease_until,
    attempts_made = attempts_made + 1, updated_at_ms = :now
WHERE id IN ({selects})
RETURNING id, message_id, messenger, recipient, attempts_made, attempts_counted,
    (SELECT text FROM messages WHERE messages.id = deliveries.message_id),
    created_at_ms"""

_OPEN_ATTEMPT = """
INSERT INTO attempts (delivery_id, number, lease_token, started_at_ms)
VALUES (?, ?, ?, ?)"""

_RECORD = """
UPDATE deliveries
SET status = ?, due_at_ms = ?, lease_token = NULL,
    attempts_counted = attempts_counted + ?, last_error = ?, updated_at_ms = ?,
    sent_at_ms = CASE WHEN ? = 'sent' THEN ? ELSE sent_at_ms END
WHERE id = ?"""

_FINISH_ATTEMPT = """
UPDATE attempts SET finished_at_ms = ?, outcome = ?, error = ?
WHERE delivery_id = ? AND number = ? AND outcome IS NULL"""


def claim_sql(messengers: Sequence[Messenger]) -> str:
    """Return the claim statement for these messengers; limits bind by name."""
    selects = " UNION ALL ".join(
        _CLAIM_ONE.format(messenger=m.value) for m in messengers
    )
    return _CLAIM.format(selects=selects)


def claim(
    db: sqlite3.Connection,
    limits: Mapping[Messenger, int],
    now_ms: int,
    lease_ms: int,
) -> list[Claim]:
    """Lease due rows per messenger and open an attempt for each; in a transaction."""
    wanted = {m: n for m, n in limits.items() if n > 0}
    if not wanted:
        return []
    token = secrets.token_hex(8)
    params: dict[str, object] = {m.value: n for m, n in wanted.items()}
    params.update(token=token, lease_until=now_ms + lease_ms, now=now_ms)
    rows = db.execute(claim_sql(list(wanted)), params).fetchall()
    if not rows:
        return []
    # Only a delivery claimed before can have an attempt left open by a lease
    # that ran out; a first attempt (attempts_made now 1) has none to close.
    reclaimed = _expire_open_attempts(db, [r[0] for r in rows if r[4] > 1], now_ms)
    db.executemany(_OPEN_ATTEMPT, [(r[0], r[4], token, now_ms) for r in rows])
    return [
        Claim(
            delivery_id=r[0],
            message_id=r[1],
            messenger=Messenger(r[2]),
            recipient=r[3],
            text=r[6],
            lease_token=token,
            attempt=r[4],
            attempts_counted=r[5],
            reclaimed=r[0] in reclaimed,
            created_at_ms=r[7],
        )
        for r in rows
    ]


def record(
    db: sqlite3.Connection, results: Sequence[Result], now_ms: int
) -> list[Result]:
    """Apply the results whose lease still holds; in a transaction.

    A lease ends with its first result: a second one for the same lease in
    the batch is stale, as it would be in a later batch.
    """
    held = _held_leases(db, [r.delivery_id for r in results])
    fresh = []
    for r in results:
        if held.get(r.delivery_id) == (r.lease_token, r.attempt):
            fresh.append(r)
            del held[r.delivery_id]
    db.executemany(
        _RECORD,
        [
            (
                r.status.value,
                r.due_at_ms,
                int(r.counted),
                r.error,
                now_ms,
                r.status.value,
                r.finished_at_ms,
                r.delivery_id,
            )
            for r in fresh
        ],
    )
    db.executemany(
        _FINISH_ATTEMPT,
        [
            (r.finished_at_ms, r.outcome.value, r.error, r.delivery_id, r.attempt)
            for r in fresh
        ],
    )
    return fresh


def _held_leases(
    db: sqlite3.Connection, ids: Sequence[str]
) -> dict[str, tuple[str, int]]:
    sql = (
        "SELECT id, lease_token, attempts_made FROM deliveries "
        "WHERE status = 'sending' AND id IN ({marks})"
    )
    return {r[0]: (r[1], r[2]) for r in select_in(db, sql, ids)}


def _expire_open_attempts(
    db: sqlite3.Connection, ids: Sequence[str], now_ms: int
) -> set[str]:
    sql = (
        "UPDATE attempts SET finished_at_ms = ?, outcome = 'lease_expired', "
        "error = 'the lease ran out before the attempt reported' "
        "WHERE outcome IS NULL AND delivery_id IN ({marks}) RETURNING delivery_id"
    )
    return {r[0] for r in select_in(db, sql, ids, now_ms)}
