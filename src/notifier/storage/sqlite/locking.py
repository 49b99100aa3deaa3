"""One writer at a time per database file, across processes as well."""

from __future__ import annotations

import fcntl
import os
from types import TracebackType


class FileLock:
    """An exclusive flock(2) on a file beside the database, for one write.

    SQLite lets one connection write at a time. A process that finds the file
    busy sleeps, in steps that grow to 100 ms, before it tries again, so under
    ``serve --workers N`` a worker would wait far longer than the other's
    commit takes. A thread blocked on flock(2) wakes as soon as the lock is
    free. Only the writer connection's own thread takes it, never the event
    loop, and it is held from BEGIN to COMMIT and no longer.
    """

    def __init__(self, path: str | None) -> None:
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        """Block until no other process writes."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Let the next writer in."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file; other processes' locks are unaffected."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
