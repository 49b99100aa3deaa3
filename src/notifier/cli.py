"""The ``notifier`` console script: serve, check-config, backup, stats."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import uvicorn

from notifier import __version__
from notifier.config import CONFIG_ENV, Config, Resolved, resolve
from notifier.domain.errors import ConfigError, Conflict, NotFound, StoreError
from notifier.domain.keys import ApiKey, Scope, check_name, new_key
from notifier.logging import configure
from notifier.metrics import MULTIPROCESS_DIR_ENV

if TYPE_CHECKING:
    from notifier.storage.sqlite import SqliteOutbox

_SECRET_WORDS = ("secret", "password", "token")
# How long serve --workers N waits for its dispatcher to take the lock.
_DISPATCHER_START_S = 15.0
# uvicorn's exit code when the server cannot start (the port taken, say).
_STARTUP_FAILED = 3


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
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP API and the dispatcher",
        description="Run the HTTP API and the dispatcher in one process until "
        "SIGTERM or Ctrl-C; sends in flight get dispatcher.shutdown_grace_s to end.",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the port and the database "
        "(default: server.workers, 1)",
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
    _add_keys(commands, common)
    commands.add_parser(
        "stats",
        parents=[common],
        help="print delivery counts as JSON",
        description="Print the same counts as GET /v1/stats, read from the database "
        "directly, so it works while the service is down.",
    )
    return parser


def _add_keys(commands: Any, common: argparse.ArgumentParser) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Manage the API keys kept (as hashes) in the database. "
        "Changes apply to a running service at once.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        parents=[common],
        help="make a key and print its secret once",
        description="Make a key with the given scopes and print its secret; it "
        "is not stored and cannot be shown again.",
    )
    create.add_argument("name", metavar="NAME", help="a unique name, e.g. billing-app")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="send: POST messages; read: GET anything; admin: cancel, retry, "
        "emulator settings (repeat for several)",
    )
    actions.add_parser(
        "list",
        parents=[common],
        help="show names, scopes and times, never secrets",
        description="Show every key with its scopes, creation and last use.",
    )
    revoke = actions.add_parser(
        "revoke",
        parents=[common],
        help="revoke a key at once",
        description="Revoke a key; requests with it are refused from now on.",
    )
    revoke.add_argument("name", metavar="NAME")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (| head); what it wanted is already out.
        sys.stderr.close()
        return 0


def _run(args: argparse.Namespace) -> int:
    try:
        resolved = resolve(args.config)
    except ConfigError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    commands: dict[str, Callable[[argparse.Namespace, Resolved], int]] = {
        "serve": lambda a, r: serve(r.config, a.config, a.workers),
        "check-config": lambda _, r: check_config(r),
        "backup": backup,
        "stats": lambda _, r: stats(r.config),
        "keys": keys,
    }
    try:
        return commands[args.command](args, resolved)
    except (StoreError, sqlite3.DatabaseError) as exc:
        print(f"notifier: cannot use the database: {exc}", file=sys.stderr)
        return 4


def serve(config: Config, path: str | None = None, workers: int | None = None) -> int:
    """Serve until stopped; the dispatcher drains on shutdown."""
    from notifier.app import create_app

    # A file that is not a database, or one from a newer notifier, stops the
    # start here with a plain message, before any worker tries it. This also
    # brings an older file's schema up to date, once, in this process.
    asyncio.run(_check_files(config))
    if config.is_production and not asyncio.run(_has_active_key(config)):
        print(
            "notifier: production mode needs at least one API key; create one with\n"
            "  notifier keys create NAME --scope send --scope read",
            file=sys.stderr,
        )
        return 2
    configure(config.logging.level, config.logging.format)
    if _port_is_free(config.server.host, config.server.port):
        # Not when another server holds the port: this start is bound to fail.
        asyncio.run(_forget_emulator_changes(config))
    structlog.get_logger("notifier").info(
        "server_starting",
        version=__version__,
        address=f"http://{config.server.host}:{config.server.port}",
        database=config.database.path,
        mode=config.server.environment,
        auth="required" if config.auth_required else "optional",
        workers=workers or config.server.workers,
    )
    settings: dict[str, Any] = {
        "host": config.server.host,
        "port": config.server.port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": math.ceil(config.dispatcher.shutdown_grace_s),
    }
    if (workers or config.server.workers) > 1:
        return _serve_workers(config, workers or config.server.workers, path, settings)
    server = uvicorn.Server(uvicorn.Config(create_app(config), **settings))
    # Once it has shut down, uvicorn raises the SIGTERM or SIGINT it handled
    # again; with the default handlers that kills the process (exit 143) after
    # a clean drain. These no-op handlers let serve return 0 instead.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run()
    return 0 if server.started else 1


def _port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet (a bind test, as uvicorn binds)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError:
        return False
    return True


async def _forget_emulator_changes(config: Config) -> None:
    """Emulator settings changed through the API last until the server restarts."""
    from notifier.messengers.inbox import Inbox

    inbox = await Inbox.open(config.emulator.inbox_path)
    try:
        await inbox.forget_settings()
    finally:
        await inbox.close()


def _serve_workers(
    config: Config, workers: int, path: str | None, settings: dict[str, Any]
) -> int:
    """Run N uvicorn workers that accept, beside one process that dispatches."""
    if path is not None:
        os.environ[CONFIG_ENV] = str(Path(path).resolve())
    # Each process reads its config again; --workers must reach it too.
    os.environ["NOTIFIER_SERVER_WORKERS"] = str(workers)
    # Every process's metrics go to files here, so that a scrape of any worker
    # shows them all, the dispatcher's included; a fresh directory per run.
    metrics_dir = tempfile.mkdtemp(prefix="notifier-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    dispatcher = _start_dispatcher(config)
    # In this process the only uvicorn code is its supervisor of the workers,
    # and it logs an error only when it gives up (uvicorn >= 0.50 stops when a
    # restarted worker fails to start); it returns as it does after SIGTERM.
    gave_up = _ErrorCount()
    logging.getLogger("uvicorn.error").addHandler(gave_up)
    try:
        app = "notifier.app:create_app_from_env"
        uvicorn.run(app, factory=True, workers=workers, **settings)
    finally:
        # The workers are gone: now the dispatcher drains and stops.
        if dispatcher.pid is not None and dispatcher.is_alive():
            os.kill(dispatcher.pid, signal.SIGTERM)
        dispatcher.join(config.dispatcher.shutdown_grace_s + 10)
        if dispatcher.is_alive():
            dispatcher.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return _STARTUP_FAILED if gave_up.count else 0


class _ErrorCount(logging.Handler):
    """Counts the error records that reach it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _start_dispatcher(config: Config) -> multiprocessing.process.BaseProcess:
    """Start the dispatch-only process; wait until it holds the dispatch lock."""
    from notifier.dispatcher import process
    from notifier.dispatcher.role import dispatching_pid, lock_path_for

    child = multiprocessing.get_context("spawn").Process(
        target=process.run, name="notifier-dispatcher"
    )
    child.start()
    lock = lock_path_for(str(config.database.path))
    deadline = time.monotonic() + _DISPATCHER_START_S
    while lock and child.is_alive() and time.monotonic() < deadline:
        # Should it not get there, a worker takes the lock (see DispatchRole).
        if dispatching_pid(lock) == child.pid:
            break
        time.sleep(0.05)
    return child


