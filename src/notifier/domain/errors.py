"""The exception tree of notifier; every error it raises on purpose is one of these."""

from __future__ import annotations

from dataclasses import dataclass


class NotifierError(Exception):
    """Root of every error notifier raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field at fault and the reason, as a full sentence."""

    field: str
    reason: str


class ValidationFailed(NotifierError):
    """Raised when a request or a config breaks a rule; lists every field at fault."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))


class NotFound(NotifierError):
    """Raised when a message, delivery or messenger named by id does not exist."""

    def __init__(self, kind: str, ident: str, label: str = "id") -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"No {kind} has the {label} {ident!r}.")


class Conflict(NotifierError):
    """Raised when a state change is asked of a record in the wrong state."""

    def __init__(self, detail: str, current: object) -> None:
        self.current = current
        super().__init__(detail)


class IdempotencyMismatch(NotifierError):
    """Raised when an Idempotency-Key is reused with a different request body."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"The Idempotency-Key {key!r} was first used with a different body; "
            "use a new key for a new request."
        )


class ConfigError(NotifierError):
    """Raised when the config file or an environment override is invalid."""


class StoreError(NotifierError):
    """Raised when a database file cannot be used, such as one from a newer notifier."""
