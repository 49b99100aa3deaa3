"""Processes the suite starts: servers, load, ceilings; pinned, stopped by PID."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class BenchError(RuntimeError):
    """Raised when a run cannot produce its figure; the table shows the message."""


@dataclass(frozen=True)
class Cores:
    """Which core the server side and the client side are pinned to, if any."""

    server: int | None
    client: int | None

    @classmethod
    def pick(cls, pin: bool) -> Cores:
        """Pin to the first two allowed cores when there are two and pinning works."""
        if not pin or not hasattr(os, "sched_getaffinity"):
            return cls(None, None)
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return cls(None, None)
        return cls(allowed[0], allowed[1])


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# Read at import, before the driver pins itself.
_ALL_CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """Return a preexec_fn that pins the child to ``cpu``, or frees it with None.

    The driver pins itself to the client core, and children inherit that; an
    unpinned child gets back every core this process could use at start.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = _ALL_CORES if cpu is None else {cpu}
    return lambda: os.sched_setaffinity(0, cores)


@dataclass
class Process:
    """A child process the suite started; only ever stopped by its own PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.popen.pid

    def memory_mb(self) -> dict[str, float]:
        """Return peak (VmHWM) and current (VmRSS) resident memory in MiB."""
        found: dict[str, float] = {}
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return found
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) / 1024
        return found

    def cpu_seconds(self) -> dict[int, float]:
        """Return CPU seconds (user + system) used so far by each thread, by id."""
        found: dict[int, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            # Fields after the ')' that closes the thread's name; utime, stime.
            fields = stat.rpartition(")")[2].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
        return found

    def log_tail(self, lines: int = 15) -> str:
        """Return the last lines the process wrote to its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Send SIGTERM, wait up to ``timeout_s``, then SIGKILL; by PID only."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class CpuMeter:
    """The share of one core a process used between start and stop, by thread kind.

    ``loop`` is the main thread, where the event loop runs; ``threads`` the
    rest (aiosqlite's one thread per connection, and any others).
    """

    def __init__(self, process: Process) -> None:
        self._process = process
        self._before = process.cpu_seconds()
        self._started = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Return percent of one core: total, loop and threads."""
        after = self._process.cpu_seconds()
        wall = max(time.monotonic() - self._started, 1e-9)
        used = {t: s - self._before.get(t, 0.0) for t, s in after.items()}
        loop = used.get(self._process.pid, 0.0)
        total = sum(used.values())
        return {
            "total_pct": round(100 * total / wall, 1),
            "loop_pct": round(100 * loop / wall, 1),
            "threads_pct": round(100 * (total - loop) / wall, 1),
        }


def start(
    name: str,
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    cpu: int | None = None,
) -> Process:
    """Start ``command`` in ``cwd`` with its output in ``cwd/<name>.log``."""
    log_path = cwd / f"{name}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(cpu),
        )
    return Process(name, popen, log_path)


def run_json(
    command: Sequence[str], *, cwd: Path, cpu: int | None, timeout_s: float
) -> dict[str, Any]:
    """Run a helper that prints one JSON object; return it or raise BenchError."""
    script = command[1] if command[0] == sys.executable else command[0]
    label = Path(script).name
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            preexec_fn=pinned(cpu),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{label} ran past {timeout_s:g} s") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{label} exited {done.returncode}: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def wait_ready(process: Process, port: int, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until GET /health/live answers 200; raise BenchError if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise BenchError(
                f"{process.name} exited with {process.popen.returncode} at start:\n"
                + process.log_tail()
            )
        try:
            status, _ = http_request(port, "GET", "/health/live", timeout_s=1.0)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.05)
    raise BenchError(f"{process.name} was not ready within {timeout_s:g} s")


def http_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    timeout_s: float = 10.0,
) -> tuple[int, Any]:
    """Send one request to 127.0.0.1:``port``; return the status and decoded JSON."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        decoded = json.loads(data) if data else None
    except ValueError:
        decoded = data.decode(errors="replace")
    return response.status, decoded


def read_query(
    path: Path, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Run one query on a SQLite file opened read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, tuple(params)).fetchall()
    finally:
        db.close()


def wait_until(
    check: Callable[[], bool], timeout_s: float, interval_s: float = 0.1
) -> bool:
    """Call ``check`` until true or ``timeout_s`` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return check()
