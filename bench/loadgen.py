"""A closed-loop HTTP/1.1 load generator: a separate process, one core, keep-alive.

Run by the suite as ``python bench/loadgen.py --port P --body single ...``; it
prints one JSON object on stdout. It needs only the standard library (uvloop is
used when installed) so that any machine with Python can run the suite.

Each of ``--connections`` connections sends one POST, waits for the whole
answer, and sends the next: the offered load adapts to the server, and the
latency of every answered request is kept. Requests answered during the first
``--warmup`` seconds are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable

TEXT = "Your order 4711 has shipped and will arrive tomorrow between 9 and 12."
_MAX_RECONNECTS = 100


def single_body(n: int) -> bytes:
    """Return a send request to one recipient that no other request names."""
    return _body([n])


def fanout_body(n: int, size: int) -> bytes:
    """Return a send request to ``size`` recipients that no other request names."""
    return _body(range(n * size, (n + 1) * size))


def _body(numbers: range | list[int]) -> bytes:
    recipients = ",".join(_recipient(i) for i in numbers)
    return f'{{"text":"{TEXT}","recipients":[{recipients}]}}'.encode()


def recipient(i: int) -> tuple[str, str]:
    """Return recipient ``i``: messengers in turn, ids valid and canonical."""
    kind = i % 3
    if kind == 0:
        return "telegram", str(1_000_000_000 + i)
    if kind == 1:
        return "whatsapp", f"+4470{i:08d}"
    return "viber", f"bench-{i}"


def _recipient(i: int) -> str:
    messenger, recipient_id = recipient(i)
    return f'{{"messenger":"{messenger}","id":"{recipient_id}"}}'


def body_factory(kind: str, seed: int) -> Callable[[int], bytes]:
    """Return n -> request body for ``single`` or ``fanout:<recipients>``.

    ``seed`` shifts the numbering so that runs against one database never
    repeat a recipient.
    """
    if kind == "single":
        return lambda n: single_body(seed + n)
    name, _, size = kind.partition(":")
    if name != "fanout" or not size.isdigit() or int(size) < 1:
        raise SystemExit(f"--body must be single or fanout:<n>, got {kind!r}")
    width = int(size)
    return lambda n: fanout_body(seed + n, width)


class _Stats:
    """Counts and latencies of answered requests, after the warm-up only."""

    def __init__(self) -> None:
        self.counting = False
        self.running = True
        self.latencies_ms: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.sent = 0


class _Connection(asyncio.Protocol):
    """A keep-alive connection: the next request goes when the last is answered."""

    def __init__(
        self,
        request: Callable[[], bytes],
        stats: _Stats,
        closed: asyncio.Future[None],
    ) -> None:
        self._request = request
        self._stats = stats
        self._closed = closed
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._need = -1
        self._status = 0
        self._started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; both write.
        self._transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._buffer.clear()
        self._need = -1
        self._stats.sent += 1
        self._started = time.perf_counter()
        self._transport.write(self._request())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._need < 0 and not self._parse_head():
            return
        if len(self._buffer) < self._need:
            return
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        stats = self._stats
        if stats.counting:
            stats.latencies_ms.append(elapsed_ms)
            stats.statuses[self._status] += 1
        if stats.running:
            self._send()
        elif self._transport is not None:
            self._transport.close()

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).lower()
        self._status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("the server answered without a Content-Length header")
        length_end = head.find(b"\r\n", at + 2)
        length = head[at + 17 : length_end if length_end > 0 else None]
        self._need = end + 4 + int(length.strip())
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stats.running:
            self._stats.errors += 1
        if not self._closed.done():
            self._closed.set_result(None)


async def _keep_connected(
    host: str, port: int, request: Callable[[], bytes], stats: _Stats
) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(_MAX_RECONNECTS):
        closed: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(
                functools.partial(_Connection, request, stats, closed), host, port
            )
        except OSError:
            stats.errors += 1
            await asyncio.sleep(0.05)
            continue
        await closed
        if not stats.running:
            return


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Drive the server for warm-up plus duration seconds; return the figures."""
    make_body = body_factory(args.body, args.seed)
    prefix = (
        f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    counter = iter(range(10**12))

    def request() -> bytes:
        body = make_body(next(counter))
        return b"%sContent-Length: %d\r\n\r\n%s" % (prefix, len(body), body)

    stats = _Stats()
    tasks = [
        asyncio.create_task(_keep_connected(args.host, args.port, request, stats))
        for _ in range(args.connections)
    ]
    await asyncio.sleep(args.warmup)
    stats.counting = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.counting = False
    elapsed = time.perf_counter() - started
    stats.running = False
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
    return _summary(stats, elapsed, args)


def _summary(
    stats: _Stats, elapsed: float, args: argparse.Namespace
) -> dict[str, object]:
    latencies = sorted(stats.latencies_ms)
    accepted = sum(n for status, n in stats.statuses.items() if 200 <= status < 300)
    return {
        "generator": "python",
        "connections": args.connections,
        "seconds": elapsed,
        "requests": len(latencies),
        "accepted": accepted,
        "rate": accepted / elapsed,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": stats.errors,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else None,
        },
    }


def percentile(ordered: list[float], pct: float) -> float | None:
    """Return the nearest-rank percentile of an ascending list, or None if empty."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/messages")
    parser.add_argument("--body", default="single", help="single or fanout:<n>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    return parser


def main() -> None:
    """Parse arguments, run the load and print the summary as JSON."""
    args = _parser().parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the load generator only targets this machine (127.0.0.1)")
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
