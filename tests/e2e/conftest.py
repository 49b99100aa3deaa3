"""The real ``notifier serve`` process, started and stopped by the tests."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.config import ENV_PREFIX, env_names

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05
_PORT_RANGE = (20_000, 32_000)
_PORT_TRIES = 100
_PORTS = random.Random()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The port is drawn below Linux's ephemeral range, where neither client
    sockets nor other tests binding port 0 are handed ports by the kernel.
    """
    for _ in range(_PORT_TRIES):
        port = _PORTS.randrange(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_RANGE} after {_PORT_TRIES} tries")


def notifier_env(settings: dict[str, str]) -> dict[str, str]:
    """Return this process's environment without NOTIFIER_*, plus ``settings``.

    Each settings key is a config key path written with underscores, such as
    ``dispatcher_lease_s``; a key that names no config key fails at once.
    """
    known = env_names()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for key, value in settings.items():
        name = ENV_PREFIX + key.upper()
        if name not in known:
            raise KeyError(f"{key!r} names no notifier config key")
        env[name] = str(value)
    return env


def serve_command() -> list[str]:
    """Return the command line that runs the service with this interpreter."""
    return [sys.executable, "-m", "notifier", "serve"]


@dataclass
class Server:
    """One running ``notifier serve`` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    settings: dict[str, str]

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.process.pid

    def client(self, **kwargs: Any) -> httpx.Client:
        """Return an HTTP client bound to this server."""
        return httpx.Client(base_url=self.base_url, timeout=10.0, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """Return an async HTTP client bound to this server."""
        return httpx.AsyncClient(base_url=self.base_url, timeout=10.0, **kwargs)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server process, by its PID."""
        os.kill(self.pid, sig)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to end; return its exit status."""
        return self.process.wait(timeout=timeout_s)

    def log_events(self) -> list[dict[str, Any]]:
        """Return the JSON log records written so far; other lines are skipped."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                events.append(record)
        return events

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the log, for failure messages."""
        return "\n".join(
            self.log_path.read_text(errors="replace").splitlines()[-lines:]
        )


@dataclass
class Launcher:
    """Starts servers on one temporary directory and stops all of them at the end."""

    root: Path
    started: list[Server] = field(default_factory=list)

    def start(self, **settings: Any) -> Server:
        """Start a server on this directory's database and inbox; wait until it answers.

        Keyword names are config key paths with underscores (``dispatcher_lease_s``).
        """
        server = self._spawn(
            self._defaults() | {k: str(v) for k, v in settings.items()}
        )
        _wait_ready(server)
        return server

    def run_once(
        self, timeout_s: float, **settings: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run the serve command to its end, for a start-up meant to fail."""
        merged = self._defaults() | {k: str(v) for k, v in settings.items()}
        return subprocess.run(
            serve_command(),
            cwd=self.root,
            env=notifier_env(merged),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def _defaults(self) -> dict[str, str]:
        return {
            "database_path": str(self.root / "outbox.db"),
            "emulator_inbox_path": str(self.root / "inbox.db"),
            "logging_format": "json",
        }

    def restart(self, old: Server, **changes: Any) -> Server:
        """Start a new server with ``old``'s settings and files, after ``old`` ended.

        The old process must already have exited; ``changes`` override settings.
        """
        assert old.process.poll() is not None, "stop the old server first"
        settings = {k: v for k, v in old.settings.items() if k != "server_port"}
        settings.update({k: str(v) for k, v in changes.items()})
        server = self._spawn(settings)
        _wait_ready(server)
        return server

    def _spawn(self, settings: dict[str, str]) -> Server:
        settings.setdefault("server_host", "127.0.0.1")
        settings.setdefault("server_port", str(free_port()))
        log_path = self.root / f"server-{len(self.started) + 1}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                serve_command(),
                cwd=self.root,
                env=notifier_env(settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{settings['server_port']}"
        server = Server(process, base_url, log_path, settings)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server still running: SIGTERM, then SIGKILL after a timeout."""
        for server in self.started:
            stop(server)


def stop(server: Server) -> None:
    """End the server by its PID; SIGKILL it if SIGTERM takes too long."""
    if server.process.poll() is not None:
        return
    server.signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.signal(signal.SIGKILL)
        server.process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(
                    f"notifier exited with {server.process.returncode} before it "
                    f"answered:\n{server.log_tail()}"
                )
            try:
                if client.get("/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_S)
    stop(server)
    pytest.fail(
        f"notifier did not answer within {READY_TIMEOUT_S:g} s:\n{server.log_tail()}"
    )


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Start notifier servers in tmp_path; none is left running after the test."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop_all()
