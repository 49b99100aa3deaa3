"""The ``notifier`` console script, run in-process: check-config, backup, stats."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from notifier.cli import main
from notifier.config import ENV_PREFIX, env_names
from notifier.domain.ids import new_id
from notifier.domain.models import Messenger, NewMessage, Recipient
from notifier.messengers.inbox import Inbox
from notifier.storage.sqlite import SqliteOutbox

ROW = re.compile(r"^(?P<key>[\w.]+) = (?P<value>.*?)\s*# (?P<source>.+)$")
WRITE_FOR_S = 1.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run every command in tmp_path with no NOTIFIER_* variable set."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_rows(out: str) -> dict[str, tuple[str, str]]:
    """Parse check-config's output into key -> (value as JSON, source)."""
    rows = {}
    for line in out.splitlines():
        match = ROW.match(line)
        assert match, f"not a config row: {line!r}"
        rows[match["key"]] = (match["value"], match["source"])
    return rows


def message(*recipients: Recipient, text: str, send_at_ms: int | None = None):
    now_ms = int(time.time() * 1000)
    return NewMessage(
        id=new_id(now_ms),
        text=text,
        recipients=recipients,
        send_at_ms=now_ms if send_at_ms is None else send_at_ms,
        created_at_ms=now_ms,
    )


# check-config


def test_check_config_names_the_source_of_every_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("notifier.toml").write_text("[dispatcher]\nlease_s = 45\n")
    monkeypatch.setenv("NOTIFIER_SERVER_PORT", "9001")

    code = main(["check-config"])

    rows = config_rows(capsys.readouterr().out)
    assert code == 0
    assert rows["server.port"] == ("9001", "environment NOTIFIER_SERVER_PORT")
    assert rows["dispatcher.lease_s"] == ("45.0", "file notifier.toml")
    assert rows["server.host"] == ('"127.0.0.1"', "default")
    others = {k: s for k, (_, s) in rows.items()}
    del others["server.port"], others["dispatcher.lease_s"]
    assert set(others.values()) == {"default"}


def test_check_config_lists_every_config_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["check-config"])

    keys = set(config_rows(capsys.readouterr().out))
    assert keys == {".".join(path) for path in env_names().values()}
    assert "emulator.viber.latency_ms" in keys


def test_check_config_reads_the_file_named_by_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("elsewhere.toml").write_text('[database]\npath = "/srv/outbox.db"\n')

    code = main(["check-config", "--config", "elsewhere.toml"])

    rows = config_rows(capsys.readouterr().out)
    assert code == 0
    assert rows["database.path"] == ('"/srv/outbox.db"', "file elsewhere.toml")


def test_check_config_prefers_the_environment_to_the_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("notifier.toml").write_text("[server]\nport = 8100\n")
    monkeypatch.setenv("NOTIFIER_SERVER_PORT", "8200")

    main(["check-config"])

    rows = config_rows(capsys.readouterr().out)
    assert rows["server.port"] == ("8200", "environment NOTIFIER_SERVER_PORT")


def test_check_config_puts_a_space_before_every_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["check-config"])

    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if "# " in line and " # " not in line]


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        # above the highest port
        ("NOTIFIER_SERVER_PORT", "70000", "server.port"),
        # leases shorter than a second are refused
        ("NOTIFIER_DISPATCHER_LEASE_S", "0.5", "dispatcher.lease_s"),
        # not a number at all
        ("NOTIFIER_RETENTION_BATCH_SIZE", "many", "retention.batch_size"),
    ],
)
def test_check_config_exits_2_naming_an_invalid_key(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    key: str,
) -> None:
    monkeypatch.setenv(variable, value)

    code = main(["check-config"])

    captured = capsys.readouterr()
    assert code == 2
    assert key in captured.err
    assert variable in captured.err
    assert captured.out == ""


