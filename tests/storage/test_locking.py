"""The writer's file lock, which serialises writes across processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from notifier.storage.sqlite.locking import FileLock

_HOLDER = """
import sys, time
from pathlib import Path
from notifier.storage.sqlite.locking import FileLock
lock_path, log = sys.argv[1], Path(sys.argv[2])
lock = FileLock(lock_path)
with lock:
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so
    log.write_text("holder done\\n")
"""


def test_file_lock_waits_for_another_process_to_let_go(tmp_path: Path) -> None:
    lock_path, log = tmp_path / "db-lock", tmp_path / "log"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_path), str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "held\n"
    lock = FileLock(str(lock_path))

    holder.stdin.write("go\n")
    holder.stdin.flush()
    with lock:
        seen = log.read_text()

    holder.wait(timeout=30)
    lock.close()
    assert seen == "holder done\n"  # the lock came only after the holder wrote


def test_file_lock_without_a_path_is_a_no_op() -> None:
    lock = FileLock(None)

    with lock, lock:  # nothing to take, so no self-deadlock either
        pass

    lock.close()