def check_config(resolved: Resolved) -> int:
    """Print every key, its value (secrets masked) and its source."""
    rows = []
    for key, value, source in resolved.values():
        shown = "********" if any(w in key for w in _SECRET_WORDS) else value
        rows.append((key, json.dumps(shown), source))
    width = max(len(k) + len(v) for k, v, _ in rows) + 3
    for key, value, source in rows:
        print(f"{key} = {value}".ljust(width) + f"  # {source}")
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
    for source, target in pairs:
        started = time.perf_counter()
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(source)) as db:
                db.execute("PRAGMA busy_timeout = 10000")
                db.execute("VACUUM INTO ?", (target,))
        except (sqlite3.Error, OSError) as exc:
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

    async def read() -> StatsOut:
        outbox = await _open(config)
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


def keys(args: argparse.Namespace, resolved: Resolved) -> int:
    """Create, list or revoke API keys."""
    try:
        return asyncio.run(_keys(args, resolved.config))
    except (NotFound, Conflict, ValueError) as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 1


async def _keys(args: argparse.Namespace, config: Config) -> int:
    outbox = await _open(config)
    try:
        now_ms = int(time.time() * 1000)
        if args.action == "create":
            new = new_key()
            scopes = frozenset(Scope(s) for s in args.scopes)
            await outbox.keys.create(check_name(args.name), scopes, new, now_ms)
            print(new.token)
            print(
                f"Key {args.name!r} created with scopes {', '.join(sorted(scopes))}. "
                "This is the only time its secret is shown.",
                file=sys.stderr,
            )
        elif args.action == "list":
            for key in await outbox.keys.list_all():
                print(_describe(key))
        else:
            key = await outbox.keys.revoke(args.name, now_ms)
            print(f"revoked {key.name}")
    finally:
        await outbox.close()
    return 0


