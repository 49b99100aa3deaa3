"""Run the benchmark suite: ``python -m bench`` from the repository root.

Every scenario starts its own ``notifier serve`` on 127.0.0.1 on a fresh
database, measures it and the ceiling it is compared with in the same run,
prints one table and writes bench/results/<timestamp>.json. Timings are never
asserted: the suite is a tool, not a test.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from bench.context import FULL, QUICK, Context
from bench.procs import HERE, Cores
from bench.report import Figure, markdown, table
from bench.scenarios import SCENARIOS

RESULTS = HERE / "results"
_PACKAGES = (
    "notifier",
    "litestar",
    "uvicorn",
    "uvloop",
    "httptools",
    "msgspec",
    "aiosqlite",
    "huey",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure notifier against the ceilings of its own stack.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one run each: under a minute"
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--reps", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument(
        "--loadgen",
        choices=("python", "wrk"),
        default="python",
        help="the HTTP load generator (default: bench/loadgen.py)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="notifier's logging.level (default: info, as shipped)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a notifier setting for every server, e.g. "
        "throttle_send_per_minute=100000 (NOTIFIER_<KEY>)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the server with py-spy in each scenario's "
        "first run; stacks go next to the JSON file",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server and the client to separate cores",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep databases and logs in the scratch directory",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON file goes (default: bench/results)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, print the table, write the JSON; return 0."""
    args = _parser().parse_args(argv)
    names = _scenarios(args.only)
    problem = _missing(args)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = type(sizes)(**{**sizes.__dict__, "reps": args.reps})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    cores = Cores.pick(not args.no_pin)
    if cores.client is not None:
        os.sched_setaffinity(0, {cores.client})  # keep this driver off the server core
    root = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    ctx = Context(
        sizes=sizes,
        cores=cores,
        root=root,
        log_level=args.log_level,
        loadgen=args.loadgen,
        keep=args.keep,
        profile_dir=args.results / f"{stamp}-profiles" if args.profile else None,
        extra_settings=_settings(args.set),
    )
    machine = _machine(cores)
    print(_describe(machine, args, sizes), file=sys.stderr)

    # SIGTERM ends the run as Ctrl-C does: the finally blocks stop every child.
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    figures: list[Figure] = []
    seconds: dict[str, float] = {}
    try:
        for name in names:
            figures += _run_scenario(ctx, name, seconds)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    machine["loadavg_after"] = _loadavg()
    elapsed = time.monotonic() - started

    path = args.results / f"{stamp}.json"
    _write_json(path, args, sizes, machine, figures, ctx, seconds, elapsed)
    print()
    print(table(figures))
    print()
    print(_footer(machine, elapsed, path, ctx))
    return 0


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _scenarios(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"bench: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}"
        )
    return names


def _settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench: --set wants KEY=VALUE, got {pair!r}")
        settings[key.strip().lower().removeprefix("notifier_")] = value
    return settings


def _missing(args: argparse.Namespace) -> str | None:
    if importlib.util.find_spec("notifier") is None:
        return "notifier is not installed in this interpreter: pip install -e ."
    if args.loadgen == "wrk" and not wrk.available():
        return "--loadgen wrk needs wrk on PATH (apt-get install wrk)"
    if importlib.util.find_spec("huey") is None:
        print(
            "bench: huey is missing, so ceiling (d) will show an error; "
            "pip install -r bench/requirements.txt",
            file=sys.stderr,
        )
    return None


def _run_scenario(ctx: Context, name: str, seconds: dict[str, float]) -> list[Figure]:
    print(f"[{datetime.now():%H:%M:%S}] {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        figures = SCENARIOS[name](ctx)
    except Exception as exc:  # one broken scenario must not lose the others
        traceback.print_exc(file=sys.stderr)
        figures = [Figure(name, "(all)", "", error=f"{type(exc).__name__}: {exc}")]
    seconds[name] = time.monotonic() - started
    print(
        f"[{datetime.now():%H:%M:%S}] {name} done in {seconds[name]:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return figures


def _machine(cores: Cores) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "server_core": cores.server,
        "client_core": cores.client,
        "packages": {p: _version(p) for p in _PACKAGES},
        "git": _git(),
        "loadavg_before": _loadavg(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    repo = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def _describe(machine: dict[str, Any], args: argparse.Namespace, sizes: Any) -> str:
    pin = (
        "server on core {server_core}, load generator and driver on core "
        "{client_core}".format(**machine)
        if machine["server_core"] is not None
        else "not pinned"
    )
    return (
        f"notifier bench ({'quick' if args.quick else 'full'}, {sizes.reps} run(s) "
        f"per figure, load: {args.loadgen}, notifier log level {args.log_level}); "
        f"{machine['nproc']} cores, {pin}; load average {machine['loadavg_before']}"
    )


def _footer(machine: dict[str, Any], elapsed: float, path: Path, ctx: Context) -> str:
    lines = [
        f"machine: {machine['nproc']} x {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB; Python {machine['python']}, "
        f"SQLite {machine['sqlite']}; {machine['platform']}",
        f"notifier {machine['packages']['notifier']} at {machine['git']}; "
        f"load average before {machine['loadavg_before']}, after "
        f"{machine['loadavg_after']}",
        "figures: median of the runs (min-max); ratio = notifier's median / the "
        "ceiling's median, both measured in this run",
        f"took {elapsed:.0f} s; JSON: {path}",
    ]
    if ctx.profiles:
        lines.append(f"profiles: {ctx.profile_dir}")
    return "\n".join(lines)


def _write_json(
    path: Path,
    args: argparse.Namespace,
    sizes: Any,
    machine: dict[str, Any],
    figures: list[Figure],
    ctx: Context,
    seconds: dict[str, float],
    elapsed: float,
) -> None:
    data = {
        "command": " ".join(
            [Path(sys.executable).name, "-m", "bench", *(sys.argv[1:])]
        ),
        "mode": "quick" if args.quick else "full",
        "loadgen": args.loadgen,
        "log_level": args.log_level,
        "settings": ctx.extra_settings,
        "sizes": sizes.__dict__,
        "machine": machine,
        "seconds": {"total": elapsed, **seconds},
        "figures": [f.to_json() for f in figures],
        "markdown": markdown(figures),
        "runs": ctx.runs,
        "profiles": ctx.profiles,
    }
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
