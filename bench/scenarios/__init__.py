"""The scenarios: each runs notifier and its yardstick, and returns figures."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Context
from bench.report import Figure
from bench.scenarios.drains import backlog, drain, failures, slow
from bench.scenarios.precision import precision
from bench.scenarios.requests import fanout, ingest, workers

Scenario = Callable[[Context], list[Figure]]

SCENARIOS: dict[str, Scenario] = {
    "ingest": ingest,
    "fanout": fanout,
    "drain": drain,
    "slow": slow,
    "failures": failures,
    "precision": precision,
    "backlog": backlog,
    "workers": workers,
}
