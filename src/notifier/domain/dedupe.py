"""Dedupe keys: what makes two deliveries the same delivery."""

from __future__ import annotations

import hashlib
import unicodedata

from notifier.domain.models import Recipient

# How many bytes of the text's digest lead the key (see dedupe_key).
_TEXT_PART = 16


def text_digest(text: str) -> bytes:
    """Return the SHA-256 of the text in Unicode NFC, so equal-looking texts match."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode()).digest()


def dedupe_key(recipient: Recipient, digest: bytes) -> bytes:
    """Return the 32-byte key under which one text to one recipient may exist once.

    The key starts with the text's digest, so the keys of one message's
    recipients sit side by side in the dedupe index: a message to a thousand
    recipients writes a few pages of it instead of a thousand scattered ones.
    The rest is a hash of messenger, recipient and the whole digest, which
    alone tells any two different deliveries apart. The recipient must already
    be normalised.
    """
    return digest[:_TEXT_PART] + legacy_dedupe_key(recipient, digest)[_TEXT_PART:]


def legacy_dedupe_key(recipient: Recipient, digest: bytes) -> bytes:
    """Return the key notifier used before schema version 1: one hash of it all.

    The parts are length-prefixed so that no two different (messenger,
    recipient) pairs can collide. Databases made before version 1 keep their
    records under these keys until each is met again (see migrating).
    """
    parts = (recipient.messenger.value.encode(), recipient.id.encode())
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(digest)
    return h.digest()
