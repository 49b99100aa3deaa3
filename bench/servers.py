"""The servers under test: notifier serve, and ceiling (a)'s Litestar app."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import HERE, HOST, Process, free_port, read_query, start, wait_ready

ENV_PREFIX = "NOTIFIER_"


def notifier_env(settings: dict[str, str]) -> dict[str, str]:
    """Return this environment without NOTIFIER_* variables, plus ``settings``.

    Each settings key is a config key path joined by underscores, such as
    ``dispatcher_batch_size``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + k.upper(): str(v) for k, v in settings.items()})
    return env


# Set only where this notifier has the key: request throttling would cap every
# figure at a few requests per second; the suite measures the engine.
OPTIONAL_SETTINGS = {
    "throttle_send_per_minute": "0",
    "throttle_read_per_minute": "0",
    "throttle_admin_per_minute": "0",
}


def known_settings() -> set[str] | None:
    """Return notifier's config keys as settings names, or None if unknown."""
    try:
        from notifier.config import env_names
    except ImportError:
        return None
    return {name.removeprefix(ENV_PREFIX).lower() for name in env_names()}


@dataclass
class Notifier:
    """A running ``notifier serve`` on a database of its own."""

    process: Process
    port: int
    db_path: Path
    settings: dict[str, str] = field(default_factory=dict)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only query on the server's outbox file."""
        return read_query(self.db_path, sql, params)

    def stop(self) -> None:
        """Stop the server by its PID."""
        self.process.stop()


def start_notifier(
    workdir: Path,
    settings: dict[str, str],
    *,
    cpu: int | None,
    db_path: Path | None = None,
) -> Notifier:
    """Start ``notifier serve`` in ``workdir`` (no notifier.toml there) and wait.

    The outbox is ``workdir/notifier.db`` unless ``db_path`` names a prepared one.
    """
    port = free_port()
    db_path = db_path or workdir / "notifier.db"
    known = known_settings()
    optional = {
        k: v for k, v in OPTIONAL_SETTINGS.items() if known is None or k in known
    }
    merged = {
        **optional,
        "server_host": HOST,
        "server_port": str(port),
        "database_path": str(db_path),
        "database_synchronous": "full",
        "emulator_inbox_path": str(workdir / "inbox.db"),
        "dispatcher_shutdown_grace_s": "2",
        "logging_format": "json",
        **settings,
    }
    process = start(
        "notifier",
        [sys.executable, "-m", "notifier", "serve"],
        cwd=workdir,
        env=notifier_env(merged),
        cpu=cpu,
    )
    try:
        wait_ready(process, port)
    except BaseException:
        process.stop()
        raise
    return Notifier(process, port, db_path, merged)


def start_ceiling_app(workdir: Path, *, cpu: int | None) -> tuple[Process, int]:
    """Start ceiling (a), the Litestar no-store endpoint, and wait until it answers."""
    port = free_port()
    process = start(
        "ceiling-app",
        [sys.executable, str(HERE / "ceiling_app.py"), "--port", str(port)],
        cwd=workdir,
        cpu=cpu,
    )
    try:
        wait_ready(process, port)
    except BaseException:
        process.stop()
        raise
    return process, port
