"""Turn a decoded send request into a NewMessage, or list every rule it breaks."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime

from notifier.domain.errors import FieldError, ValidationFailed
from notifier.domain.ids import new_id
from notifier.domain.models import Messenger, NewMessage, Recipient
from notifier.domain.recipients import TEXT_LIMITS, InvalidRecipient, normalise

RawRecipient = tuple[str, str] | tuple[str, str, datetime | None]


def build_message(
    text: str,
    recipients: Sequence[RawRecipient],
    send_at: datetime | None,
    *,
    now_ms: int,
    max_ahead_ms: int,
    max_recipients: int,
) -> NewMessage:
    """Validate a request and return the message to store.

    ``recipients`` are (messenger, id) pairs as the client sent them, or
    (messenger, id, send_at) where one recipient has a time of its own. Repeats
    of one recipient, after normalisation, collapse into the first.
    """
    errors = _text_errors(text)
    unique = _normalise_all(recipients, max_recipients, now_ms, max_ahead_ms, errors)
    send_at_ms = _send_at_ms(send_at, now_ms, max_ahead_ms, errors, "send_at")
    errors += _length_errors(text, list(unique))
    overrides = {r: at_ms for r, at_ms in unique.items() if at_ms is not None}
    if errors:
        raise ValidationFailed(errors)
    return NewMessage(
        id=new_id(now_ms),
        text=text,
        recipients=tuple(unique),
        send_at_ms=send_at_ms,
        created_at_ms=now_ms,
        send_at_overrides=overrides,
    )


# Categories that draw nothing: spaces, controls, format marks (zero-width
# space, direction marks, BOM) and combining marks with nothing to combine with.
_INVISIBLE = {"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me"}
# Letters that render as blanks.
_BLANK_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def _is_visible(ch: str) -> bool:
    return unicodedata.category(ch) not in _INVISIBLE and ch not in _BLANK_LETTERS


def _text_errors(text: str) -> list[FieldError]:
    if not any(_is_visible(ch) for ch in text):
        return [FieldError("text", "must contain at least one visible character")]
    if "\x00" in text:
        return [FieldError("text", "must not contain NUL characters")]
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return [FieldError("text", "must not contain lone UTF-16 surrogates")]
    return []


def _normalise_all(
    recipients: Sequence[RawRecipient],
    max_recipients: int,
    now_ms: int,
    max_ahead_ms: int,
    errors: list[FieldError],
) -> dict[Recipient, int | None]:
    """Return each distinct recipient with its own send time, if it has one."""
    if not recipients:
        errors.append(FieldError("recipients", "must list at least one recipient"))
        return {}
    if len(recipients) > max_recipients:
        errors.append(
            FieldError(
                "recipients",
                f"must list at most {max_recipients} recipients, got {len(recipients)}",
            )
        )
        return {}
    unique: dict[Recipient, int | None] = {}
    for i, (messenger, raw, *at) in enumerate(recipients):
        # Each entry's own time is checked, even on a repeat that will collapse.
        at_ms = None
        if at and at[0] is not None:
            field = f"recipients[{i}].send_at"
            at_ms = _send_at_ms(at[0], now_ms, max_ahead_ms, errors, field)
        try:
            recipient = normalise(Messenger(messenger), raw)
        except ValueError as exc:
            reason = _recipient_reason(exc, messenger)
            errors.append(FieldError(f"recipients[{i}]", reason))
            continue
        unique.setdefault(recipient, at_ms)
    return unique


def _recipient_reason(exc: ValueError, messenger: str) -> str:
    if isinstance(exc, InvalidRecipient):
        return str(exc)
    names = ", ".join(repr(m.value) for m in Messenger)
    return f"expected messenger to be one of {names}, got {messenger!r}"


def _length_errors(text: str, recipients: list[Recipient]) -> list[FieldError]:
    # Counted in NFC, the form texts are compared in: a decomposed "é" is one.
    length = len(unicodedata.normalize("NFC", text))
    errors = []
    for messenger in sorted({r.messenger for r in recipients}):
        limit = TEXT_LIMITS[messenger]
        if length > limit:
            errors.append(
                FieldError(
                    "text",
                    f"is {length} characters long; {messenger.value} "
                    f"takes at most {limit}",
                )
            )
    return errors


def _send_at_ms(
    send_at: datetime | None,
    now_ms: int,
    max_ahead_ms: int,
    errors: list[FieldError],
    field: str,
) -> int:
    if send_at is None:
        return now_ms
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        errors.append(
            FieldError(
                field,
                "must carry a UTC offset, such as '2026-12-24T18:00:00+01:00' "
                f"or '...Z', got the naive time {send_at.isoformat()!r}",
            )
        )
        return now_ms
    at_ms = round(send_at.timestamp() * 1000)
    if at_ms - now_ms > max_ahead_ms:
        days = max_ahead_ms / 86_400_000
        errors.append(
            FieldError(
                field,
                f"must be at most {days:g} days ahead, got {send_at.isoformat()!r}",
            )
        )
    # A time in the past means "now": the client asked for it already.
    return max(at_ms, now_ms)
