"""The scenarios: each runs notifier and its yardstick, and returns figures."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Context
from bench.report import Figure
from bench.scenarios.drains import backlog, drain, failures, slow
from bench.scenarios.precision import precision
from bench.scenarios.requests import fanout, ingest


def workers(ctx: Context) -> list[Figure]:
    """Two worker processes on one database: not measurable yet."""
    return [
        Figure(
            "workers 2",
            "ingest vs one worker",
            "",
            goal="",
            note="skipped: notifier serve has no --workers option yet",
        )
    ]


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
