"""Dedupe keys: what makes two deliveries the same delivery."""

from __future__ import annotations

import hashlib
import unicodedata

from notifier.domain.models import Recipient


def text_digest(text: str) -> bytes:
    """Return the SHA-256 of the text in Unicode NFC, so equal-looking texts match."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode()).digest()


def dedupe_key(recipient: Recipient, digest: bytes) -> bytes:
    """Return the key under which one text to one recipient may exist only once.

    The recipient must already be normalised; the parts are length-prefixed so
    that no two different (messenger, recipient) pairs can collide.
    """
    parts = (recipient.messenger.value.encode(), recipient.id.encode())
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(digest)
    return h.digest()
