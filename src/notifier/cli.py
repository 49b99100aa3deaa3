"""The ``notifier`` console script."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import structlog
import uvicorn

from notifier import __version__
from notifier.config import Config, load
from notifier.domain.errors import ConfigError
from notifier.logging import configure


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Message dispatch with emulated Telegram, WhatsApp and Viber.",
    )
    parser.add_argument(
        "--version", action="version", version=f"notifier {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API and the dispatcher in one process",
        description="Run the HTTP API and the dispatcher until SIGTERM or Ctrl-C.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: $NOTIFIER_CONFIG, else ./notifier.toml)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    configure(config.logging.level, config.logging.format)
    return serve(config)


def serve(config: Config) -> int:
    """Serve until stopped; the dispatcher drains on shutdown."""
    from notifier.app import create_app

    structlog.get_logger("notifier").info(
        "server_starting",
        version=__version__,
        host=config.server.host,
        port=config.server.port,
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
