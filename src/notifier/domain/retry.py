"""The retry policy: a pure function from an attempt's outcome to the next step."""

from __future__ import annotations

import random
from dataclasses import dataclass

from notifier.domain.models import DeliveryStatus, Outcome


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a delivery gets and how long it waits between them."""

    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to a delivery after an attempt.

    ``delay_s`` is how long until the next attempt, when ``status`` is pending.
    ``counted`` says whether the attempt used up one of the delivery's budget.
    """

    status: DeliveryStatus
    delay_s: float | None
    counted: bool


def backoff_s(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """Return the wait after the given number of counted failures (1 or more).

    Exponential with "equal jitter": the wait lies between half and all of
    base * 2**(failures - 1), capped at backoff_max_s, so retries of many
    deliveries that failed together spread out but never come back early.
    """
    exponent = min(failures - 1, 62)
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2.0**exponent)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def decide(
    policy: RetryPolicy,
    outcome: Outcome,
    attempts_counted: int,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> Decision:
    """Return what follows an attempt that ended with ``outcome``.

    ``attempts_counted`` is the number of counted attempts before this one.
    A rate-limited attempt waits at least ``retry_after_s`` and is not counted.
    """
    if outcome is Outcome.SENT:
        return Decision(DeliveryStatus.SENT, None, counted=True)
    if outcome is Outcome.PERMANENT_ERROR:
        return Decision(DeliveryStatus.FAILED, None, counted=True)
    if outcome in (Outcome.RATE_LIMITED, Outcome.RELEASED):
        return Decision(DeliveryStatus.PENDING, retry_after_s or 0.0, counted=False)
    used = attempts_counted + 1
    if used >= policy.max_attempts:
        return Decision(DeliveryStatus.FAILED, None, counted=True)
    return Decision(DeliveryStatus.PENDING, backoff_s(policy, used, rng), counted=True)
