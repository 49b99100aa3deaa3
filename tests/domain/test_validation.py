"""build_message: every rule a send request can break, and what it returns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from notifier.domain.errors import FieldError, ValidationFailed
from notifier.domain.models import Messenger, NewMessage, Recipient
from notifier.domain.validation import RawRecipient, build_message

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
YEAR_MS = 365 * 86_400_000
ONE: list[RawRecipient] = [("telegram", "123456789")]


def build(
    text: str = "Your code is 1234",
    recipients: Sequence[RawRecipient] = ONE,
    send_at: datetime | None = None,
    *,
    max_recipients: int = 100,
) -> NewMessage:
    """Call build_message at NOW with a one-year horizon."""
    return build_message(
        text,
        recipients,
        send_at,
        now_ms=NOW_MS,
        max_ahead_ms=YEAR_MS,
        max_recipients=max_recipients,
    )


def errors_of(**request: object) -> list[FieldError]:
    """Return the errors build() raises for the request; fail if it accepts it."""
    with pytest.raises(ValidationFailed) as caught:
        build(**request)  # type: ignore[arg-type]
    return caught.value.errors


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least one visible character"),  # empty
        (" \n\t ", "at least one visible character"),  # blanks only
        ("a\x00b", "NUL"),  # a NUL byte would cut the text in C clients
        ("a\ud800b", "surrogate"),  # a lone surrogate cannot be encoded
        ("\udfff", "surrogate"),  # a lone low surrogate
    ],
)
def test_build_message_rejects_bad_text(text: str, reason: str) -> None:
    errors = errors_of(text=text)

    assert [e.field for e in errors] == ["text"]
    assert reason in errors[0].reason


@pytest.mark.parametrize(
    ("messenger", "recipient", "limit"),
    [
        ("telegram", "123456789", 4096),  # Telegram's limit
        ("whatsapp", "+79991234567", 4096),  # WhatsApp's limit
        ("viber", "user-1", 7000),  # Viber takes longer texts
    ],
)
def test_build_message_accepts_text_at_the_limit(
    messenger: str, recipient: str, limit: int
) -> None:
    message = build("x" * limit, [(messenger, recipient)])

    assert len(message.text) == limit


@pytest.mark.parametrize(
    ("messenger", "recipient", "limit"),
    [
        ("telegram", "123456789", 4096),  # Telegram's limit
        ("whatsapp", "+79991234567", 4096),  # WhatsApp's limit
        ("viber", "user-1", 7000),  # Viber takes longer texts
    ],
)
def test_build_message_rejects_text_over_the_limit(
    messenger: str, recipient: str, limit: int
) -> None:
    errors = errors_of(text="x" * (limit + 1), recipients=[(messenger, recipient)])

    assert [e.field for e in errors] == ["text"]
    assert messenger in errors[0].reason
    assert str(limit) in errors[0].reason


def test_build_message_length_error_names_only_the_messengers_over() -> None:
    recipients = [("viber", "user-1"), ("telegram", "1"), ("whatsapp", "+15551234")]

    errors = errors_of(text="x" * 5000, recipients=recipients)

    assert len(errors) == 2
    assert "telegram" in errors[0].reason
    assert "whatsapp" in errors[1].reason


def test_build_message_rejects_no_recipients() -> None:
    errors = errors_of(recipients=[])

    assert errors == [FieldError("recipients", "must list at least one recipient")]


def test_build_message_rejects_too_many_recipients() -> None:
    recipients = [("telegram", str(n)) for n in range(1, 4)]

    errors = errors_of(recipients=recipients, max_recipients=2)

    assert [e.field for e in errors] == ["recipients"]
    assert "at most 2" in errors[0].reason
    assert "got 3" in errors[0].reason


def test_build_message_accepts_exactly_max_recipients() -> None:
    recipients = [("telegram", str(n)) for n in range(1, 3)]

    message = build(recipients=recipients, max_recipients=2)

    assert len(message.recipients) == 2


def test_build_message_rejects_unknown_messenger() -> None:
    errors = errors_of(recipients=[("telegram", "1"), ("sms", "+79991234567")])

    assert [e.field for e in errors] == ["recipients[1]"]
    assert "'telegram', 'whatsapp', 'viber'" in errors[0].reason


def test_build_message_rejects_invalid_recipient_with_its_index() -> None:
    errors = errors_of(recipients=[("whatsapp", "+79991234567"), ("whatsapp", "12")])

    assert [e.field for e in errors] == ["recipients[1]"]
    assert "'12'" in errors[0].reason


def test_build_message_rejects_naive_send_at() -> None:
    naive = datetime(2026, 3, 2, 9, 0)

    errors = errors_of(send_at=naive)

    assert [e.field for e in errors] == ["send_at"]
    assert "offset" in errors[0].reason
    assert "2026-03-02T09:00:00" in errors[0].reason


def test_build_message_rejects_send_at_beyond_the_horizon() -> None:
    too_far = NOW + timedelta(milliseconds=YEAR_MS + 1)

    errors = errors_of(send_at=too_far)

    assert [e.field for e in errors] == ["send_at"]
    assert "365 days" in errors[0].reason


def test_build_message_accepts_send_at_on_the_horizon() -> None:
    horizon = NOW + timedelta(milliseconds=YEAR_MS)

    message = build(send_at=horizon)

    assert message.send_at_ms == NOW_MS + YEAR_MS


def test_build_message_reports_every_error_together() -> None:
    recipients = [("telegram", "1"), ("pigeon", "x"), ("viber", "")]

    errors = errors_of(text="", recipients=recipients, send_at=datetime(2026, 1, 1))

    fields = [e.field for e in errors]
    assert fields == ["text", "recipients[1]", "recipients[2]", "send_at"]


def test_build_message_errors_are_in_the_exception_text() -> None:
    with pytest.raises(ValidationFailed) as caught:
        build(text="", recipients=[])

    assert "text: " in str(caught.value)
    assert "recipients: " in str(caught.value)


@pytest.mark.parametrize(
    "send_at",
    [
        NOW - timedelta(days=3),  # days ago
        NOW - timedelta(milliseconds=1),  # just now
        NOW,  # exactly now
        datetime(1970, 1, 1, tzinfo=UTC),  # the epoch
    ],
)
def test_build_message_past_send_at_means_now(send_at: datetime) -> None:
    message = build(send_at=send_at)

    assert message.send_at_ms == NOW_MS


def test_build_message_without_send_at_is_now() -> None:
    message = build(send_at=None)

    assert message.send_at_ms == NOW_MS
    assert message.created_at_ms == NOW_MS


def test_build_message_send_at_offset_is_converted_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    send_at = datetime(2026, 3, 1, 18, 0, tzinfo=moscow)

    message = build(send_at=send_at)

    assert message.send_at_ms == NOW_MS + 3 * 3_600_000


def test_build_message_id_is_a_uuid7_of_now() -> None:
    message = build()

    ident = uuid.UUID(message.id)
    assert ident.version == 7
    assert ident.int >> 80 == NOW_MS


def test_build_message_keeps_the_text_unchanged() -> None:
    text = "  Caf\u0065\u0301 at 5  "

    message = build(text=text)

    assert message.text == text


def test_build_message_collapses_duplicates_after_normalisation() -> None:
    recipients = [
        ("whatsapp", "+7 999 123-45-67"),
        ("telegram", "@Durov"),
        ("whatsapp", "0079991234567"),
        ("telegram", "@durov"),
        ("whatsapp", "79991234567"),
    ]

    message = build(recipients=recipients)

    assert message.recipients == (
        Recipient(Messenger.WHATSAPP, "+79991234567"),
        Recipient(Messenger.TELEGRAM, "@durov"),
    )


def test_build_message_keeps_request_order() -> None:
    recipients = [
        ("viber", "b"),
        ("telegram", "7"),
        ("viber", "a"),
        ("viber", "b"),
        ("whatsapp", "+15551234"),
    ]

    message = build(recipients=recipients)

    assert [(r.messenger.value, r.id) for r in message.recipients] == [
        ("viber", "b"),
        ("telegram", "7"),
        ("viber", "a"),
        ("whatsapp", "+15551234"),
    ]


def test_build_message_same_id_on_two_messengers_is_two_recipients() -> None:
    recipients = [("telegram", "12345678"), ("viber", "12345678")]

    message = build(recipients=recipients)

    assert len(message.recipients) == 2


def test_build_message_recipient_send_at_overrides_the_message_time() -> None:
    later = NOW + timedelta(hours=1)
    recipients: list[RawRecipient] = [
        ("telegram", "1"),
        ("viber", "u", later),
        ("whatsapp", "+15551234", None),
    ]

    message = build(recipients=recipients, send_at=NOW + timedelta(minutes=5))

    times = [message.send_at_for(r) for r in message.recipients]
    assert times == [NOW_MS + 300_000, NOW_MS + 3_600_000, NOW_MS + 300_000]


def test_build_message_past_recipient_send_at_means_now() -> None:
    recipients: list[RawRecipient] = [("viber", "u", NOW - timedelta(days=1))]

    message = build(recipients=recipients)

    assert message.send_at_for(message.recipients[0]) == NOW_MS


@pytest.mark.parametrize(
    ("send_at", "reason"),
    [
        (datetime(2026, 3, 2, 9, 0), "offset"),  # naive
        (NOW + timedelta(days=366), "365 days"),  # beyond the horizon
    ],
)
def test_build_message_rejects_a_bad_recipient_send_at(
    send_at: datetime, reason: str
) -> None:
    recipients: list[RawRecipient] = [("telegram", "1"), ("viber", "u", send_at)]

    errors = errors_of(recipients=recipients)

    assert [e.field for e in errors] == ["recipients[1].send_at"]
    assert reason in errors[0].reason


def test_build_message_duplicate_keeps_the_first_entry_time() -> None:
    first = NOW + timedelta(hours=1)
    recipients: list[RawRecipient] = [
        ("telegram", "@Durov", first),
        ("telegram", "@durov", NOW + timedelta(hours=2)),
    ]

    message = build(recipients=recipients)

    assert len(message.recipients) == 1
    assert message.send_at_for(message.recipients[0]) == NOW_MS + 3_600_000


def test_build_message_rejects_a_naive_send_at_on_a_repeated_recipient() -> None:
    recipients: list[RawRecipient] = [
        ("telegram", "1"),
        ("telegram", "1", datetime(2026, 3, 2, 9, 0)),
    ]

    errors = errors_of(recipients=recipients)

    assert [e.field for e in errors] == ["recipients[1].send_at"]


@pytest.mark.parametrize(
    "text",
    [
        "\u200b",  # zero-width space
        "\u200f\u200e",  # direction marks
        "\ufeff",  # byte-order mark
        "\u0301",  # a combining accent with nothing to sit on
        "\u3164",  # Hangul filler
    ],
)
def test_build_message_rejects_text_that_draws_nothing(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        build(text=text)

    assert [e.field for e in caught.value.errors] == ["text"]


def test_build_message_counts_length_after_nfc() -> None:
    decomposed = "e\u0301" * 4000  # 8000 code points, 4000 characters in NFC

    message = build(text=decomposed)

    assert message.text == decomposed
