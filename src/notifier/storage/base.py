"""The narrow interface every outbox backend implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from notifier.domain.keys import ApiKey, NewKey, Scope
from notifier.domain.models import (
    AcceptedDelivery,
    Attempt,
    Claim,
    Delivery,
    DeliveryStatus,
    Messenger,
    NewMessage,
    Result,
)


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key and the hash of the request body sent with it."""

    key: str
    request_hash: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of accepting a message; ``replayed`` marks an idempotent repeat."""

    message_id: str
    created_at_ms: int
    deliveries: list[AcceptedDelivery]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored, with one entry per distinct recipient it named."""

    id: str
    text: str
    created_at_ms: int
    deliveries: list[AcceptedDelivery]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counts for /v1/stats and the metrics; times are epoch milliseconds."""

    counts: dict[tuple[Messenger, DeliveryStatus], int]
    due: dict[Messenger, int]
    scheduled: dict[Messenger, int]
    oldest_due_ms: int | None
    sent_last_minute: int


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows of each kind one retention batch removed."""

    deliveries: int
    messages: int
    dedupe_records: int
    idempotency_keys: int

    def _counts(self) -> tuple[int, int, int, int]:
        return (
            self.deliveries,
            self.messages,
            self.dedupe_records,
            self.idempotency_keys,
        )

    def __add__(self, other: Pruned) -> Pruned:
        """Return the two batches' counts added up, kind by kind."""
        mine, theirs = self._counts(), other._counts()
        return Pruned(*(a + b for a, b in zip(mine, theirs, strict=True)))

    @property
    def total(self) -> int:
        """Return the number of rows removed in all."""
        return sum(self._counts())

    @property
    def largest(self) -> int:
        """Return the count of the kind with the most rows removed."""
        return max(self._counts())


class KeyStore(Protocol):
    """Stores API keys: names, scopes and secret hashes, never secrets."""

    async def create(
        self, name: str, scopes: frozenset[Scope], new: NewKey, now_ms: int
    ) -> ApiKey:
        """Store a new key, or raise Conflict if the name is taken."""
        ...

    async def list_all(self) -> list[ApiKey]:
        """Return every key, revoked ones included, oldest first."""
        ...

    async def revoke(self, name: str, now_ms: int) -> ApiKey:
        """Revoke a key at once, or raise NotFound."""
        ...

    async def find(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        """Return the key with this id and its secret hash, if it exists."""
        ...

    async def touch(self, key_id: str, now_ms: int) -> None:
        """Record that the key was used."""
        ...


class Outbox(Protocol):
    """Stores messages and hands due deliveries to the dispatcher under leases."""

    @property
    def keys(self) -> KeyStore:
        """The API keys, kept in the same database."""
        ...

    async def accept(
        self, message: NewMessage, idempotency: IdempotencyClaim | None = None
    ) -> Accepted:
        """Store a message and one delivery per new recipient, all or nothing."""
        ...

    async def get_message(self, message_id: str) -> StoredMessage:
        """Return a message and its deliveries, or raise NotFound."""
        ...

    async def get_delivery(self, delivery_id: str) -> Delivery:
        """Return one delivery, or raise NotFound."""
        ...

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        """Return a delivery's attempts, oldest first."""
        ...

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None,
        messenger: Messenger | None,
        limit: int,
        before_id: str | None,
    ) -> list[Delivery]:
        """Return up to ``limit`` deliveries newest first, older than ``before_id``."""
        ...

    async def cancel(self, delivery_id: str, now_ms: int) -> Delivery:
        """Cancel a pending delivery, or raise Conflict with its current record."""
        ...

    async def retry(self, delivery_id: str, now_ms: int) -> Delivery:
        """Queue a failed delivery again with a fresh budget, or raise Conflict."""
        ...

    async def claim(
        self, limits: Mapping[Messenger, int], now_ms: int, lease_ms: int
    ) -> list[Claim]:
        """Lease up to ``limits[m]`` due deliveries per messenger; open attempts."""
        ...

    async def record(self, results: Sequence[Result], now_ms: int) -> list[Result]:
        """Write attempt results whose lease still holds; return those applied."""
        ...

    async def next_due_ms(self) -> int | None:
        """Return when the earliest unfinished delivery falls due, if any."""
        ...

    async def ping(self) -> None:
        """Run a trivial query; raise if the database does not answer."""
        ...

    async def data_version(self) -> int:
        """Return a number that changes whenever another connection commits."""
        ...

    async def stats(self, now_ms: int) -> OutboxStats:
        """Count deliveries by messenger and status, and what is waiting."""
        ...

    async def prune(
        self,
        *,
        finished_before_ms: int,
        dedupe_before_ms: int | None,
        idempotency_before_ms: int,
        limit: int,
    ) -> Pruned:
        """Remove one batch of old final deliveries; keep their dedupe records."""
        ...

    async def checkpoint(self) -> None:
        """Fold the write-ahead log into the database and shrink it."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
