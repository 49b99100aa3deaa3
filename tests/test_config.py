"""config.load: file, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.config import Config, load
from notifier.domain.errors import ConfigError

REPO_TOML = Path(__file__).resolve().parents[1] / "notifier.toml"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty directory, so no stray notifier.toml is read."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    """Write a TOML file and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


def test_load_without_file_gives_defaults() -> None:
    config = load(environ={})

    assert config == Config()
    assert config.server.port == 8000
    assert config.dispatcher.max_attempts == 5


def test_load_reads_the_given_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "custom.toml",
        "[server]\nport = 9001\n"
        "[dispatcher]\nmax_attempts = 7\n"
        "[emulator.viber]\nlatency_ms = 0\n",
    )

    config = load(path, environ={})

    assert config.server.port == 9001
    assert config.server.host == "127.0.0.1"
    assert config.dispatcher.max_attempts == 7
    assert config.emulator.viber.latency_ms == 0
    assert config.emulator.telegram.latency_ms == 20


def test_load_reads_notifier_toml_in_the_working_directory(tmp_path: Path) -> None:
    write(tmp_path / "notifier.toml", "[server]\nport = 9002\n")

    config = load(environ={})

    assert config.server.port == 9002


def test_load_env_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[server]\nport = 9001\nhost = "0.0.0.0"\n')
    environ = {"NOTIFIER_SERVER_PORT": "9003", "NOTIFIER_DATABASE_PATH": "x.db"}

    config = load(path, environ=environ)

    assert config.server.port == 9003
    assert config.server.host == "0.0.0.0"
    assert config.database.path == "x.db"


def test_load_env_overrides_a_nested_emulator_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[emulator.telegram]\nlatency_ms = 500\n")
    environ = {
        "NOTIFIER_EMULATOR_TELEGRAM_LATENCY_MS": "0",
        "NOTIFIER_EMULATOR_TELEGRAM_TRANSIENT_ERROR_RATE": "0.25",
    }

    config = load(path, environ=environ)

    assert config.emulator.telegram.latency_ms == 0
    assert config.emulator.telegram.transient_error_rate == 0.25
    assert config.emulator.whatsapp.latency_ms == 20


def test_load_ignores_variables_without_the_prefix() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "SERVER_PORT": "abc"}

    config = load(environ=environ)

    assert config == Config()


def test_load_rejects_an_unknown_env_var() -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_SERVER_PROT"):
        load(environ={"NOTIFIER_SERVER_PROT": "9000"})


def test_load_rejects_an_unknown_toml_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[server]\nprot = 9000\n")

    with pytest.raises(ConfigError) as caught:
        load(path, environ={})

    assert "server" in str(caught.value)
    assert "prot" in str(caught.value)


def test_load_rejects_an_unknown_toml_section(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[servr]\nport = 9000\n")

    with pytest.raises(ConfigError, match="servr"):
        load(path, environ={})


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"NOTIFIER_SERVER_PORT": "abc"}, "server.port"),  # not a number
        ({"NOTIFIER_SERVER_PORT": "70000"}, "server.port"),  # above 65535
        ({"NOTIFIER_SERVER_PORT": "0"}, "server.port"),  # below 1
        ({"NOTIFIER_DISPATCHER_MAX_ATTEMPTS": "0"}, "dispatcher.max_attempts"),
        ({"NOTIFIER_DISPATCHER_LEASE_S": "0.5"}, "dispatcher.lease_s"),  # < 1 s
        ({"NOTIFIER_LOGGING_LEVEL": "verbose"}, "logging.level"),  # not a level
        (
            {"NOTIFIER_EMULATOR_VIBER_TRANSIENT_ERROR_RATE": "-0.1"},
            "emulator.viber.transient_error_rate",
        ),  # a negative rate
        (
            {"NOTIFIER_EMULATOR_VIBER_PERMANENT_ERROR_RATE": "1.5"},
            "emulator.viber.permanent_error_rate",
        ),  # a rate above 1
    ],
)
def test_load_rejects_a_bad_env_value_naming_key_and_variable(
    environ: dict[str, str], key: str
) -> None:
    (name,) = environ

    with pytest.raises(ConfigError) as caught:
        load(environ=environ)

    assert key in str(caught.value)
    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[server]\nport = "abc"\n', "server.port"),  # not a number
        ("[server]\nport = 70000\n", "server.port"),  # above 65535
        ("[dispatcher]\nbatch_size = -1\n", "dispatcher.batch_size"),  # negative
        ("[emulator.whatsapp]\nlatency_ms = 1.5\n", "emulator.whatsapp.latency_ms"),
        ("server = 5\n", "server"),  # a section that is not a table
    ],
)
def test_load_rejects_a_bad_file_value_naming_key_and_file(
    tmp_path: Path, toml: str, key: str
) -> None:
    path = write(tmp_path / "bad.toml", toml)

    with pytest.raises(ConfigError) as caught:
        load(path, environ={})

    assert key in str(caught.value)
    assert "bad.toml" in str(caught.value)


