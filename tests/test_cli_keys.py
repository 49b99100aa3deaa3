"""``notifier keys`` and the production start-up check, run in-process."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from notifier.cli import main
from notifier.config import ENV_PREFIX
from notifier.domain.keys import ApiKey, hash_secret
from notifier.storage.sqlite import SqliteOutbox

TOKEN = re.compile(r"ntf_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_\-]{43})")
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture(autouse=True)
def database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run every command in tmp_path, on a database there, with no other NOTIFIER_*."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "outbox.db"
    monkeypatch.setenv("NOTIFIER_DATABASE_PATH", str(path))
    return path


def stored_keys(path: Path) -> list[ApiKey]:
    async def read() -> list[ApiKey]:
        outbox = await SqliteOutbox.open(path)
        try:
            return await outbox.keys.list_all()
        finally:
            await outbox.close()

    return asyncio.run(read())


def stored_hash(path: Path, key_id: str) -> bytes | None:
    async def read() -> bytes | None:
        outbox = await SqliteOutbox.open(path)
        try:
            found = await outbox.keys.find(key_id)
        finally:
            await outbox.close()
        return None if found is None else found[1]

    return asyncio.run(read())


def create(capsys: pytest.CaptureFixture[str], name: str, *scopes: str) -> str:
    """Create a key; return the token it printed."""
    argv = ["keys", "create", name]
    for scope in scopes:
        argv += ["--scope", scope]
    assert main(argv) == 0
    return capsys.readouterr().out.strip()


# create


def test_keys_create_prints_the_token_once_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["keys", "create", "billing-app", "--scope", "send"])

    out, err = capsys.readouterr()
    assert code == 0
    assert TOKEN.fullmatch(out.strip())
    assert out.count("ntf_") == 1
    assert "ntf_" not in err
    assert "only time" in err


def test_keys_create_stores_the_hash_of_the_printed_secret(
    capsys: pytest.CaptureFixture[str], database: Path
) -> None:
    token = create(capsys, "billing-app", "send", "read")

    match = TOKEN.fullmatch(token)

    assert match
    assert stored_hash(database, match["key_id"]) == hash_secret(match["secret"])
    (key,) = stored_keys(database)
    assert (key.name, sorted(key.scopes)) == ("billing-app", ["read", "send"])


def test_keys_create_writes_no_secret_to_disk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token = create(capsys, "billing-app", "send")

    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

    secret = TOKEN.fullmatch(token)["secret"]  # type: ignore[index]
    assert on_disk
    assert secret.encode() not in on_disk


def test_keys_create_refuses_a_name_taken_already(
    capsys: pytest.CaptureFixture[str], database: Path
) -> None:
    first = create(capsys, "ci", "read")

    code = main(["keys", "create", "ci", "--scope", "admin"])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("notifier: ")
    assert "'ci' exists already" in err
    (key,) = stored_keys(database)
    assert key.key_id == TOKEN.fullmatch(first)["key_id"]  # type: ignore[index]
    assert sorted(key.scopes) == ["read"]


@pytest.mark.parametrize(
    "name",
    [
        "",  # empty
        "_ci",  # starts with an underscore
        ".ci",  # starts with a dot
        "my key",  # a space
        "ci/prod",  # a slash
        "x" * 65,  # one character too long
        "clé",  # not ASCII
    ],
)
def test_keys_create_refuses_a_bad_name(
    capsys: pytest.CaptureFixture[str], database: Path, name: str
) -> None:
    code = main(["keys", "create", name, "--scope", "read"])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "a key name is 1 to 64" in err
    assert repr(name) in err
    assert stored_keys(database) == []


def test_keys_create_takes_a_64_character_name(
    capsys: pytest.CaptureFixture[str], database: Path
) -> None:
    create(capsys, "x" * 64, "read")

    (key,) = stored_keys(database)

    assert key.name == "x" * 64


@pytest.mark.parametrize(
    "scope_args",
    [
        ["--scope", "write"],  # not a scope
        ["--scope", "SEND"],  # scopes are lower case
        [],  # no scope at all
    ],
)
def test_keys_create_refuses_an_unknown_or_missing_scope(
    capsys: pytest.CaptureFixture[str], database: Path, scope_args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["keys", "create", "ci", *scope_args])

    assert exit_info.value.code == 2
    assert "--scope" in capsys.readouterr().err
    assert not database.exists() or stored_keys(database) == []


# list


def test_keys_list_shows_names_scopes_and_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    create(capsys, "billing-app", "send", "read")
    create(capsys, "ops", "admin")

    code = main(["keys", "list"])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert re.fullmatch(
        rf"billing-app\tscopes=read,send\tcreated={TIME}\tlast_used=-\tactive",
        lines[0],
    )
    assert re.fullmatch(
        rf"ops\tscopes=admin\tcreated={TIME}\tlast_used=-\tactive", lines[1]
    )


def test_keys_list_never_shows_a_secret_or_its_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = create(capsys, "billing-app", "send")
    secret = TOKEN.fullmatch(token)["secret"]  # type: ignore[index]
    digest = hash_secret(secret)

    main(["keys", "list"])

    out, err = capsys.readouterr()
    shown = out + err
    assert "billing-app" in out
    assert secret not in shown
    assert digest.hex() not in shown.lower()
    assert "ntf_" not in shown


def test_keys_list_says_nothing_when_there_is_no_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["keys", "list"])

    assert code == 0
    assert capsys.readouterr().out == ""


# revoke


def test_keys_revoke_marks_the_key_revoked(
    capsys: pytest.CaptureFixture[str], database: Path
) -> None:
    create(capsys, "ci", "read")

    code = main(["keys", "revoke", "ci"])

    assert code == 0
    assert capsys.readouterr().out.strip() == "revoked ci"
    (key,) = stored_keys(database)
    assert not key.is_active


def test_keys_list_shows_when_a_key_was_revoked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    create(capsys, "ci", "read")
    main(["keys", "revoke", "ci"])
    capsys.readouterr()

    main(["keys", "list"])

    (line,) = capsys.readouterr().out.splitlines()
    assert re.search(rf"\trevoked {TIME}$", line)


def test_keys_revoke_refuses_an_unknown_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["keys", "revoke", "nobody"])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("notifier: ")
    assert "nobody" in err


# serve in production


def test_serve_in_production_refuses_to_start_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFIER_SERVER_ENVIRONMENT", "production")

    code = main(["serve"])

    err = capsys.readouterr().err
    assert code == 2
    assert "production mode needs at least one API key" in err
    assert "notifier keys create NAME --scope" in err


def test_serve_in_production_refuses_to_start_with_only_revoked_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create(capsys, "old", "send")
    main(["keys", "revoke", "old"])
    capsys.readouterr()
    monkeypatch.setenv("NOTIFIER_SERVER_ENVIRONMENT", "production")

    code = main(["serve"])

    assert code == 2
    assert "notifier keys create" in capsys.readouterr().err
