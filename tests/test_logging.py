"""The log set-up, run in a child process so that its global config stays there."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

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
