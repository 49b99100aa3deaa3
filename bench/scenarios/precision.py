"""Schedule precision: how late the first attempt starts after send_at."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.context import Context
from bench.loadgen import recipient
from bench.procs import BenchError, http_request, wait_until
from bench.report import Figure
from bench.scenarios.common import FANOUT, emulators, now_ms
from bench.servers import Notifier


def iso(ms: int) -> str:
    """Return epoch milliseconds as an RFC 3339 UTC time with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_LATENESS = """
SELECT a.started_at_ms - d.send_at_ms, d.sent_at_ms - d.send_at_ms
FROM deliveries d JOIN attempts a ON a.delivery_id = d.id AND a.number = 1
WHERE d.status = 'sent' AND d.id IN ({ids})"""


def precision(ctx: Context) -> list[Figure]:
    """1,000 deliveries due at one instant, then single ones due while idle."""
    burst = ctx.sizes.precision_burst
    p50 = Figure(
        "precision",
        f"{burst:,} at one instant: late p50",
        "ms",
        goal="value<=",
        target=20,
    )
    p99 = Figure(
        "precision",
        f"{burst:,} at one instant: late p99",
        "ms",
        goal="value<=",
        target=50,
    )
    idle = Figure(
        "precision", "one due while idle: late", "ms", goal="value<=", target=20
    )
    for rep in range(ctx.sizes.reps):
        workdir = ctx.workdir("precision")
        server = ctx.notifier(workdir, emulators(latency_ms=0))
        try:
            late = _burst(server, burst)
            p50.samples.append(_pct(late.started, 50))
            p99.samples.append(_pct(late.started, 99))
            probes = [
                _idle_probe(server, burst + n) for n in range(ctx.sizes.idle_probes)
            ]
            idle.samples += [p.started[0] for p in probes]
        finally:
            server.stop()
            ctx.cleanup(workdir)
        ctx.record(
            "precision",
            "notifier",
            rep,
            {
                "burst_started_late_ms": _percentiles(late.started),
                "burst_sent_late_ms": _percentiles(late.sent),
                "idle_started_late_ms": [p.started[0] for p in probes],
                "idle_sent_late_ms": [p.sent[0] for p in probes],
            },
        )
    return [p50, p99, idle]


def _post(server: Notifier, numbers: range, send_at_ms: int) -> list[str]:
    body = {
        "text": "Precision probe",
        "send_at": iso(send_at_ms),
        "recipients": [
            {"messenger": m, "id": i} for m, i in (recipient(n) for n in numbers)
        ],
    }
    status, answer = http_request(server.port, "POST", "/v1/messages", body)
    if status != 202:
        raise BenchError(f"precision: POST answered {status}: {answer}")
    return [d["id"] for d in answer["deliveries"]]


def _burst(server: Notifier, count: int) -> Lateness:
    due_ms = now_ms() + 2000
    ids: list[str] = []
    for start in range(0, count, FANOUT):
        ids += _post(server, range(start, min(start + FANOUT, count)), due_ms)
    if now_ms() > due_ms - 100:
        raise BenchError("precision: posting the burst took too long to be early")
    return _wait_lateness(server, ids)


def _idle_probe(server: Notifier, number: int) -> Lateness:
    time.sleep(1.5)  # longer than the poll interval: the dispatcher is asleep
    ids = _post(server, range(number, number + 1), now_ms() + 1000)
    return _wait_lateness(server, ids)


@dataclass
class Lateness:
    """Milliseconds past send_at, ascending: at the first attempt, and when sent."""

    started: list[int]
    sent: list[int]


def _wait_lateness(server: Notifier, ids: list[str]) -> Lateness:
    query = _LATENESS.format(ids=",".join("?" * len(ids)))
    rows: list[tuple[Any, ...]] = []

    def all_sent() -> bool:
        nonlocal rows
        rows = server.query(query, ids)
        return len(rows) == len(ids)

    if not wait_until(all_sent, timeout_s=30, interval_s=0.1):
        raise BenchError(f"precision: {len(rows)} of {len(ids)} sent within 30 s")
    return Lateness(sorted(r[0] for r in rows), sorted(r[1] for r in rows))


def _pct(ordered: list[int], pct: float) -> float:
    rank = max(1, -(-len(ordered) * pct // 100))
    return float(ordered[int(rank) - 1])


def _percentiles(ordered: list[int]) -> dict[str, float]:
    return {f"p{p}": _pct(ordered, p) for p in (50, 90, 99, 100)}
