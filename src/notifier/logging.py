"""structlog set-up: JSON lines for machines, coloured lines for a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import structlog

Format = Literal["auto", "json", "console"]


def configure(level: str = "info", fmt: Format = "auto") -> None:
    """Route structlog and the standard library's loggers to stderr in one format."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
    ]
    text_renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_dumps_text)
    )
    renderer = text_renderer
    factory: Callable[..., Any] = structlog.PrintLoggerFactory(sys.stderr)
    binary = getattr(sys.stderr, "buffer", None)
    if fmt == "json" and binary is not None:
        # Bytes straight from msgspec to the file: no decode, no text layer.
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        factory = structlog.BytesLoggerFactory(binary)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                text_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _Stamper:
    """Adds ``timestamp``, ISO 8601 in UTC to the microsecond.

    structlog's TimeStamper builds a datetime per line; this formats each second
    once and appends the microseconds, which costs a fifth as much.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: object, __: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        """Stamp the event with the current time."""
        now_us = time.time_ns() // 1000
        second, micros = divmod(now_us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{micros:06d}Z"
        return event


_timestamp = _Stamper()
_encoder = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event: object, **_: object) -> bytes:
    """Serialise a log event with msgspec: several times faster than json.dumps."""
    return _encoder.encode(event)


def _dumps_text(event: object, **_: object) -> str:
    return _encoder.encode(event).decode()
