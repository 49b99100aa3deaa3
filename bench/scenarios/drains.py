"""Drain scenarios: deliveries preloaded as due, timed from the outbox file."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench import preload
from bench.context import Context
from bench.procs import BenchError, CpuMeter, wait_until
from bench.report import Figure
from bench.scenarios.common import (
    CEILING_BATCH,
    HUEY_WORKERS,
    MESSENGERS,
    emulators,
    huey_ceiling,
    now_ms,
    sqlite_ceiling,
)
from bench.servers import Notifier

SLOW_LATENCY_MS = 100
SLOW_CONCURRENCY = 1000
SLOW_BATCH = 500
FAILURE_RATE = 0.3
DAY_MS = 86_400_000


@dataclass
class Drain:
    """How one drain run went, read from the outbox file afterwards."""

    due: int
    sent: int
    failed: int
    seconds: float
    memory_mb: dict[str, float]
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        """Return deliveries sent per second, first claim to last send."""
        return self.sent / self.seconds


_SENT = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
_FIRST_TRIES_DONE = (
    "SELECT count(*) FROM attempts WHERE number = 1 AND outcome IS NOT NULL"
)
_SPAN = """
SELECT (SELECT min(started_at_ms) FROM attempts),
       (SELECT max(finished_at_ms) FROM attempts
        WHERE number = 1 AND outcome = 'sent'),
       (SELECT count(*) FROM attempts WHERE number = 1 AND outcome = 'sent')"""


def drain_once(
    ctx: Context,
    scenario: str,
    rep: int,
    due: int,
    settings: dict[str, str],
    *,
    template: Path | None = None,
    first: int = 0,
    until: str = _SENT,
) -> Drain:
    """Start notifier on ``due`` deliveries already due; time how fast they go.

    The clock runs from the first claim (the earliest attempt) to the last
    first attempt that sent, as the outbox recorded them; ``until`` counts the
    rows that must be done before the figures are read.
    """
    workdir = ctx.workdir(scenario)
    db_path = workdir / "notifier.db"
    if template is None:
        preload.create_schema(db_path)
    else:
        shutil.copyfile(template, db_path)
    past_ms = now_ms() - 1000
    preload.add_deliveries(db_path, due, past_ms, past_ms, first=first)
    server = ctx.notifier(workdir, settings, db_path=db_path)
    try:
        meter = CpuMeter(server.process)
        with ctx.profiling(server, scenario, rep):
            done = wait_until(
                lambda: server.query(until)[0][0] >= due,
                timeout_s=60 + due / 300,
                interval_s=0.2,
            )
        cpu = meter.stop()
        memory = server.process.memory_mb()
        if not done:
            raise BenchError(
                f"{scenario}: {server.query(until)[0][0]} of {due} done in time"
            )
        drain = _read_drain(server, due, memory, cpu)
    finally:
        server.stop()
        ctx.cleanup(workdir)
    ctx.record(scenario, "notifier", rep, {**drain.__dict__, "rate": drain.rate})
    return drain


def _read_drain(
    server: Notifier, due: int, memory: dict[str, float], cpu: dict[str, float]
) -> Drain:
    first_ms, last_ms, sent = server.query(_SPAN)[0]
    failed = server.query("SELECT count(*) FROM deliveries WHERE status = 'failed'")
    if not sent or first_ms is None or last_ms is None:
        raise BenchError("no first attempt was sent")
    seconds = max(last_ms - first_ms, 1) / 1000
    return Drain(due, sent, failed[0][0], seconds, memory, cpu)


def drain(ctx: Context) -> list[Figure]:
    """N due deliveries, emulators instant and faultless; ceilings (c) and (d)."""
    n = ctx.sizes.drain
    vs_sqlite = Figure(
        "drain",
        f"{n:,} due: sent",
        "dlv/s",
        ceiling=f"(c) sqlite3 claim+complete, {CEILING_BATCH}/batch",
        goal="ratio>=",
        target=0.25,
    )
    vs_huey = Figure(
        "drain",
        f"{n:,} due: sent",
        "dlv/s",
        ceiling=f"(d) huey SqliteHuey consume, {HUEY_WORKERS} worker",
        goal="ratio>=",
        target=2.0,
    )
    for rep in range(ctx.sizes.reps):
        claim = sqlite_ceiling(ctx, "claim", n)
        ctx.record("drain", "ceiling_c", rep, claim)
        vs_sqlite.ceiling_samples.append(claim["rate"])
        try:
            huey = huey_ceiling(ctx, ctx.sizes.huey_tasks)
        except BenchError as exc:
            vs_huey.error = str(exc)
        else:
            ctx.record("drain", "ceiling_d", rep, huey)
            vs_huey.ceiling_samples.append(huey["rate"])

        run = drain_once(ctx, "drain", rep, n, emulators(latency_ms=0))
        _expect_all_sent(run, "drain")
        vs_sqlite.samples.append(run.rate)
        vs_sqlite.cpu.append(run.cpu)
        vs_huey.samples.append(run.rate)
    return [vs_sqlite, vs_huey]


def _expect_all_sent(run: Drain, scenario: str) -> None:
    if run.sent != run.due or run.failed:
        raise BenchError(
            f"{scenario}: {run.sent} of {run.due} sent, {run.failed} failed"
        )


def slow(ctx: Context) -> list[Figure]:
    """Emulators answer after 100 ms: sends must overlap to keep the rate."""
    n = ctx.sizes.slow
    bound = len(MESSENGERS) * SLOW_CONCURRENCY / (SLOW_LATENCY_MS / 1000)
    rate = Figure(
        "slow 100 ms",
        f"{n:,} due: sent",
        "dlv/s",
        goal="value>=",
        target=2000,
        note=f"in-flight bound {bound:,.0f}/s",
    )
    settings = {
        **emulators(latency_ms=SLOW_LATENCY_MS),
        "dispatcher_concurrency": str(SLOW_CONCURRENCY),
        "dispatcher_batch_size": str(SLOW_BATCH),
    }
    for rep in range(ctx.sizes.reps):
        run = drain_once(ctx, "slow", rep, n, settings)
        _expect_all_sent(run, "slow")
        rate.samples.append(run.rate)
        rate.cpu.append(run.cpu)
    return [rate]


def failures(ctx: Context) -> list[Figure]:
    """30% transient errors: do healthy deliveries finish as early as without?"""
    n = ctx.sizes.failures
    span = Figure(
        "failures 30%",
        f"{n:,} due: healthy all sent after",
        "s",
        ceiling="same without failures",
        goal="ratio<=",
        target=1.1,
    )
    for rep in range(ctx.sizes.reps):
        clean = drain_once(ctx, "failures-none", rep, n, emulators(latency_ms=0))
        span.ceiling_samples.append(clean.seconds)
        faulty = drain_once(
            ctx,
            "failures-30pct",
            rep,
            n,
            emulators(latency_ms=0, transient_error_rate=FAILURE_RATE),
            until=_FIRST_TRIES_DONE,
        )
        span.samples.append(faulty.seconds)
        span.cpu.append(faulty.cpu)
    return [span]


def backlog(ctx: Context) -> list[Figure]:
    """Due deliveries behind a large table of ones scheduled a day ahead."""
    scheduled, due = ctx.sizes.backlog_scheduled, ctx.sizes.backlog_due
    rate = Figure(
        "backlog",
        f"{due:,} due behind {scheduled:,} scheduled: sent",
        "dlv/s",
        ceiling=f"same {due:,} on an empty table",
        goal="ratio>=",
        target=0.8,
    )
    memory = Figure("backlog", "server peak RSS", "MiB", goal="value<=", target=200)
    template = _scheduled_template(ctx, scheduled)
    try:
        for rep in range(ctx.sizes.reps):
            empty = drain_once(ctx, "backlog-empty", rep, due, emulators(latency_ms=0))
            rate.ceiling_samples.append(empty.rate)
            full = drain_once(
                ctx,
                "backlog",
                rep,
                due,
                emulators(latency_ms=0),
                template=template,
                first=scheduled,
            )
            _expect_all_sent(full, "backlog")
            rate.samples.append(full.rate)
            rate.cpu.append(full.cpu)
            memory.samples.append(full.memory_mb.get("VmHWM", float("nan")))
    finally:
        ctx.cleanup(template.parent)
    return [rate, memory]


def _scheduled_template(ctx: Context, count: int) -> Path:
    """Build, once, an outbox with ``count`` deliveries due a day from now."""
    workdir = ctx.workdir("backlog-template")
    path = workdir / "notifier.db"
    started = time.perf_counter()
    preload.create_schema(path)
    now = now_ms()
    preload.add_deliveries(path, count, now + DAY_MS, now)
    ctx.record(
        "backlog",
        "template",
        0,
        {
            "scheduled": count,
            "seconds": time.perf_counter() - started,
            "bytes": path.stat().st_size,
        },
    )
    return path
