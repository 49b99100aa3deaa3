"""Per-messenger recipient ids: what each accepts and its one canonical form."""

from __future__ import annotations

import re

from notifier.domain.models import Messenger, Recipient

TEXT_LIMITS: dict[Messenger, int] = {
    Messenger.TELEGRAM: 4096,
    Messenger.WHATSAPP: 4096,
    Messenger.VIBER: 7000,
}

_TELEGRAM_CHAT = re.compile(r"-?[1-9][0-9]{0,15}")
_TELEGRAM_USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_PHONE_SEPARATORS = re.compile(r"[\s().\-]")
_TRUNK_ZERO = re.compile(r"^(\+[1-9][0-9]{0,2})\s+\(0\)")
_E164_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
_VIBER_ID = re.compile(r"[A-Za-z0-9+/=_\-]{1,64}")


class InvalidRecipient(ValueError):
    """Raised when a recipient id is not valid for its messenger."""


def normalise(messenger: Messenger, raw: str) -> Recipient:
    """Return the canonical recipient, or raise InvalidRecipient saying why."""
    value = raw.strip()
    if messenger is Messenger.TELEGRAM:
        return Recipient(messenger, _telegram(value))
    if messenger is Messenger.WHATSAPP:
        return Recipient(messenger, _whatsapp(value))
    return Recipient(messenger, _viber(value))


def _telegram(value: str) -> str:
    if _TELEGRAM_CHAT.fullmatch(value):
        return value
    if _TELEGRAM_USERNAME.fullmatch(value):
        # Telegram usernames are case-insensitive; one spelling per user.
        return value.lower()
    raise InvalidRecipient(
        "expected a Telegram chat id (an integer, negative for groups) "
        f"or an @username of 5 to 32 letters, digits or underscores, got {value!r}"
    )


def _whatsapp(value: str) -> str:
    # "+44 (0) 7700 900123": the bracketed 0 is the domestic trunk prefix, which
    # is not dialled from abroad and is not part of the E.164 number.
    digits = _PHONE_SEPARATORS.sub("", _TRUNK_ZERO.sub(r"\1", value))
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not _E164_DIGITS.fullmatch(digits):
        raise InvalidRecipient(
            "expected a phone number in international form with 7 to 15 digits "
            f"and its country code, such as '+7 999 123-45-67', got {value!r}"
        )
    return "+" + digits


def _viber(value: str) -> str:
    if not _VIBER_ID.fullmatch(value):
        raise InvalidRecipient(
            "expected a Viber user id of 1 to 64 letters, digits or '+/=_-', "
            f"got {value!r}"
        )
    return value
