"""Dedupe keys: equal-looking texts meet, anything else stays apart."""

from __future__ import annotations

import unicodedata

from hypothesis import assume, given
from hypothesis import strategies as st

from notifier.domain.dedupe import dedupe_key, text_digest
from notifier.domain.models import Messenger, Recipient

messengers = st.sampled_from(list(Messenger))
recipient_ids = st.text(min_size=1, max_size=40)
texts = st.text(max_size=200)


def key(messenger: Messenger, recipient_id: str, text: str) -> bytes:
    """Return the dedupe key of one text to one recipient."""
    return dedupe_key(Recipient(messenger, recipient_id), text_digest(text))


def test_text_digest_composed_and_decomposed_e_acute_match() -> None:
    composed = "Caf\u00e9"
    decomposed = "Cafe\u0301"

    digests = {text_digest(composed), text_digest(decomposed)}

    assert len(digests) == 1


@given(texts, messengers, recipient_ids)
def test_dedupe_key_nfc_and_nfd_forms_give_one_key(
    text: str, messenger: Messenger, recipient_id: str
) -> None:
    nfc = unicodedata.normalize("NFC", text)
    nfd = unicodedata.normalize("NFD", text)

    keys = {key(messenger, recipient_id, nfc), key(messenger, recipient_id, nfd)}

    assert len(keys) == 1


@given(texts, messengers, recipient_ids)
def test_dedupe_key_is_deterministic(
    text: str, messenger: Messenger, recipient_id: str
) -> None:
    first = key(messenger, recipient_id, text)

    second = key(messenger, recipient_id, text)

    assert first == second
    assert len(first) == 32


@given(texts, st.lists(messengers, min_size=2, max_size=2, unique=True), recipient_ids)
def test_dedupe_key_differs_by_messenger(
    text: str, pair: list[Messenger], recipient_id: str
) -> None:
    one, other = pair

    keys = {key(one, recipient_id, text), key(other, recipient_id, text)}

    assert len(keys) == 2


@given(texts, messengers, st.lists(recipient_ids, min_size=2, max_size=2, unique=True))
def test_dedupe_key_differs_by_recipient(
    text: str, messenger: Messenger, pair: list[str]
) -> None:
    one, other = pair

    keys = {key(messenger, one, text), key(messenger, other, text)}

    assert len(keys) == 2


@given(texts, texts, messengers, recipient_ids)
def test_dedupe_key_differs_by_text(
    one: str, other: str, messenger: Messenger, recipient_id: str
) -> None:
    assume(unicodedata.normalize("NFC", one) != unicodedata.normalize("NFC", other))

    keys = {key(messenger, recipient_id, one), key(messenger, recipient_id, other)}

    assert len(keys) == 2


@given(texts, st.lists(st.tuples(messengers, recipient_ids), min_size=2, max_size=20))
def test_dedupe_keys_of_one_text_share_a_prefix_and_sort_together(
    text: str, recipients: list[tuple[Messenger, str]]
) -> None:
    """One message's keys sit side by side in the index, not scattered over it."""
    mine = [key(m, r, text) for m, r in recipients]
    others = [key(m, r, text + "!") for m, r in recipients]

    assert {len(k) for k in mine} == {32}
    assert len({k[:16] for k in mine}) == 1
    ordered = sorted(mine + others)
    assert set(ordered[: len(mine)]) in (set(mine), set(others))
