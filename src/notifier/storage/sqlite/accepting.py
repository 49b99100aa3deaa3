"""Accepting a message: dedupe keys, new deliveries and Idempotency-Key replays."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from notifier.domain.dedupe import dedupe_key, text_digest
from notifier.domain.errors import IdempotencyMismatch
from notifier.domain.ids import new_id
from notifier.domain.models import (
    AcceptedDelivery,
    Delivery,
    DeliveryStatus,
    NewMessage,
    Recipient,
)
from notifier.storage.base import Accepted, IdempotencyClaim
from notifier.storage.sqlite import migrating
from notifier.storage.sqlite.rows import deliveries_by_id, select_in

_INSERT_DELIVERY = """
INSERT INTO deliveries (id, message_id, messenger, recipient, status, send_at_ms,
    due_at_ms, created_at_ms, updated_at_ms)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"""

_INSERT_DEDUPE = """
INSERT INTO dedupe (key, delivery_id, created_at_ms) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING"""

_INSERT_IDEMPOTENCY = """
INSERT INTO idempotency_keys (key, request_hash, response, created_at_ms)
VALUES (?, ?, ?, ?)"""

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


@dataclass(frozen=True, slots=True)
class Job:
    """One accept waiting for the next group commit."""

    message: NewMessage
    idempotency: IdempotencyClaim | None


def accept_batch(
    db: sqlite3.Connection, jobs: Sequence[Job]
) -> list[Accepted | IdempotencyMismatch]:
    """Accept several messages in the caller's transaction, a few statements in all.

    Each job gets its own answer: an earlier answer for a known Idempotency-Key,
    a mismatch for a key reused with another body, or a fresh Accepted. The
    caller must not put two jobs with one Idempotency-Key in a batch.
    """
    stored = _stored_answers(
        db, [j.idempotency.key for j in jobs if j.idempotency is not None]
    )
    answers: list[Accepted | IdempotencyMismatch | None] = [None] * len(jobs)
    fresh: list[int] = []
    for i, job in enumerate(jobs):
        claim = job.idempotency
        if claim is not None and claim.key in stored:
            answers[i] = _replay(claim, *stored[claim.key])
        else:
            fresh.append(i)
    accepted = _insert_messages(db, [jobs[i].message for i in fresh])
    remembered = []
    for i, made in zip(fresh, accepted, strict=True):
        answers[i] = made
        claim = jobs[i].idempotency
        if claim is not None:
            remembered.append(
                (claim.key, claim.request_hash, _snapshot(made), made.created_at_ms)
            )
    if remembered:
        db.executemany(_INSERT_IDEMPOTENCY, remembered)
    return [a for a in answers if a is not None]


def _stored_answers(
    db: sqlite3.Connection, keys: Sequence[str]
) -> dict[str, tuple[bytes, bytes]]:
    sql = (
        "SELECT key, request_hash, response FROM idempotency_keys "
        "WHERE key IN ({marks})"
    )
    return {r[0]: (r[1], r[2]) for r in select_in(db, sql, keys)}


def _replay(
    claim: IdempotencyClaim, request_hash: bytes, response: bytes
) -> Accepted | IdempotencyMismatch:
    if request_hash != claim.request_hash:
        return IdempotencyMismatch(claim.key.partition("\x00")[2] or claim.key)
    snap = msgspec.msgpack.decode(response, type=_Snapshot)
    deliveries = [AcceptedDelivery(d, dup) for d, dup in snap.deliveries]
    return Accepted(snap.message_id, snap.created_at_ms, deliveries, replayed=True)


def _snapshot(accepted: Accepted) -> bytes:
    snap = _Snapshot(
        accepted.message_id,
        accepted.created_at_ms,
        [(a.delivery, a.duplicate) for a in accepted.deliveries],
    )
    return msgspec.msgpack.encode(snap)


def _insert_messages(
    db: sqlite3.Connection, messages: Sequence[NewMessage]
) -> list[Accepted]:
    """Insert the messages, then claim each recipient's dedupe key for a delivery.

    The UNIQUE dedupe key decides, inside this transaction, which recipients
    get a new delivery: a key already taken (by an earlier message, or one
    earlier in this batch) names the delivery to answer with.
    """
    if not messages:
        return []
    db.executemany(
        "INSERT INTO messages (id, text, created_at_ms) VALUES (?, ?, ?)",
        [(m.id, m.text, m.created_at_ms) for m in messages],
    )
    digests = [text_digest(m.text) for m in messages]
    keys = [
        [dedupe_key(r, digest) for r in m.recipients]
        for m, digest in zip(messages, digests, strict=True)
    ]
    if migrating.has_legacy_dedupe(db):
        migrating.adopt_legacy_dedupe(
            db,
            [
                (k, r, digest)
                for m, digest, ks in zip(messages, digests, keys, strict=True)
                for r, k in zip(m.recipients, ks, strict=True)
            ],
        )
    proposed = [[new_id(m.created_at_ms) for _ in m.recipients] for m in messages]
    claims = [
        (k, p, m.created_at_ms)
        for m, ks, ps in zip(messages, keys, proposed, strict=True)
        for k, p in zip(ks, ps, strict=True)
    ]
    before = db.total_changes
    db.executemany(_INSERT_DEDUPE, claims)
    if db.total_changes - before == len(claims):
        # Every key was free, so each is held by the delivery proposed for it.
        owners = {k: _Owner(p, None, None) for k, p, _ in claims}
    else:
        owners = _owners(db, [k for ks in keys for k in ks])
    made = {
        p: _new_delivery(p, m, r)
        for m, ks, ps in zip(messages, keys, proposed, strict=True)
        for r, k, p in zip(m.recipients, ks, ps, strict=True)
        if owners[k].delivery_id == p
    }
    db.executemany(
        _INSERT_DELIVERY,
        [
            (
                d.id,
                d.message_id,
                d.messenger.value,
                d.recipient,
                d.send_at_ms,
                d.due_at_ms,
                d.created_at_ms,
                d.updated_at_ms,
            )
            for d in made.values()
        ],
    )
    db.executemany(
        _INSERT_LINK,
        [
            (m.id, i, owners[k].delivery_id, int(owners[k].delivery_id != p))
            for m, ks, ps in zip(messages, keys, proposed, strict=True)
            for i, (k, p) in enumerate(zip(ks, ps, strict=True))
        ],
    )
    older = {o.delivery_id for o in owners.values()} - made.keys()
    found = made | deliveries_by_id(db, list(older))
    return [
        Accepted(
            m.id,
            m.created_at_ms,
            [
                AcceptedDelivery(
                    found.get(owners[k].delivery_id) or _pruned(owners[k], m, i),
                    duplicate=owners[k].delivery_id != p,
                )
                for i, (k, p) in enumerate(zip(ks, ps, strict=True))
            ],
        )
        for m, ks, ps in zip(messages, keys, proposed, strict=True)
    ]


def _new_delivery(
    delivery_id: str, message: NewMessage, recipient: Recipient
) -> Delivery:
    send_at_ms = message.send_at_for(recipient)
    return Delivery(
        id=delivery_id,
        message_id=message.id,
        messenger=recipient.messenger,
        recipient=recipient.id,
        status=DeliveryStatus.PENDING,
        send_at_ms=send_at_ms,
        due_at_ms=send_at_ms,
        attempts_made=0,
        attempts_counted=0,
        last_error=None,
        created_at_ms=message.created_at_ms,
        updated_at_ms=message.created_at_ms,
        sent_at_ms=None,
    )


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


def _owners(db: sqlite3.Connection, keys: Sequence[bytes]) -> dict[bytes, _Owner]:
    sql = (
        "SELECT key, delivery_id, final_status, final_send_at_ms FROM dedupe "
        "WHERE key IN ({marks})"
    )
    return {r[0]: _Owner(r[1], r[2], r[3]) for r in select_in(db, sql, keys)}
