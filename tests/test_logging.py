"""The log set-up, run in a child process so that its global config stays there."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from notifier.logging import _Lines

_SCRIPT = """
import logging, sys, structlog
from notifier.logging import configure
configure(sys.argv[1], sys.argv[2])
log = structlog.get_logger("notifier.test")
log.debug("loop_ticked")
log.info("delivery_sent", delivery_id="d-1", attempt=2, sent_at=object())
logging.getLogger("uvicorn.error").warning("Started server process")
"""


def _run(level: str, fmt: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, level, fmt],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stderr.splitlines()


def test_configure_json_writes_one_object_per_event_with_an_iso_utc_time() -> None:
    before = datetime.now(UTC)

    lines = [json.loads(line) for line in _run("info", "json")]

    after = datetime.now(UTC)
    ours, library = lines
    assert ours["event"] == "delivery_sent"
    assert ours["level"] == "info"
    assert (ours["delivery_id"], ours["attempt"]) == ("d-1", 2)
    assert ours["sent_at"].startswith("<object object at")  # unknown types as repr
    stamp = datetime.strptime(ours["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    stamp = stamp.replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= stamp <= after
    assert library["event"] == "Started server process"
    assert library["level"] == "warning"
    assert library["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("level", "events"),
    [
        ("debug", ["loop_ticked", "delivery_sent", "Started server process"]),
        ("warning", ["Started server process"]),  # both loggers filter alike
    ],
)
def test_configure_level_filters_structlog_and_stdlib_events(
    level: str, events: list[str]
) -> None:
    lines = _run(level, "json")

    assert [json.loads(line)["event"] for line in lines] == events


def test_configure_console_writes_readable_lines() -> None:
    lines = _run("info", "console")

    assert len(lines) == 2
    assert "delivery_sent" in lines[0]
    assert "d-1" in lines[0]
    assert not lines[0].startswith("{")


class _Recorder:
    """A binary file that remembers each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        return len(data)

    def flush(self) -> None:
        pass


async def test_lines_of_one_loop_turn_are_written_together_after_it() -> None:
    file = _Recorder()
    lines = _Lines(file)  # type: ignore[arg-type]

    lines.msg(b'{"event":"a"}')
    lines.msg(b'{"event":"b"}')
    before = list(file.writes)
    await asyncio.sleep(0)

    assert before == []
    assert file.writes == [b'{"event":"a"}\n{"event":"b"}\n']


def test_lines_outside_a_loop_are_written_at_once() -> None:
    file = _Recorder()
    lines = _Lines(file)  # type: ignore[arg-type]

    lines.msg(b"one")
    lines.msg(b"two")

    assert file.writes == [b"one\n", b"two\n"]


async def test_a_line_from_another_thread_writes_the_waiting_lines_first() -> None:
    file = _Recorder()
    lines = _Lines(file)  # type: ignore[arg-type]

    lines.msg(b"loop")
    await asyncio.to_thread(lines.msg, b"thread")
    await asyncio.sleep(0)

    assert b"".join(file.writes) == b"loop\nthread\n"


_LOOP_SCRIPT = """
import asyncio, logging, sys, structlog
from notifier.logging import configure
configure("info", "json")
log = structlog.get_logger("notifier.test")

async def main():
    log.info("first")
    logging.getLogger("uvicorn.error").warning("second")
    log.info("third")

asyncio.run(main())
log.info("fourth")
"""


def test_configure_json_keeps_order_across_loggers_and_writes_all_before_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOOP_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert events == ["first", "second", "third", "fourth"]


def test_lines_left_by_a_loop_that_stopped_go_out_with_the_next_loops() -> None:
    file = _Recorder()
    lines = _Lines(file)  # type: ignore[arg-type]
    first = asyncio.new_event_loop()
    first.call_soon(lines.msg, b"left")
    first.call_soon(first.stop)
    first.run_forever()  # stops before the flush it scheduled has run
    first.close()

    async def log_again() -> None:
        lines.msg(b"next")
        await asyncio.sleep(0)

    asyncio.run(log_again())

    assert b"".join(file.writes) == b"left\nnext\n"