def _describe(key: ApiKey) -> str:
    def when(ms: int | None) -> str:
        if ms is None:
            return "-"
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

    state = "active" if key.is_active else f"revoked {when(key.revoked_at_ms)}"
    return (
        f"{key.name}\tscopes={','.join(sorted(key.scopes))}\t"
        f"created={when(key.created_at_ms)}\tlast_used={when(key.last_used_at_ms)}\t"
        f"{state}"
    )


async def _open(config: Config, *, upgrade: bool = False) -> SqliteOutbox:
    """Open the outbox; only serve upgrades an older file (see migrating)."""
    from notifier.storage.sqlite import SqliteOutbox

    path = config.database.path
    with _naming(path):
        return await SqliteOutbox.open(
            path, config.database.synchronous, upgrade=upgrade
        )


async def _check_files(config: Config) -> None:
    """Open and close the outbox and the inbox; raise what stops either.

    An outbox of an older notifier is brought up to date, unless a process
    holds its dispatch lock: that one may be the older notifier, which would
    go on writing the old dedupe keys into the upgraded file.
    """
    from notifier.dispatcher.role import lock_path_for
    from notifier.messengers.inbox import Inbox
    from notifier.storage.sqlite.migrating import SCHEMA_VERSION

    path = config.database.path
    await (await _open(config)).close()
    if path != ":memory:" and _schema_version(path) < SCHEMA_VERSION:
        if _held_elsewhere(lock_path_for(path)):
            raise StoreError(
                f"{path}: an older notifier made this file and a process still "
                "serves it; stop that one, then start this one to upgrade the file"
            )
        await (await _open(config, upgrade=True)).close()
    with _naming(config.emulator.inbox_path):
        await (await Inbox.open(config.emulator.inbox_path)).close()


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """Turn what stops a file from being used into a StoreError that names it."""
    try:
        yield
    except (StoreError, sqlite3.DatabaseError, OSError) as exc:
        raise StoreError(f"{path}: {exc}") from exc


def _schema_version(path: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
    return version


def _held_elsewhere(lock_path: str | None) -> bool:
    """Whether another process holds this flock(2) lock file now."""
    if lock_path is None or not Path(lock_path).exists():
        return False
    with _naming(lock_path):
        fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # which also lets go of the lock, if taken
    return False


async def _has_active_key(config: Config) -> bool:
    outbox = await _open(config)
    try:
        return any(k.is_active for k in await outbox.keys.list_all())
    finally:
        await outbox.close()
