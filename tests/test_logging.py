"""The log set-up, run in a child process so that its global config stays there."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from notifier.logging import _Lines, _LinesHandler

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
    return _stderr_of(_SCRIPT, level, fmt)


def _stderr_of(script: str, *args: str) -> list[str]:
    """Run ``script`` in a fresh interpreter and return its stderr's lines."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
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
    lines = _stderr_of(_LOOP_SCRIPT)

    events = [json.loads(line)["event"] for line in lines]
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


def test_lines_go_out_in_writes_of_whole_lines_no_longer_than_a_pipe_takes_whole() -> (
    None
):
    file = _Recorder()
    lines = _Lines(file)  # type: ignore[arg-type]
    long = b"x" * 5000
    for n in range(40):
        lines._pending.append(b"%03d" % n + b"y" * 196)  # 200 bytes with its \n
    lines._pending.append(long)

    lines.flush()

    assert b"".join(file.writes) == b"".join(
        [b"%03d" % n + b"y" * 196 + b"\n" for n in range(40)] + [long + b"\n"]
    )
    assert all(w.endswith(b"\n") for w in file.writes)
    assert [len(w) for w in file.writes[:-1]] == [4000, 4000]  # 20 lines of 200
    assert file.writes[-1] == long + b"\n"  # alone: no write could keep it whole


class _Closed:
    """A stream whose reader is gone."""

    def write(self, data: bytes) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass


def test_lines_to_a_stream_that_cannot_be_written_are_dropped_quietly() -> None:
    lines = _Lines(_Closed())  # type: ignore[arg-type]

    lines.msg(b"lost")
    lines.msg(b"lost too")

    assert lines._pending == []


async def test_a_standard_library_record_is_written_at_once_after_waiting_lines() -> (
    None
):
    file = _Recorder()
    lines = _Lines(file)  # type: ignore[arg-type]
    handler = _LinesHandler(lines)
    record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, "bye", (), None)

    lines.msg(b"queued")
    handler.emit(record)

    assert b"".join(file.writes) == b"queued\nbye\n"


_EXCEPTION_SCRIPT = """
import logging
from notifier.logging import configure
configure("info", "json")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("asyncio").exception("Exception in callback")
"""


def test_configure_json_writes_a_standard_library_records_traceback() -> None:
    [line] = [json.loads(line) for line in _stderr_of(_EXCEPTION_SCRIPT)]
    assert line["event"] == "Exception in callback"
    assert "ZeroDivisionError: division by zero" in line["exception"]
    assert "Traceback (most recent call last)" in line["exception"]
