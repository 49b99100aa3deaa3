"""Peer (d): huey with SqliteHuey, enqueuing and then consuming no-op tasks.

The storage syncs as notifier's outbox does (WAL, synchronous=FULL); results
are off, so a task costs one enqueue and one dequeue. The consumer runs
in this process with ``--workers`` threads; the consume rate is the number of
tasks divided by the time from the consumer's start until the last task ran.
Run by the suite as ``python bench/huey_ceiling.py --path F --tasks N``;
prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import threading
import time


def measure(path: str, tasks: int, workers: int, timeout_s: float) -> dict[str, object]:
    """Enqueue ``tasks`` no-op tasks, consume them all; return both rates."""
    from huey import SqliteHuey

    huey = SqliteHuey(name="bench", filename=path, fsync=True, results=False)
    ran = itertools.count(1)
    all_ran = threading.Event()

    @huey.task()  # type: ignore[untyped-decorator]
    def noop() -> None:
        if next(ran) == tasks:
            all_ran.set()

    started = time.perf_counter()
    for _ in range(tasks):
        noop()
    enqueued = time.perf_counter()
    consumer = huey.create_consumer(
        workers=workers,
        periodic=False,
        initial_delay=0.001,
        max_delay=0.01,
        check_worker_health=False,
    )
    consume_started = time.perf_counter()
    consumer.start()
    finished = all_ran.wait(timeout_s)
    consumed = time.perf_counter()
    consumer.stop(graceful=True)

    if not finished:
        raise SystemExit(f"huey did not run {tasks} tasks within {timeout_s:g} s")
    import huey as huey_package

    return {
        "tasks": tasks,
        "workers": workers,
        "enqueue_rate": tasks / (enqueued - started),
        "rate": tasks / (consumed - consume_started),
        "seconds": consumed - consume_started,
        "huey_version": huey_package.__version__,
    }


def main() -> None:
    """Run the peer measurement and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="a database file to create")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if os.path.exists(args.path):
        raise SystemExit(f"--path must name a new file, {args.path!r} exists")
    logging.basicConfig(level=logging.WARNING)
    result = measure(args.path, args.tasks, args.workers, args.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
