"""Settings: notifier.toml, then NOTIFIER_<SECTION>_<KEY> environment overrides."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from notifier.domain.errors import ConfigError
from notifier.messengers.emulator import EmulatorSettings

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

ENV_PREFIX = "NOTIFIER_"
CONFIG_ENV = "NOTIFIER_CONFIG"
DEFAULT_PATH = Path("notifier.toml")


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of every config section: unknown keys are an error, not ignored."""


class ServerConfig(_Section, frozen=True):
    """Where the HTTP API listens."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    environment: Literal["development", "production"] = "development"
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1


class DatabaseConfig(_Section, frozen=True):
    """The outbox database file and how hard it syncs to disk."""

    path: str = "notifier.db"
    synchronous: Literal["full", "normal"] = "full"


class ApiConfig(_Section, frozen=True):
    """Limits on what one request may ask."""

    max_recipients: PositiveInt = 1000
    max_schedule_ahead_days: Positive = 365.0
    max_body_bytes: PositiveInt = 1024 * 1024


class AuthConfig(_Section, frozen=True):
    """Whether /v1 needs a key; production always does."""

    required: bool = False


class ThrottleConfig(_Section, frozen=True):
    """Requests per minute per key (per client address without auth); 0 is off."""

    send_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 600
    read_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 3000
    admin_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 300


class DispatcherConfig(_Section, frozen=True):
    """How the background loop claims, sends and retries."""

    poll_interval_s: Positive = 1.0
    batch_size: PositiveInt = 500
    lease_s: Annotated[float, msgspec.Meta(ge=1)] = 30.0
    max_attempts: PositiveInt = 5
    backoff_base_s: Positive = 1.0
    backoff_max_s: Positive = 300.0
    concurrency: PositiveInt = 500
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0


class RetentionConfig(_Section, frozen=True):
    """How long finished deliveries, dedupe records and idempotency keys stay.

    A value of 0 days keeps them forever.
    """

    finished_after_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    dedupe_window_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    idempotency_key_hours: Positive = 24.0
    interval_s: Positive = 60.0
    batch_size: PositiveInt = 500


class EmulatorConfig(_Section, frozen=True):
    """The emulated messengers: where their inbox lives and how each behaves."""

    inbox_path: str = "notifier-inbox.db"
    telegram: EmulatorSettings = EmulatorSettings()
    whatsapp: EmulatorSettings = EmulatorSettings()
    viber: EmulatorSettings = EmulatorSettings()


class LoggingConfig(_Section, frozen=True):
    """Log level and format; "auto" is JSON unless stderr is a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section, frozen=True):
    """The whole resolved configuration."""

    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    api: ApiConfig = ApiConfig()
    auth: AuthConfig = AuthConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    retention: RetentionConfig = RetentionConfig()
    emulator: EmulatorConfig = EmulatorConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def is_production(self) -> bool:
        """Whether the service runs in production mode."""
        return self.server.environment == "production"

    @property
    def auth_required(self) -> bool:
        """Whether every /v1 request needs a key."""
        return self.is_production or self.auth.required


def env_names(struct: type[msgspec.Struct] = Config) -> dict[str, tuple[str, ...]]:
    """Map every NOTIFIER_* variable name to the config key path it overrides."""
    return {
        ENV_PREFIX + "_".join(path).upper(): path for path in _leaf_paths(struct, ())
    }


def _leaf_paths(
    struct: type[msgspec.Struct], prefix: tuple[str, ...]
) -> Iterator[tuple[str, ...]]:
    for field in msgspec.structs.fields(struct):
        path = (*prefix, field.name)
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            yield from _leaf_paths(field.type, path)
        else:
            yield path


@dataclass(frozen=True, slots=True)
class Resolved:
    """A validated config and, for every key, where its value came from."""

    config: Config
    sources: dict[str, str]

    def values(self) -> Iterator[tuple[str, Any, str]]:
        """Yield (dotted key, value, source) for every key, in declaration order."""
        for path in _leaf_paths(Config, ()):
            value: Any = self.config
            for part in path:
                value = getattr(value, part)
            key = ".".join(path)
            yield key, value, self.sources[key]


def load(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the config file (if any) and the environment, and validate the result.

    Without ``path``, NOTIFIER_CONFIG names the file, else ./notifier.toml is
    read when it exists. Raises ConfigError naming the key and the reason.
    """
    return resolve(path, environ).config


def resolve(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Resolved:
    """Like load, and also say where each value came from."""
    environ = os.environ if environ is None else environ
    data, sources = _read_file(path, environ)
    _apply_env(data, sources, environ)
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), sources)) from exc
    _check(config)
    return Resolved(config, _leaf_sources(data, sources))


def _leaf_sources(
    data: Mapping[str, Any], sources: Mapping[str, str]
) -> dict[str, str]:
    found = {}
    for path in _leaf_paths(Config, ()):
        key = ".".join(path)
        node: Any = data
        for part in path:
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if key in sources:
            found[key] = f"environment {sources[key].split('=')[0]}"
        elif node is not _MISSING:
            found[key] = f"file {sources['']}"
        else:
            found[key] = "default"
    return found


_MISSING = object()


def _read_file(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    if path is None and CONFIG_ENV in environ:
        path = environ[CONFIG_ENV]
    if path is None:
        if not DEFAULT_PATH.exists():
            return {}, {}
        path = DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), {"": str(path)}
    except FileNotFoundError as exc:
        raise ConfigError(f"The config file {str(path)!r} does not exist.") from exc
    except OSError as exc:
        raise ConfigError(
            f"The config file {str(path)!r} cannot be read: {exc}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"The config file {str(path)!r} is not UTF-8: {exc}."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"The config file {str(path)!r} is not valid TOML: {exc}."
        ) from exc


def _apply_env(
    data: dict[str, Any], sources: dict[str, str], environ: Mapping[str, str]
) -> None:
    names = env_names()
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name not in names:
            raise ConfigError(
                f"The environment variable {name} names no config key; "
                f"known names look like {ENV_PREFIX}SERVER_PORT."
            )
        path = names[name]
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"The config key {'.'.join(path[:-1])} must be a table."
                )
        node[path[-1]] = value
        sources[".".join(path)] = f"{name}={value!r}"


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$\.?(?P<where>[^`]*)`)?$", re.DOTALL)


_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def _explain(message: str, sources: Mapping[str, str]) -> str:
    match = _AT.match(message)
    assert match is not None  # the pattern matches any string
    where = match["where"] or ""
    reason = match["reason"]
    unknown = _UNKNOWN.search(reason)
    if unknown:
        where = f"{where}.{unknown[1]}" if where else unknown[1]
    # A rule on a whole table (the emulator's rate sum) names no single key:
    # name every source that set a key inside it.
    inner = [v for k, v in sources.items() if where and k.startswith(f"{where}.")]
    origin = sources.get(where) or ", ".join(inner) or sources.get("") or "the defaults"
    if not where:
        return f"Invalid config (from {origin}): {reason}."
    return f"Invalid config key {where} (from {origin}): {reason}."


def _check(config: Config) -> None:
    d = config.dispatcher
    if d.backoff_base_s > d.backoff_max_s:
        raise ConfigError(
            "Invalid config key dispatcher.backoff_base_s: must not exceed "
            f"dispatcher.backoff_max_s ({d.backoff_max_s:g}), got {d.backoff_base_s:g}."
        )
