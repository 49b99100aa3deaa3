"""What the scenarios share: settings helpers, ceilings run as helpers."""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.context import Context
from bench.procs import HERE, run_json

MESSENGERS = ("telegram", "whatsapp", "viber")
FANOUT = 100
# The unit of work each raw SQLite ceiling commits at a time: one fan-out
# request's rows, and one claim batch at notifier's default batch_size.
CEILING_BATCH = 100
HUEY_WORKERS = 1  # huey's best on one core: more threads only add lock waits


def now_ms() -> int:
    """Return the wall clock in epoch milliseconds, as notifier reads it."""
    return time.time_ns() // 1_000_000


def emulators(**values: object) -> dict[str, str]:
    """Return the same emulator setting for every messenger, as config keys."""
    return {
        f"emulator_{m}_{key}": str(value)
        for m in MESSENGERS
        for key, value in values.items()
    }


def sqlite_ceiling(ctx: Context, kind: str, rows: int) -> dict[str, Any]:
    """Run ceiling (b) ``insert`` or (c) ``claim`` on the server core."""
    workdir = ctx.workdir(f"ceiling-{kind}")
    try:
        return run_json(
            [
                sys.executable,
                str(HERE / "sqlite_ceilings.py"),
                kind,
                "--path",
                str(workdir / "ceiling.db"),
                "--rows",
                str(rows),
                "--batch",
                str(CEILING_BATCH),
            ],
            cwd=workdir,
            cpu=ctx.cores.server,
            timeout_s=60 + rows / 1000,
        )
    finally:
        ctx.cleanup(workdir)


def huey_ceiling(ctx: Context, tasks: int) -> dict[str, Any]:
    """Run peer (d), huey's consume rate, on the server core."""
    workdir = ctx.workdir("ceiling-huey")
    try:
        return run_json(
            [
                sys.executable,
                str(HERE / "huey_ceiling.py"),
                "--path",
                str(workdir / "huey.db"),
                "--tasks",
                str(tasks),
                "--workers",
                str(HUEY_WORKERS),
                "--timeout",
                str(60 + tasks / 200),
            ],
            cwd=workdir,
            cpu=ctx.cores.server,
            timeout_s=90 + tasks / 100,
        )
    finally:
        ctx.cleanup(workdir)
