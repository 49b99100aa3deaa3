"""Which process dispatches when several serve one database file."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

import structlog

from notifier.dispatcher.janitor import Janitor
from notifier.dispatcher.loop import Dispatcher
from notifier.storage.base import Outbox

log = structlog.get_logger("notifier.dispatcher")
_STOPPED = "stopped at "
_DISPATCHING = "dispatching "


def lock_path_for(database_path: str) -> str | None:
    """Return the dispatch lock file beside a database; None for an in-memory one."""
    return None if database_path == ":memory:" else f"{database_path}-dispatch"


def dispatching_pid(lock_path: str) -> int | None:
    """Return the pid the lock file names as dispatching, if it names one."""
    try:
        state = Path(lock_path).read_text()
    except OSError:
        return None
    pid = state.removeprefix(_DISPATCHING)
    return int(pid) if pid != state and pid.isdigit() else None


class DispatchRole:
    """Runs the dispatcher and the janitor in one process per database file.

    Only the process holding a flock(2) on ``lock_path`` claims, sends and
    prunes: N dispatchers would only take turns on SQLite's single write lock.
    Under ``serve --workers N`` that is a process of its own (see process.py)
    and the HTTP workers stand by: they try for the lock every ``retry_s`` and
    take over once its holder stops or dies (the kernel drops a dead process's
    lock). The holder cannot hear the other
    workers' accepts, so with ``watch_s`` set it looks at the file's
    data_version that often and wakes its dispatcher when another connection
    has committed. Without ``lock_path`` (an in-memory database) it dispatches.

    A holder that stops cleanly says so in the lock file. Then the server is
    shutting down, or restarting its workers and the holder's successor takes
    the lock as it starts; either way a standby must not take over, claim and
    drain all over again. It waits ``handback_s`` before it does.
    """

    def __init__(
        self,
        lock_path: str | None,
        outbox: Outbox,
        dispatcher: Dispatcher,
        janitor: Janitor,
        *,
        retry_s: float,
        watch_s: float | None,
        handback_s: float,
    ) -> None:
        self._fd: int | None = None
        if lock_path is not None:
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._outbox = outbox
        self._dispatcher = dispatcher
        self._janitor = janitor
        self._retry_s = retry_s
        self._watch_s = watch_s
        self._handback_s = handback_s
        self._task: asyncio.Task[None] | None = None
        self.active = False

    async def start(self) -> None:
        """Dispatch now if no other process does, else wait for the turn."""
        if await self._take_over():
            self._task = asyncio.create_task(self._watch(), name="watcher")
        else:
            log.info("dispatcher_standby", pid=os.getpid())
            self._task = asyncio.create_task(self._wait_turn(), name="standby")

    async def stop(self, grace_s: float) -> None:
        """Stop dispatching (draining within ``grace_s``) and let the lock go."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.active:
            await self._janitor.stop()
            await self._dispatcher.stop(grace_s)
            self.active = False
            self._mark(f"{_STOPPED}{time.time()}")
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None

    async def _take_over(self) -> bool:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._mark(f"{_DISPATCHING}{os.getpid()}")
        await self._dispatcher.start()
        await self._janitor.start()
        self.active = True
        return True

    async def _wait_turn(self) -> None:
        while self._handed_back_recently() or not await self._take_over():
            await asyncio.sleep(self._retry_s)
        log.info("dispatcher_took_over", pid=os.getpid())
        await self._watch()

    def _mark(self, state: str) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, state.encode(), 0)

    def _handed_back_recently(self) -> bool:
        if self._fd is None:
            return False
        state = os.pread(self._fd, 64, 0).decode(errors="replace")
        if not state.startswith(_STOPPED):
            return False  # its holder died, or never said anything
        try:
            stopped_s = float(state.removeprefix(_STOPPED))
        except ValueError:
            return False
        return time.time() - stopped_s < self._handback_s

    async def _watch(self) -> None:
        if self._watch_s is None:
            return
        seen = await self._outbox.data_version()
        while True:
            await asyncio.sleep(self._watch_s)
            try:
                now = await self._outbox.data_version()
            except Exception:
                log.exception("data_version_failed")
                continue
            if now != seen:
                seen = now
                self._dispatcher.notify()