def test_check_config_exits_2_for_a_file_with_a_bad_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("notifier.toml").write_text("[retention]\nfinished_after_days = -1\n")

    code = main(["check-config"])

    err = capsys.readouterr().err
    assert code == 2
    assert "retention.finished_after_days" in err
    assert "notifier.toml" in err


def test_check_config_exits_2_for_an_unknown_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFIER_SERVER_PROT", "9000")

    code = main(["check-config"])

    assert code == 2
    assert "NOTIFIER_SERVER_PROT" in capsys.readouterr().err


def test_check_config_exits_2_for_a_missing_config_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["check-config", "--config", "nowhere.toml"])

    assert code == 2
    assert "nowhere.toml" in capsys.readouterr().err


# --help


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["serve"], "Run the HTTP API and the dispatcher"),
        (["check-config"], "its source"),
        (["backup"], "consistent"),
        (["stats"], "GET /v1/stats"),
        (["keys"], "API keys"),
        (["keys", "create"], "print its secret"),
        (["keys", "list"], "scopes"),
        (["keys", "revoke"], "Revoke a key"),
    ],
)
def test_help_of_each_command_describes_it(
    capsys: pytest.CaptureFixture[str], argv: list[str], phrase: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])

    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out.startswith(f"usage: notifier {' '.join(argv)}")
    assert phrase in " ".join(out.split())


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])

    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for command in ("serve", "check-config", "backup", "stats", "keys"):
        assert command in out


# backup


class Writer(threading.Thread):
    """Accepts messages of three recipients each, in a loop of its own, for a while."""

    def __init__(self, path: Path, run_for_s: float) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.run_for_s = run_for_s
        self.written = 0
        self.busy = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._write())
        except BaseException as exc:
            self.error = exc
        finally:
            self.busy.set()

    async def _write(self) -> None:
        outbox = await SqliteOutbox.open(self.path, "normal")
        deadline = time.monotonic() + self.run_for_s
        try:
            for i in range(1_000_000):
                if time.monotonic() > deadline:
                    break
                recipients = [Recipient(m, f"user{i}") for m in Messenger]
                await outbox.accept(message(*recipients, text=f"text {i}"))
                self.written = i + 1
                if self.written == 50:
                    self.busy.set()
        finally:
            await outbox.close()


def test_backup_copies_a_consistent_database_while_writes_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = Writer(tmp_path / "notifier.db", WRITE_FOR_S)
    writer.start()
    assert writer.busy.wait(10), "the writer never got going"
    target = tmp_path / "backup.db"

    code = main(["backup", str(target)])

    writer.join(10)
    assert not writer.is_alive()
    assert writer.error is None
    assert code == 0
    assert str(target) in capsys.readouterr().out
    with closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (messages,) = copy.execute("SELECT count(*) FROM messages").fetchone()
        per_message = copy.execute(
            "SELECT count(d.id) FROM messages AS m "
            "LEFT JOIN deliveries AS d ON d.message_id = m.id GROUP BY m.id"
        ).fetchall()
    assert 50 <= messages <= writer.written
    # Each accept is one transaction: a copy holds all of it or none of it.
    assert {n for (n,) in per_message} == {3}


def test_backup_refuses_an_existing_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_make_outbox(tmp_path / "notifier.db"))
    target = tmp_path / "backup.db"
    target.write_bytes(b"precious")

    code = main(["backup", str(target)])

    assert code == 1
    assert "exists" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"


def test_backup_says_why_when_the_target_folder_cannot_be_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_make_outbox(tmp_path / "notifier.db"))
    (tmp_path / "backups").write_text("a file, not a folder")

    code = main(["backup", str(tmp_path / "backups" / "copy.db")])

    assert code == 1
    assert "notifier: could not copy" in capsys.readouterr().err


def test_backup_fails_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backup", str(tmp_path / "backup.db")])

    assert code == 1
    assert "no database" in capsys.readouterr().err
    assert not (tmp_path / "backup.db").exists()


