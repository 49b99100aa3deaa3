"""The retry policy: backoff bounds and what follows each outcome."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.domain.models import DeliveryStatus, Outcome
from notifier.domain.retry import Decision, RetryPolicy, backoff_s, decide

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=1.0, backoff_max_s=300.0)

seconds = st.floats(min_value=0.001, max_value=1e6)
rngs = st.integers(min_value=0, max_value=2**32).map(random.Random)


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    """A valid policy: base at most max, as config enforces."""
    base, top = sorted((draw(seconds), draw(seconds)))
    attempts = draw(st.integers(min_value=1, max_value=20))
    return RetryPolicy(max_attempts=attempts, backoff_base_s=base, backoff_max_s=top)


@given(policies(), st.integers(min_value=1, max_value=200), rngs)
def test_backoff_s_lies_in_the_equal_jitter_window(
    policy: RetryPolicy, failures: int, rng: random.Random
) -> None:
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2.0 ** (failures - 1))

    wait = backoff_s(policy, failures, rng)

    assert ceiling / 2 <= wait <= ceiling


@given(policies(), st.integers(min_value=1, max_value=100_000), rngs)
def test_backoff_s_never_exceeds_backoff_max_s(
    policy: RetryPolicy, failures: int, rng: random.Random
) -> None:
    wait = backoff_s(policy, failures, rng)

    assert 0 < wait <= policy.backoff_max_s


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        (1, 0.5, 1.0),  # the first retry waits about base
        (2, 1.0, 2.0),  # then it doubles
        (5, 8.0, 16.0),  # and keeps doubling
        (10, 150.0, 300.0),  # 512 s is capped at backoff_max_s
        (1000, 150.0, 300.0),  # no overflow far past the cap
    ],
)
def test_backoff_s_doubles_up_to_the_cap(
    failures: int, low: float, high: float
) -> None:
    rng = random.Random(7)

    waits = [backoff_s(POLICY, failures, rng) for _ in range(50)]

    assert all(low <= wait <= high for wait in waits)


@pytest.mark.parametrize(
    ("outcome", "counted_before", "status", "counted"),
    [
        (Outcome.SENT, 0, DeliveryStatus.SENT, True),  # sent -> sent
        (Outcome.SENT, 2, DeliveryStatus.SENT, True),  # sent on the last attempt
        (Outcome.PERMANENT_ERROR, 0, DeliveryStatus.FAILED, True),  # no retry
        (Outcome.TRANSIENT_ERROR, 0, DeliveryStatus.PENDING, True),  # budget left
        (Outcome.TRANSIENT_ERROR, 1, DeliveryStatus.PENDING, True),  # one left
        (Outcome.TRANSIENT_ERROR, 2, DeliveryStatus.FAILED, True),  # the last one
        (Outcome.RATE_LIMITED, 0, DeliveryStatus.PENDING, False),  # not counted
        (Outcome.RATE_LIMITED, 2, DeliveryStatus.PENDING, False),  # even when spent
        (Outcome.RELEASED, 1, DeliveryStatus.PENDING, False),  # shutdown gave it back
        (Outcome.LEASE_EXPIRED, 0, DeliveryStatus.PENDING, True),  # a crash counts
        (Outcome.LEASE_EXPIRED, 2, DeliveryStatus.FAILED, True),  # and can spend it
    ],
)
def test_decide_state_machine(
    outcome: Outcome, counted_before: int, status: DeliveryStatus, counted: bool
) -> None:
    decision = decide(POLICY, outcome, counted_before, random.Random(1))

    assert (decision.status, decision.counted) == (status, counted)


@pytest.mark.parametrize(
    "outcome", [Outcome.SENT, Outcome.PERMANENT_ERROR, Outcome.TRANSIENT_ERROR]
)
def test_decide_terminal_decisions_carry_no_delay(outcome: Outcome) -> None:
    decision = decide(POLICY, outcome, POLICY.max_attempts - 1, random.Random(1))

    assert decision.status.is_terminal
    assert decision.delay_s is None


def test_decide_transient_waits_the_backoff_of_its_attempt() -> None:
    decision = decide(POLICY, Outcome.TRANSIENT_ERROR, 1, random.Random(1))

    assert decision.delay_s is not None
    assert 1.0 <= decision.delay_s <= 2.0


def test_decide_single_attempt_budget_fails_on_first_transient() -> None:
    policy = RetryPolicy(max_attempts=1, backoff_base_s=1.0, backoff_max_s=1.0)

    decision = decide(policy, Outcome.TRANSIENT_ERROR, 0, random.Random(1))

    assert decision == Decision(DeliveryStatus.FAILED, None, counted=True)


@given(
    policies(),
    st.integers(min_value=0, max_value=50),
    st.floats(min_value=0, max_value=3600),
    rngs,
)
def test_decide_rate_limited_waits_at_least_retry_after(
    policy: RetryPolicy, counted_before: int, retry_after_s: float, rng: random.Random
) -> None:
    decision = decide(policy, Outcome.RATE_LIMITED, counted_before, rng, retry_after_s)

    assert decision.status is DeliveryStatus.PENDING
    assert not decision.counted
    assert decision.delay_s is not None
    assert decision.delay_s >= retry_after_s


def test_decide_rate_limited_without_retry_after_is_due_now() -> None:
    decision = decide(POLICY, Outcome.RATE_LIMITED, 0, random.Random(1), None)

    assert decision.delay_s == 0.0


@given(policies(), st.integers(min_value=0, max_value=50), rngs)
def test_decide_transient_fails_exactly_when_the_budget_is_spent(
    policy: RetryPolicy, counted_before: int, rng: random.Random
) -> None:
    decision = decide(policy, Outcome.TRANSIENT_ERROR, counted_before, rng)

    spent = counted_before + 1 >= policy.max_attempts
    assert decision.status is (
        DeliveryStatus.FAILED if spent else DeliveryStatus.PENDING
    )
    assert decision.counted
