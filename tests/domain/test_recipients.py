"""Per-messenger recipient normalisation and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.domain.models import Messenger, Recipient
from notifier.domain.recipients import InvalidRecipient, normalise

TELEGRAM = Messenger.TELEGRAM
WHATSAPP = Messenger.WHATSAPP
VIBER = Messenger.VIBER


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456789", "123456789"),  # a private chat
        ("-1001234567890", "-1001234567890"),  # a supergroup is negative
        ("  42 ", "42"),  # surrounding blanks are dropped
        ("1234567890123456", "1234567890123456"),  # 16 digits, the longest
        ("@durov", "@durov"),  # a username of five characters
        ("@Durov_Bot", "@durov_bot"),  # usernames fold to lower case
        ("@" + "a" * 32, "@" + "a" * 32),  # a username of 32 characters
    ],
)
def test_normalise_telegram_accepts(raw: str, expected: str) -> None:
    recipient = normalise(TELEGRAM, raw)

    assert recipient == Recipient(TELEGRAM, expected)


@pytest.mark.parametrize(
    "raw",
    [
        "",  # nothing
        "0",  # no chat has id zero
        "007",  # leading zeros would make a second spelling of 7
        "-0",  # minus zero
        "-007",  # leading zeros in a group id
        "+123",  # a plus sign is not part of a chat id
        "12345678901234567",  # 17 digits, beyond any chat id
        "12 34",  # blanks inside
        "١٢٣",  # Arabic-Indic digits are not ASCII digits
        "durov",  # a username without its @
        "@1durov",  # a username starts with a letter
        "@du-rov",  # a hyphen is not allowed
        "@" + "a" * 33,  # a username of 33 characters
        "@",  # an @ alone
    ],
)
def test_normalise_telegram_rejects(raw: str) -> None:
    with pytest.raises(InvalidRecipient, match="Telegram chat id"):
        normalise(TELEGRAM, raw)


def test_normalise_telegram_rejects_four_character_username() -> None:
    with pytest.raises(InvalidRecipient):
        normalise(TELEGRAM, "@abcd")


@pytest.mark.parametrize(
    "raw",
    [
        "+7 999 123-45-67",  # as people write it
        "+7 (999) 123.45.67",  # brackets and dots
        "79991234567",  # digits alone, with the country code
        "0079991234567",  # the international call prefix 00
        "  +79991234567\t",  # surrounding blanks
        "+79991234567",  # already E.164
    ],
)
def test_normalise_whatsapp_spellings_are_one_recipient(raw: str) -> None:
    recipient = normalise(WHATSAPP, raw)

    assert recipient == Recipient(WHATSAPP, "+79991234567")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1234567", "+1234567"),  # 7 digits, the shortest
        ("+123456789012345", "+123456789012345"),  # 15 digits, the E.164 maximum
    ],
)
def test_normalise_whatsapp_length_bounds(raw: str, expected: str) -> None:
    recipient = normalise(WHATSAPP, raw)

    assert recipient.id == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",  # nothing
        "+",  # a plus sign alone
        "+123456",  # 6 digits, too short
        "+1234567890123456",  # 16 digits, too long for E.164
        "+7999ABC4567",  # letters
        "+0123456789",  # no country code starts with 0
        "++79991234567",  # two plus signs
        "7+9991234567",  # a plus sign inside
        "+7_999_123_45_67",  # underscores are not separators
        "+٧٩٩٩١٢٣٤٥٦٧",  # Arabic-Indic digits
    ],
)
def test_normalise_whatsapp_rejects(raw: str) -> None:
    with pytest.raises(InvalidRecipient, match="international form"):
        normalise(WHATSAPP, raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01234567890A=", "01234567890A="),  # the usual base64-like shape
        ("AbC", "AbC"),  # case is kept: Viber ids are case-sensitive
        (" user-1_x+/ ", "user-1_x+/"),  # surrounding blanks are dropped
        ("a" * 64, "a" * 64),  # 64 characters, the longest
    ],
)
def test_normalise_viber_accepts(raw: str, expected: str) -> None:
    recipient = normalise(VIBER, raw)

    assert recipient == Recipient(VIBER, expected)


@pytest.mark.parametrize(
    "raw",
    [
        "",  # nothing
        "a" * 65,  # 65 characters
        "ab cd",  # a blank inside
        "ab.cd",  # a dot
        "абв",  # Cyrillic letters
    ],
)
def test_normalise_viber_rejects(raw: str) -> None:
    with pytest.raises(InvalidRecipient, match="Viber user id"):
        normalise(VIBER, raw)


def test_normalise_error_quotes_the_value() -> None:
    with pytest.raises(InvalidRecipient) as caught:
        normalise(WHATSAPP, "call me")

    assert "'call me'" in str(caught.value)


_telegram_ids = st.one_of(
    st.integers(min_value=1, max_value=10**16 - 1).map(str),
    st.integers(min_value=1, max_value=10**15 - 1).map(lambda n: f"-{n}"),
    st.from_regex(r"@[A-Za-z][A-Za-z0-9_]{4,31}", fullmatch=True),
)


@st.composite
def _phone_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """Return E.164 digits and one accepted spelling: prefix, separators, blanks."""
    digits = draw(st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True))
    prefix = draw(st.sampled_from(["+", "00", ""]))
    separators = st.sampled_from(["", "", " ", "-", ".", "(", ")"])
    spelled = "".join(digit + draw(separators) for digit in digits)
    return digits, prefix + spelled


_viber_ids = st.from_regex(r"[A-Za-z0-9+/=_\-]{1,64}", fullmatch=True)


@pytest.mark.parametrize(
    ("messenger", "ids"),
    [
        (TELEGRAM, _telegram_ids),
        (WHATSAPP, _phone_spellings().map(lambda pair: pair[1])),
        (VIBER, _viber_ids),
    ],
)
@given(data=st.data())
def test_normalise_is_idempotent(
    messenger: Messenger, ids: st.SearchStrategy[str], data: st.DataObject
) -> None:
    raw = data.draw(ids)
    once = normalise(messenger, raw)

    twice = normalise(messenger, once.id)

    assert twice == once


@given(_phone_spellings())
def test_normalise_whatsapp_every_spelling_gives_e164(pair: tuple[str, str]) -> None:
    digits, spelled = pair

    recipient = normalise(WHATSAPP, spelled)

    assert recipient.id == "+" + digits


def test_normalise_whatsapp_drops_the_bracketed_trunk_zero() -> None:
    """A UK number written '+44 (0) 7700 900123' is +447700900123, not +4407700..."""
    recipient = normalise(WHATSAPP, "+44 (0) 7700 900123")

    assert recipient.id == "+447700900123"