def test_backup_copies_the_inbox_too_when_asked(tmp_path: Path) -> None:
    asyncio.run(_make_outbox(tmp_path / "notifier.db"))
    asyncio.run(_make_inbox(tmp_path / "notifier-inbox.db"))

    code = main(
        ["backup", str(tmp_path / "out.db"), "--inbox", str(tmp_path / "in.db")]
    )

    assert code == 0
    with closing(sqlite3.connect(tmp_path / "in.db")) as copy:
        rows = copy.execute("SELECT delivery_id, text FROM inbox").fetchall()
    assert rows == [("d-1", "hello")]
    with closing(sqlite3.connect(tmp_path / "out.db")) as copy:
        assert copy.execute("SELECT count(*) FROM deliveries").fetchone() == (3,)


async def _make_outbox(path: Path) -> None:
    outbox = await SqliteOutbox.open(path, "normal")
    try:
        now_ms = int(time.time() * 1000)
        await outbox.accept(
            message(Recipient(Messenger.TELEGRAM, "42"), text="due now")
        )
        await outbox.accept(
            message(
                Recipient(Messenger.WHATSAPP, "+79991234567"),
                text="in an hour",
                send_at_ms=now_ms + 3_600_000,
            )
        )
        cancelled = await outbox.accept(
            message(Recipient(Messenger.VIBER, "carol"), text="never mind")
        )
        await outbox.cancel(cancelled.deliveries[0].delivery.id, now_ms)
    finally:
        await outbox.close()


async def _make_inbox(path: Path) -> None:
    inbox = await Inbox.open(path)
    try:
        await inbox.add(Messenger.TELEGRAM, "d-1", "42", "hello", 1)
    finally:
        await inbox.close()


# stats


def test_stats_prints_the_counts_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_make_outbox(tmp_path / "notifier.db"))

    code = main(["stats"])

    stats = json.loads(capsys.readouterr().out)
    assert code == 0
    assert stats["deliveries"]["telegram"]["pending"] == 1
    assert stats["deliveries"]["whatsapp"]["pending"] == 1
    assert stats["deliveries"]["viber"]["cancelled"] == 1
    assert stats["totals"] == {
        "pending": 2,
        "sending": 0,
        "sent": 0,
        "failed": 0,
        "cancelled": 1,
    }
    assert (stats["due_now"], stats["scheduled"]) == (1, 1)
    assert stats["oldest_due_age_s"] >= 0
    assert stats["sent_last_minute"] == 0


def test_stats_fails_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["stats"])

    assert code == 1
    assert "no database" in capsys.readouterr().err
    assert not (tmp_path / "notifier.db").exists()


def _not_a_database(path: Path) -> None:
    path.write_bytes(b"not a database, " * 512)


def _from_a_newer_notifier(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")


def _lock_file_cannot_be_opened(path: Path) -> None:
    # Before, the failed open left a database thread that kept the process alive.
    asyncio.run(_make_outbox(path))
    lock = path.with_name(path.name + "-lock")
    lock.unlink()
    lock.mkdir()


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (_not_a_database, "notifier.db: file is not a database"),
        (_from_a_newer_notifier, "notifier.db: the database has schema version 99"),
        (_lock_file_cannot_be_opened, "notifier.db-lock"),
    ],
)
def test_stats_exits_4_naming_a_database_it_cannot_use(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[Path], None],
    said: str,
) -> None:
    spoil(tmp_path / "notifier.db")

    code = main(["stats"])

    assert code == 4
    err = capsys.readouterr().err
    assert err.startswith("notifier: cannot use the database: notifier.db")
    assert said in err


def test_stats_leaves_a_file_of_an_older_notifier_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """That notifier may still be serving it; only serve upgrades."""
    path = tmp_path / "notifier.db"
    asyncio.run(_make_outbox(path))
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 0")

    code = main(["stats"])

    with closing(sqlite3.connect(path)) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert code == 0
    assert json.loads(capsys.readouterr().out)["totals"]["pending"] == 2
    assert version == 0
    assert "dedupe" in tables
    assert "dedupe_v0" not in tables
