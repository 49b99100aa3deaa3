"""What a sender promises, and the errors that tell the dispatcher what went wrong."""

from __future__ import annotations

from typing import Protocol

from notifier.domain.errors import NotifierError


class SendError(NotifierError):
    """Raised by a sender when a messenger did not take the text."""


class TransientError(SendError):
    """Raised when the messenger failed in a way that may pass; retry with backoff."""


class RateLimited(SendError):
    """Raised when the messenger asks to slow down; retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(SendError):
    """Raised when retrying can never help, such as a blocked or unknown recipient."""


class Sender(Protocol):
    """Hands one text to one recipient of one messenger."""

    async def send(
        self, delivery_id: str, recipient: str, text: str, attempt: int
    ) -> None:
        """Deliver the text, or raise a SendError subclass.

        ``delivery_id`` is an idempotency key: sending the same id twice must
        leave one message with the recipient.
        """
        ...
