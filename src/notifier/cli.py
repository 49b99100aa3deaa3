"""The ``notifier`` console script: serve, check-config, backup, stats."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import structlog
import uvicorn

from notifier import __version__
from notifier.config import Config, Resolved, resolve
from notifier.domain.errors import ConfigError
from notifier.logging import configure

_SECRET_WORDS = ("secret", "password", "token")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: $NOTIFIER_CONFIG, else ./notifier.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Message dispatch with emulated Telegram, WhatsApp and Viber.",
    )
    parser.add_argument(
        "--version", action="version", version=f"notifier {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP API and the dispatcher",
        description="Run the HTTP API and the dispatcher in one process until "
        "SIGTERM or Ctrl-C; sends in flight get dispatcher.shutdown_grace_s to end.",
    )
    commands.add_parser(
        "check-config",
        parents=[common],
        help="print the resolved config and where each value came from",
        description="Validate the config file and NOTIFIER_* variables, then print "
        "every key with its value and its source (default, file or environment). "
        "Exits 2 if the config is invalid.",
    )
    backup = commands.add_parser(
        "backup",
        parents=[common],
        help="copy the live database to a new file",
        description="Write a consistent, compacted copy of the outbox (VACUUM INTO) "
        "while the service keeps running. The target must not exist.",
    )
    backup.add_argument("path", metavar="PATH", help="the new file for the outbox copy")
    backup.add_argument(
        "--inbox", metavar="PATH", help="also copy the emulated inboxes to this file"
    )
    commands.add_parser(
        "stats",
        parents=[common],
        help="print delivery counts as JSON",
        description="Print the same counts as GET /v1/stats, read from the database "
        "directly, so it works while the service is down.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        resolved = resolve(args.config)
    except ConfigError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    commands: dict[str, Callable[[argparse.Namespace, Resolved], int]] = {
        "serve": lambda _, r: serve(r.config),
        "check-config": lambda _, r: check_config(r),
        "backup": backup,
        "stats": lambda _, r: stats(r.config),
    }
    return commands[args.command](args, resolved)


def serve(config: Config) -> int:
    """Serve until stopped; the dispatcher drains on shutdown."""
    from notifier.app import create_app

    configure(config.logging.level, config.logging.format)
    structlog.get_logger("notifier").info(
        "server_starting",
        version=__version__,
        address=f"http://{config.server.host}:{config.server.port}",
        database=config.database.path,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.server.host,
            port=config.server.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=math.ceil(config.dispatcher.shutdown_grace_s),
        )
    )
    server.run()
    return 0 if server.started else 1


def check_config(resolved: Resolved) -> int:
    """Print every key, its value (secrets masked) and its source."""
    rows = []
    for key, value, source in resolved.values():
        shown = "********" if any(w in key for w in _SECRET_WORDS) else value
        rows.append((key, json.dumps(shown), source))
    width = max(len(k) + len(v) for k, v, _ in rows) + 3
    for key, value, source in rows:
        print(f"{key} = {value}".ljust(width) + f"# {source}")
    return 0


def backup(args: argparse.Namespace, resolved: Resolved) -> int:
    """Copy the outbox (and optionally the inbox) with VACUUM INTO."""
    config = resolved.config
    pairs = [(config.database.path, args.path)]
    if args.inbox:
        pairs.append((config.emulator.inbox_path, args.inbox))
    for source, target in pairs:
        if not Path(source).exists():
            print(f"notifier: there is no database at {source!r}.", file=sys.stderr)
            return 1
        if Path(target).exists():
            print(f"notifier: {target!r} exists; choose a new path.", file=sys.stderr)
            return 1
        started = time.perf_counter()
        try:
            with sqlite3.connect(source) as db:
                db.execute("PRAGMA busy_timeout = 10000")
                db.execute("VACUUM INTO ?", (target,))
        except sqlite3.Error as exc:
            print(
                f"notifier: could not copy {source!r} to {target!r}: {exc}.",
                file=sys.stderr,
            )
            return 1
        took_s = time.perf_counter() - started
        size = Path(target).stat().st_size
        print(f"copied {source} to {target}: {size} bytes in {took_s:.2f} s")
    return 0


def stats(config: Config) -> int:
    """Print the outbox's counts as JSON."""
    from notifier.api.schemas import StatsOut
    from notifier.storage.sqlite import SqliteOutbox

    async def read() -> StatsOut:
        outbox = await SqliteOutbox.open(
            config.database.path, config.database.synchronous
        )
        try:
            now_ms = int(time.time() * 1000)
            return StatsOut.of(await outbox.stats(now_ms), now_ms)
        finally:
            await outbox.close()

    if not Path(config.database.path).exists():
        print(
            f"notifier: there is no database at {config.database.path!r}.",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(msgspec.to_builtins(asyncio.run(read())), indent=2))
    return 0
