"""Time-ordered identifiers for messages and deliveries."""

from __future__ import annotations

import os
import time
import uuid


def _uuid7(ms: int, rand: int) -> str:
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def id_floor(ms: int) -> str:
    """Return an id that sorts before every id made at or after ``ms``."""
    return _uuid7(ms, 0)


def new_id(now_ms: int | None = None) -> str:
    """Return a UUIDv7 string: 48 bits of Unix milliseconds, then random bits.

    Ids made later sort later (to the millisecond), which lets listings page
    newest-first by id alone.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return _uuid7(ms, int.from_bytes(os.urandom(10), "big"))
