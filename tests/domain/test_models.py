"""Delivery statuses and time-ordered ids."""

from __future__ import annotations

import itertools
import os
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.domain.ids import _Sequence, new_id
from notifier.domain.models import DeliveryStatus

MAX_MS = 2**48 - 1


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (DeliveryStatus.PENDING, False),  # waits for its time or a sender
        (DeliveryStatus.SENDING, False),  # under a lease, may come back
        (DeliveryStatus.SENT, True),  # done
        (DeliveryStatus.FAILED, True),  # only an explicit retry revives it
        (DeliveryStatus.CANCELLED, True),  # the client withdrew it
    ],
)
def test_delivery_status_is_terminal(status: DeliveryStatus, terminal: bool) -> None:
    assert status.is_terminal is terminal


@given(st.integers(min_value=0, max_value=MAX_MS))
def test_new_id_is_a_uuid7_carrying_its_time(now_ms: int) -> None:
    ident = new_id(now_ms)

    parsed = uuid.UUID(ident)
    assert str(parsed) == ident
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == now_ms


def test_new_id_defaults_to_the_current_time() -> None:
    before_ms = time.time_ns() // 1_000_000

    ident = new_id()

    after_ms = time.time_ns() // 1_000_000
    assert before_ms <= uuid.UUID(ident).int >> 80 <= after_ms


@given(
    st.integers(min_value=0, max_value=MAX_MS - 1),
    st.integers(min_value=1, max_value=MAX_MS),
)
def test_new_id_later_ids_sort_later(earlier_ms: int, gap_ms: int) -> None:
    later_ms = min(earlier_ms + gap_ms, MAX_MS)

    earlier, later = new_id(earlier_ms), new_id(later_ms)

    assert earlier < later


def test_new_id_is_unique_within_one_millisecond() -> None:
    ids = {new_id(1_700_000_000_000) for _ in range(1000)}

    assert len(ids) == 1000


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=2, max_size=50))
def test_new_id_sorts_in_creation_order_within_and_across_milliseconds(
    steps_ms: list[int],
) -> None:
    """Index locality: ids made one after another never sort backwards."""
    times_ms = list(itertools.accumulate(steps_ms, initial=1_700_000_000_000))

    ids = [new_id(ms) for ms in times_ms]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_id_sequence_starts_over_at_random_when_a_millisecond_runs_out() -> None:
    sequence = _Sequence()
    sequence.next(5)
    sequence._rand = (1 << 74) - 1  # the counter's last value

    ident = sequence.next(5)

    assert uuid.UUID(ident).int >> 80 == 5
    assert uuid.UUID(ident).version == 7


def test_id_sequence_of_a_forked_child_differs_from_its_parents() -> None:
    sequence = _Sequence()
    sequence.next(5)
    reader, writer = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child: one id, then out without pytest's clean-up
        os.write(writer, sequence.next(5).encode())
        os._exit(0)
    os.close(writer)
    ours = sequence.next(5)
    with os.fdopen(reader, "rb") as pipe:
        theirs = pipe.read().decode()
    os.waitpid(pid, 0)

    assert uuid.UUID(theirs).int >> 80 == 5
    assert theirs != ours
