"""py-spy profiles of the server: record collapsed stacks, then rank frames."""

from __future__ import annotations

import linecache
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import BenchError, pinned

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_WHERE = re.compile(r"\((?P<file>[^():]+\.py):(?P<line>\d+)\)$")
_THREAD = re.compile(r"^thread \(\d+\): ")
_NO_LINE = re.compile(r":\d+\)$")


def executable() -> str | None:
    """Return py-spy beside this interpreter or on PATH, if installed."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def start(pid: int, output: Path, *, cpu: int | None) -> subprocess.Popen[bytes]:
    """Sample ``pid`` into ``output`` as collapsed stacks, without pausing it."""
    spy = executable()
    if spy is None:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    log = open(output.with_suffix(".log"), "wb")  # noqa: SIM115 - child owns it
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--output",
            str(output),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pinned(cpu),
    )


def _source(frame: str) -> str:
    """Return the code line a leaf frame such as 'f (pkg/mod.py:12)' stands on."""
    match = _WHERE.search(frame)
    if not match:
        return ""
    for entry in sys.path:
        path = Path(entry or ".") / match["file"]
        if path.is_file():
            return linecache.getline(str(path), int(match["line"])).strip()
    return ""


def _below_loop(frames: list[str]) -> list[str]:
    """Return the frames the event loop called: those after Runner.run, if any."""
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].startswith("Runner.run (asyncio/runners.py"):
            return frames[i + 1 :]
    return frames


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """Rank threads, leaf frames (with their code line) and the loop's callees.

    Threads and leaves are in percent of all samples; ``loop_inclusive`` in
    percent of the event loop thread's samples, by function, callers included.

    py-spy counts a sample per thread, busy or blocked in C: a leaf on a call
    such as ``tx.get()`` is a thread waiting, one on ``function()`` in
    aiosqlite's worker is SQLite at work (fsync included), and ``Runner.run``
    is the event loop inside uvloop (polling, or its own C work).
    """
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    loop: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return {"error": f"no profile at {path}: {exc}"}
    for line in lines:
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match["count"])
        frames = match["stack"].split(";")
        thread = _THREAD.sub("", frames[0]) if frames[0].startswith("thread") else "?"
        total += count
        threads[thread] += count
        leaves[f"{thread}: {frames[-1]}"] += count
        if thread == "MainThread":
            for name in {_NO_LINE.sub(")", f) for f in _below_loop(frames[1:])}:
                loop[name] += count
    if not total:
        return {"error": f"py-spy recorded no samples in {path}"}

    def share(n: int) -> float:
        return round(100 * n / total, 1)

    in_loop = threads["MainThread"] or 1

    return {
        "file": str(path),
        "samples": total,
        "threads": [(name, share(n)) for name, n in threads.most_common()],
        "leaves": [
            (name, share(n), _source(name)) for name, n in leaves.most_common(top)
        ],
        "loop_inclusive_pct_of_loop": [
            (name, round(100 * n / in_loop, 1)) for name, n in loop.most_common(2 * top)
        ],
    }
