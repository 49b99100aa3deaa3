"""Ceiling (a): Litestar decodes notifier's send request and answers 202.

It runs under uvicorn with the settings notifier's ``serve`` uses (see
src/notifier/cli.py), so the gap between it and notifier is what notifier does
beyond HTTP and JSON: validation, storage and dispatch.

Run by the suite as ``python bench/ceiling_app.py --port P``.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, Request, get, post


class Recipient(msgspec.Struct, forbid_unknown_fields=True):
    """One recipient, as in notifier's request body."""

    messenger: str
    id: str
    send_at: datetime | None = None


class SendMessage(msgspec.Struct, forbid_unknown_fields=True):
    """The body of POST /v1/messages, as notifier's API defines it."""

    text: str
    recipients: list[Recipient]
    send_at: datetime | None = None


_DECODER = msgspec.json.Decoder(SendMessage)


@post("/v1/messages", status_code=202)
async def accept(request: Request[Any, Any, Any]) -> dict[str, int]:
    """Decode the body and answer 202 without storing anything."""
    body = _DECODER.decode(await request.body())
    return {"recipients": len(body.recipients)}


@get("/health/live")
async def live() -> dict[str, str]:
    """Answer 200 while the process serves requests."""
    return {"status": "ok"}


def main() -> None:
    """Serve the ceiling app on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    app = Litestar(route_handlers=[accept, live], logging_config=None)
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    ).run()


if __name__ == "__main__":
    main()
