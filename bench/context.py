"""What every scenario shares: sizes, cores, scratch space, load and profiles."""

from __future__ import annotations

import itertools
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile, wrk
from bench.procs import HERE, Cores, run_json
from bench.servers import Notifier, start_notifier


@dataclass(frozen=True)
class Sizes:
    """How big and how long each scenario runs; --quick picks the small set."""

    reps: int
    warmup_s: float
    duration_s: float
    connections: int
    insert_rows: int
    drain: int
    huey_tasks: int
    slow: int
    failures: int
    precision_burst: int
    idle_probes: int
    backlog_scheduled: int
    backlog_due: int


FULL = Sizes(
    reps=3,
    warmup_s=2.0,
    duration_s=10.0,
    connections=50,
    insert_rows=200_000,
    drain=100_000,
    huey_tasks=20_000,
    slow=30_000,
    failures=20_000,
    precision_burst=1000,
    idle_probes=2,
    backlog_scheduled=1_000_000,
    backlog_due=10_000,
)

QUICK = Sizes(
    reps=1,
    warmup_s=0.5,
    duration_s=2.0,
    connections=50,
    insert_rows=20_000,
    drain=10_000,
    huey_tasks=3_000,
    slow=6_000,
    failures=6_000,
    precision_burst=1000,
    idle_probes=1,
    backlog_scheduled=100_000,
    backlog_due=3_000,
)


@dataclass
class Context:
    """Shared state of one suite run."""

    sizes: Sizes
    cores: Cores
    root: Path
    log_level: str
    loadgen: str
    keep: bool
    profile_dir: Path | None
    extra_settings: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)
    _serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def workdir(self, name: str) -> Path:
        """Return a new empty directory for one run."""
        path = self.root / f"{next(self._serial):03d}-{name}"
        path.mkdir(parents=True)
        return path

    def cleanup(self, path: Path) -> None:
        """Remove a run's directory, databases and logs, unless --keep."""
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)

    def record(self, scenario: str, kind: str, rep: int, data: dict[str, Any]) -> None:
        """Keep one run's raw figures for the JSON file."""
        self.runs.append({"scenario": scenario, "kind": kind, "rep": rep, **data})

    def notifier(
        self, workdir: Path, settings: dict[str, str], db_path: Path | None = None
    ) -> Notifier:
        """Start notifier serve on the server core with this run's log level."""
        merged = {"logging_level": self.log_level, **settings, **self.extra_settings}
        return start_notifier(workdir, merged, cpu=self.cores.server, db_path=db_path)

    def load(self, port: int, body: str, workdir: Path) -> dict[str, Any]:
        """Drive 127.0.0.1:``port`` from the client core; return the summary."""
        s = self.sizes
        if self.loadgen == "wrk":
            return wrk.run(
                port,
                body,
                workdir,
                connections=s.connections,
                warmup_s=s.warmup_s,
                duration_s=s.duration_s,
                cpu=self.cores.client,
            )
        command = [
            sys.executable,
            str(HERE / "loadgen.py"),
            f"--port={port}",
            f"--body={body}",
            f"--connections={s.connections}",
            f"--warmup={s.warmup_s}",
            f"--duration={s.duration_s}",
        ]
        timeout_s = s.warmup_s + s.duration_s + 30
        return run_json(
            command, cwd=workdir, cpu=self.cores.client, timeout_s=timeout_s
        )

    @contextmanager
    def profiling(self, server: Notifier, scenario: str, rep: int) -> Iterator[None]:
        """Record the server with py-spy during the first rep, if --profile."""
        if self.profile_dir is None or rep != 0 or scenario in self.profiles:
            yield
            return
        output = self.profile_dir / f"{scenario}.txt"
        spy = profile.start(server.process.pid, output, cpu=self.cores.client)
        try:
            yield
        finally:
            _stop_spy(spy)
            self.profiles[scenario] = profile.summarise(output)


def _stop_spy(spy: subprocess.Popen[bytes]) -> None:
    # py-spy writes its output when interrupted, as after Ctrl-C.
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)