def test_load_rejects_rates_summing_above_one(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        "[emulator.telegram]\ntransient_error_rate = 0.6\n"
        "rate_limit_rate = 0.3\npermanent_error_rate = 0.2\n",
    )

    with pytest.raises(ConfigError) as caught:
        load(path, environ={})

    assert "emulator.telegram" in str(caught.value)
    assert "at most 1" in str(caught.value)


def test_load_rates_error_from_env_names_the_variable() -> None:
    environ = {
        "NOTIFIER_EMULATOR_TELEGRAM_TRANSIENT_ERROR_RATE": "0.6",
        "NOTIFIER_EMULATOR_TELEGRAM_PERMANENT_ERROR_RATE": "0.6",
    }

    with pytest.raises(ConfigError) as caught:
        load(environ=environ)

    assert "NOTIFIER_EMULATOR_TELEGRAM" in str(caught.value)


def test_load_rejects_backoff_base_above_max() -> None:
    environ = {
        "NOTIFIER_DISPATCHER_BACKOFF_BASE_S": "10",
        "NOTIFIER_DISPATCHER_BACKOFF_MAX_S": "5",
    }

    with pytest.raises(ConfigError, match=r"dispatcher\.backoff_base_s"):
        load(environ=environ)


def test_load_accepts_backoff_base_equal_to_max() -> None:
    environ = {
        "NOTIFIER_DISPATCHER_BACKOFF_BASE_S": "5",
        "NOTIFIER_DISPATCHER_BACKOFF_MAX_S": "5",
    }

    config = load(environ=environ)

    assert config.dispatcher.backoff_base_s == config.dispatcher.backoff_max_s


def test_load_notifier_config_picks_the_file(tmp_path: Path) -> None:
    write(tmp_path / "notifier.toml", "[server]\nport = 9001\n")
    write(tmp_path / "other.toml", "[server]\nport = 9004\n")

    config = load(environ={"NOTIFIER_CONFIG": "other.toml"})

    assert config.server.port == 9004


def test_load_explicit_path_beats_notifier_config(tmp_path: Path) -> None:
    path = write(tmp_path / "given.toml", "[server]\nport = 9005\n")
    write(tmp_path / "other.toml", "[server]\nport = 9004\n")

    config = load(path, environ={"NOTIFIER_CONFIG": "other.toml"})

    assert config.server.port == 9005


@pytest.mark.parametrize(
    ("path", "environ"),
    [
        ("missing.toml", {}),  # named by the caller, as --config does
        (None, {"NOTIFIER_CONFIG": "missing.toml"}),  # named by the environment
    ],
)
def test_load_rejects_a_missing_file(path: str | None, environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"'missing\.toml' does not exist"):
        load(path, environ=environ)


def test_load_rejects_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[server\nport = 1\n")

    with pytest.raises(ConfigError, match=r"broken\.toml' is not valid TOML"):
        load(path, environ={})


def test_load_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[server]\nhost = "café"\n'.encode("latin-1"))

    with pytest.raises(ConfigError, match=r"latin1\.toml"):
        load(path, environ={})


def test_load_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, environ={})


def test_load_shipped_notifier_toml_holds_the_defaults() -> None:
    config = load(REPO_TOML, environ={})

    assert config == Config()
