"""Accepting a message: dedupe keys, new deliveries and Idempotency-Key replays."""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite
import msgspec

from notifier.domain.dedupe import dedupe_key, text_digest
from notifier.domain.errors import IdempotencyMismatch
from notifier.domain.ids import new_id
from notifier.domain.models import (
    AcceptedDelivery,
    Delivery,
    DeliveryStatus,
    NewMessage,
)
from notifier.storage.base import Accepted, IdempotencyClaim
from notifier.storage.sqlite.rows import chunks, deliveries_by_id, marks

_INSERT_DELIVERY = """
INSERT INTO deliveries (id, message_id, messenger, recipient, status, send_at_ms,
    due_at_ms, created_at_ms, updated_at_ms)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"""

_INSERT_DEDUPE = """
INSERT INTO dedupe (key, delivery_id, created_at_ms) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING"""

_INSERT_LINK = """
INSERT INTO message_deliveries (message_id, position, delivery_id, duplicate)
VALUES (?, ?, ?, ?)"""


class _Snapshot(msgspec.Struct, array_like=True):
    """An accepted answer as kept for Idempotency-Key replays."""

    message_id: str
    created_at_ms: int
    deliveries: list[tuple[Delivery, bool]]


class _Owner(msgspec.Struct, array_like=True):
    """Who holds a dedupe key; the final fields are set once retention pruned it."""

    delivery_id: str
    final_status: str | None
    final_send_at_ms: int | None


async def replay(db: aiosqlite.Connection, claim: IdempotencyClaim) -> Accepted | None:
    """Return the first answer given under this key, or None for a new key."""
    rows = await db.execute_fetchall(
        "SELECT request_hash, response FROM idempotency_keys WHERE key = ?",
        (claim.key,),
    )
    if not rows:
        return None
    request_hash, response = next(iter(rows))
    if request_hash != claim.request_hash:
        raise IdempotencyMismatch(claim.key)
    snap = msgspec.msgpack.decode(response, type=_Snapshot)
    deliveries = [AcceptedDelivery(d, dup) for d, dup in snap.deliveries]
    return Accepted(snap.message_id, snap.created_at_ms, deliveries, replayed=True)


async def remember(
    db: aiosqlite.Connection, claim: IdempotencyClaim, accepted: Accepted
) -> None:
    """Keep the answer under its key, in the transaction that made it."""
    snap = _Snapshot(
        accepted.message_id,
        accepted.created_at_ms,
        [(a.delivery, a.duplicate) for a in accepted.deliveries],
    )
    await db.execute(
        "INSERT INTO idempotency_keys (key, request_hash, response, created_at_ms) "
        "VALUES (?, ?, ?, ?)",
        (
            claim.key,
            claim.request_hash,
            msgspec.msgpack.encode(snap),
            snap.created_at_ms,
        ),
    )


async def insert_message(db: aiosqlite.Connection, message: NewMessage) -> Accepted:
    """Insert the message, then claim each recipient's dedupe key for a new delivery.

    The UNIQUE dedupe key decides, inside this transaction, which recipients
    get a new delivery: a key already taken names the delivery to answer with.
    """
    now = message.created_at_ms
    await db.execute(
        "INSERT INTO messages (id, text, created_at_ms) VALUES (?, ?, ?)",
        (message.id, message.text, now),
    )
    digest = text_digest(message.text)
    keys = [dedupe_key(r, digest) for r in message.recipients]
    proposed = [new_id(now) for _ in keys]
    await db.executemany(
        _INSERT_DEDUPE, [(k, p, now) for k, p in zip(keys, proposed, strict=True)]
    )
    owners = await _owners(db, keys)
    chosen = [owners[k].delivery_id for k in keys]
    await db.executemany(
        _INSERT_DELIVERY,
        [
            (
                pid,
                message.id,
                r.messenger.value,
                r.id,
                message.send_at_for(r),
                message.send_at_for(r),
                now,
                now,
            )
            for r, pid, cid in zip(message.recipients, proposed, chosen, strict=True)
            if pid == cid
        ],
    )
    await db.executemany(
        _INSERT_LINK,
        [
            (message.id, i, cid, int(pid != cid))
            for i, (pid, cid) in enumerate(zip(proposed, chosen, strict=True))
        ],
    )
    found = await deliveries_by_id(db, chosen)
    deliveries = [
        AcceptedDelivery(
            found.get(owners[k].delivery_id) or _pruned(owners[k], message, i),
            duplicate=pid != owners[k].delivery_id,
        )
        for i, (k, pid) in enumerate(zip(keys, proposed, strict=True))
    ]
    return Accepted(message.id, now, deliveries)


def _pruned(owner: _Owner, message: NewMessage, index: int) -> Delivery:
    """Rebuild what a duplicate's answer shows of a delivery retention removed."""
    recipient = message.recipients[index]
    send_at_ms = owner.final_send_at_ms or message.created_at_ms
    return Delivery(
        id=owner.delivery_id,
        message_id="",
        messenger=recipient.messenger,
        recipient=recipient.id,
        status=DeliveryStatus(owner.final_status or DeliveryStatus.SENT),
        send_at_ms=send_at_ms,
        due_at_ms=None,
        attempts_made=0,
        attempts_counted=0,
        last_error=None,
        created_at_ms=send_at_ms,
        updated_at_ms=send_at_ms,
        sent_at_ms=None,
    )


async def _owners(
    db: aiosqlite.Connection, keys: Sequence[bytes]
) -> dict[bytes, _Owner]:
    owners: dict[bytes, _Owner] = {}
    for chunk in chunks(keys):
        rows = await db.execute_fetchall(
            "SELECT key, delivery_id, final_status, final_send_at_ms FROM dedupe "
            f"WHERE key IN ({marks(len(chunk))})",
            chunk,
        )
        owners.update((r[0], _Owner(r[1], r[2], r[3])) for r in rows)
    return owners
