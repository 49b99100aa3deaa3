"""Load scenarios: single-recipient and fan-out POSTs from the load generator."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.context import Context
from bench.procs import BenchError, Cores, CpuMeter
from bench.report import Figure
from bench.scenarios.common import CEILING_BATCH, FANOUT, sqlite_ceiling
from bench.servers import start_ceiling_app


def ingest(ctx: Context) -> list[Figure]:
    """Single-recipient POSTs against notifier and against ceiling (a)."""
    rate = Figure(
        "ingest",
        "requests accepted",
        "req/s",
        ceiling="(a) Litestar no-op",
        goal="ratio>=",
        target=0.9,
    )
    p50 = Figure("ingest", "latency p50", "ms", ceiling="(a) p50")
    p99 = Figure(
        "ingest", "latency p99", "ms", ceiling="(a) p99", goal="ratio<=", target=3.0
    )
    app_dir = ctx.workdir("ceiling-a")
    app, app_port = start_ceiling_app(app_dir, cpu=ctx.cores.server)
    try:
        for rep in range(ctx.sizes.reps):
            ceiling = ctx.load(app_port, "single", app_dir)
            ctx.record("ingest", "ceiling_a", rep, ceiling)
            rate.ceiling_samples.append(ceiling["rate"])
            p50.ceiling_samples.append(ceiling["latency_ms"]["p50"])
            p99.ceiling_samples.append(ceiling["latency_ms"]["p99"])

            measured = _load_notifier(ctx, "ingest", rep, "single", {})
            rate.samples.append(measured["rate"])
            rate.cpu.append(measured["server_cpu"])
            p50.samples.append(measured["latency_ms"]["p50"])
            p99.samples.append(measured["latency_ms"]["p99"])
    finally:
        app.stop()
        ctx.cleanup(app_dir)
    return [rate, p50, p99]


def _load_notifier(
    ctx: Context, scenario: str, rep: int, body: str, settings: dict[str, str]
) -> dict[str, Any]:
    workdir = ctx.workdir(scenario)
    server = ctx.notifier(workdir, settings)
    try:
        meter = CpuMeter(server.process)
        with ctx.profiling(server, scenario, rep):
            result = ctx.load(server.port, body, workdir)
        result["server_cpu"] = meter.stop()
        result["server_memory_mb"] = server.process.memory_mb()
        _check_answers(result, scenario)
    finally:
        server.stop()
        ctx.cleanup(workdir)
    ctx.record(scenario, "notifier", rep, result)
    return result


def _check_answers(result: dict[str, Any], scenario: str) -> None:
    if not result["accepted"]:
        raise BenchError(f"{scenario}: no request was accepted: {result['statuses']}")


# --- fan-out ------------------------------------------------------------


def fanout(ctx: Context) -> list[Figure]:
    """100-recipient POSTs against notifier; ceiling (b) is raw batched inserts."""
    rate = Figure(
        "fan-out",
        f"recipients accepted ({FANOUT}/POST)",
        "rcpt/s",
        ceiling=f"(b) sqlite3 inserts, {CEILING_BATCH}/txn",
        goal="ratio>=",
        target=0.5,
    )
    p99 = Figure("fan-out", "latency p99", "ms")
    for rep in range(ctx.sizes.reps):
        ceiling = sqlite_ceiling(ctx, "insert", ctx.sizes.insert_rows)
        ctx.record("fan-out", "ceiling_b", rep, ceiling)
        rate.ceiling_samples.append(ceiling["rate"])

        measured = _load_notifier(ctx, "fan-out", rep, f"fanout:{FANOUT}", {})
        rate.samples.append(measured["rate"] * FANOUT)
        rate.cpu.append(measured["server_cpu"])
        p99.samples.append(measured["latency_ms"]["p99"])
    return [rate, p99]


# --- two workers -----------------------------------------------------------


def workers(ctx: Context) -> list[Figure]:
    """Single-recipient POSTs to `serve` with two workers against one worker.

    Both runs are unpinned, so the two workers and the load generator share
    the machine's cores as the OS sees fit. That nothing is sent twice with two
    workers is checked by tests/e2e (test_server_two_workers_send_each_delivery_once).
    """
    rate = Figure(
        "workers 2",
        "requests accepted, 2 workers",
        "req/s",
        ceiling="same with 1 worker",
        goal="ratio>=",
        target=1.6,
    )
    unpinned = replace(ctx, cores=Cores(server=None, client=None))
    for rep in range(ctx.sizes.reps):
        one = _load_notifier(unpinned, "workers-1", rep, "single", {})
        two = _load_notifier(
            unpinned, "workers-2", rep, "single", {"server_workers": "2"}
        )
        rate.ceiling_samples.append(one["rate"])
        rate.samples.append(two["rate"])
    return [rate]
