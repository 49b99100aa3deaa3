"""Prometheus metrics of notifier: the process's default registry, or under
``serve --workers N`` files that every process writes and any scrape adds up.

Labels are bounded: messenger, outcome and state, and for HTTP the method,
route template and status; never a recipient or an id.
"""

from __future__ import annotations

import os
from typing import TypeVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase

from notifier.domain.models import Messenger
from notifier.storage.base import OutboxStats

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 86400)

ACCEPTED = Counter(
    "notifier_deliveries_accepted", "New deliveries stored.", ["messenger"]
)
DEDUPLICATED = Counter(
    "notifier_deliveries_deduplicated",
    "Recipients answered with an existing delivery of the same text.",
    ["messenger"],
)
FINISHED = Counter(
    "notifier_deliveries_finished",
    "Deliveries that reached a final status.",
    ["messenger", "status"],
)
ATTEMPTS = Counter(
    "notifier_attempts", "Send attempts by outcome.", ["messenger", "outcome"]
)
LEASES_RECLAIMED = Counter(
    "notifier_leases_reclaimed",
    "Deliveries claimed again after their lease ran out.",
    ["messenger"],
)
SEND_SECONDS = Histogram(
    "notifier_send_duration_seconds",
    "Time one send to a messenger took.",
    ["messenger"],
    buckets=_LATENCY_BUCKETS,
)
ACCEPT_TO_SENT_SECONDS = Histogram(
    "notifier_accept_to_sent_seconds",
    "Time from accepting a delivery to the messenger taking it.",
    ["messenger"],
    buckets=_WAIT_BUCKETS,
)
# Set from a count of the database at each scrape: under serve --workers N the
# scraped worker's count is the one to show (multiprocess_mode applies only there).
PENDING = Gauge(
    "notifier_deliveries_pending",
    "Pending deliveries: due now, or scheduled later.",
    ["messenger", "state"],
    multiprocess_mode="mostrecent",
)
OLDEST_DUE_AGE = Gauge(
    "notifier_oldest_due_age_seconds",
    "How long the oldest due delivery has waited; 0 when none is due.",
    multiprocess_mode="mostrecent",
)

_HTTP_LABELS = ["method", "path", "status_code"]
HTTP_REQUESTS = Counter(
    "notifier_http_requests", "HTTP requests by route template.", _HTTP_LABELS
)
HTTP_SECONDS = Histogram(
    "notifier_http_request_duration_seconds",
    "Time to handle an HTTP request.",
    _HTTP_LABELS,
    buckets=_LATENCY_BUCKETS,
)
HTTP_ERRORS = Counter(
    "notifier_http_requests_error",
    "HTTP requests that ended in a server error.",
    _HTTP_LABELS,
)


M = TypeVar("M", bound=MetricWrapperBase)
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *labels: str) -> M:
    """Return ``metric.labels(*labels)``, looked up once per label set.

    ``labels`` takes a lock and checks its arguments on every call, a few
    microseconds each time a delivery is sent or a request answered; the
    label sets are few (see above), so each is kept here after its first use.
    """
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found  # type: ignore[return-value]


# Under serve --workers N every process writes its metrics to files in this
# directory (prometheus_client's multiprocess mode), and a scrape of any worker
# adds them all up; without it each process would show only its own.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """Return every metric in Prometheus text format, of every process."""
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def observe_outbox(stats: OutboxStats, now_ms: int) -> None:
    """Set the gauges from a fresh count of the outbox."""
    for messenger in Messenger:
        PENDING.labels(messenger.value, "due").set(stats.due.get(messenger, 0))
        PENDING.labels(messenger.value, "scheduled").set(
            stats.scheduled.get(messenger, 0)
        )
    oldest = stats.oldest_due_ms
    OLDEST_DUE_AGE.set(0 if oldest is None else max(0, now_ms - oldest) / 1000)
