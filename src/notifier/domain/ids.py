"""Time-ordered identifiers for messages and deliveries."""

from __future__ import annotations

import os
import random
import threading
import time

_RAND_BITS = 74  # 12 bits of rand_a and 62 of rand_b, around version and variant
# A millisecond's first id starts in the lower half of the random space and
# each next one steps up by 1 to 2**24, so a millisecond has room for about
# 2**49 ids before the counter would run out (it then starts over at random).
_SEED_BITS = _RAND_BITS - 1
_STEP_BITS = 24


def _uuid7(ms: int, rand: int) -> str:
    rand_a, rand_b = rand >> 62, rand & (1 << 62) - 1
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64
    value |= 0x2 << 62 | rand_b  # version 7, RFC 9562 variant
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, in a third the time
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Sequence:
    """Ids of one millisecond in increasing order (RFC 9562, 6.2, method 2).

    Ids of one fan-out request share a millisecond; in creation order they
    land next to each other in every index keyed by id, instead of all over it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = -1
        self._rand = 0
        # Ids are names, not secrets: a generator seeded from os.urandom makes
        # each millisecond's start and steps without a system call per id (the
        # call, once per request, cost ingest a twentieth of its loop time).
        self._random = random.Random()
        os.register_at_fork(after_in_child=self._random.seed)

    def next(self, ms: int) -> str:
        """Return an id for ``ms`` above every earlier id made for the same ``ms``."""
        with self._lock:
            rand = self._rand + 1 + self._random.getrandbits(_STEP_BITS)
            if ms != self._ms or rand >> _RAND_BITS:
                rand = self._random.getrandbits(_SEED_BITS)
            self._ms, self._rand = ms, rand
        return _uuid7(ms, rand)


_sequence = _Sequence()


def id_floor(ms: int) -> str:
    """Return an id that sorts before every id made at or after ``ms``."""
    return _uuid7(ms, 0)


def new_id(now_ms: int | None = None) -> str:
    """Return a UUIDv7 string: 48 bits of Unix milliseconds, then a counter.

    Ids made later sort later, to the millisecond, and so do ids made one after
    another in the same millisecond; listings page newest-first by id alone.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return _sequence.next(ms)
