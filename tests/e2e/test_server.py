"""End-to-end: the real ``notifier serve`` process, its database and its signals."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import Launcher, Server

pytestmark = pytest.mark.e2e

T = TypeVar("T")

MESSENGERS = ("telegram", "whatsapp", "viber")
FINAL = {"sent", "failed"}
POLL_S = 0.05
PAGE = 500
MAX_PAGES = 100

# Every messenger misbehaves the same way in the crash test.
CHAOS = {
    f"emulator_{m}_{key}": value
    for m in MESSENGERS
    for key, value in {
        "latency_ms": 200,
        "transient_error_rate": 0.3,
        "rate_limit_rate": 0.1,
        "retry_after_s": 0.2,
        "permanent_error_rate": 0.05,
    }.items()
}
FAST_RETRIES = {
    "dispatcher_max_attempts": 4,
    "dispatcher_backoff_base_s": 0.05,
    "dispatcher_backoff_max_s": 0.5,
    "dispatcher_lease_s": 2,
    "dispatcher_poll_interval_s": 0.2,
    "dispatcher_concurrency": 20,
}


def wait_for(check: Callable[[], T], *, timeout_s: float, what: str) -> T:
    """Call ``check`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


def wait_for_standbys(server: Server, workers: int) -> None:
    """Wait until every worker stands by beside the dispatching process.

    The port answers once one worker is up; a kill before the others have
    started would leave one of them the lock as it starts, not as a standby.
    """
    wait_for(
        lambda: (
            [e.get("event") for e in server.log_events()].count("dispatcher_standby")
            == workers
        ),
        timeout_s=10,
        what="every worker to stand by",
    )


def post_message(
    client: httpx.Client, text: str, recipients: list[tuple[str, str]]
) -> dict[str, Any]:
    """POST /v1/messages for sending at once and return the 202 body."""
    body = {
        "text": text,
        "recipients": [{"messenger": m, "id": r} for m, r in recipients],
    }
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def statuses(client: httpx.Client, ids: list[str]) -> dict[str, str]:
    """Return the current status of each named delivery, one GET per id."""
    found = {}
    for delivery_id in ids:
        response = client.get(f"/v1/deliveries/{delivery_id}")
        assert response.status_code == 200, response.text
        found[delivery_id] = response.json()["status"]
    return found


def all_deliveries(client: httpx.Client) -> dict[str, str]:
    """Return every delivery's status, paging through GET /v1/deliveries."""
    found: dict[str, str] = {}
    params: dict[str, Any] = {"limit": PAGE}
    for _ in range(MAX_PAGES):
        page = client.get("/v1/deliveries", params=params).json()
        found.update((d["id"], d["status"]) for d in page["items"])
        if page["next_cursor"] is None:
            return found
        params["cursor"] = page["next_cursor"]
    pytest.fail(f"more than {MAX_PAGES} pages of deliveries")


def inbox(
    client: httpx.Client, messenger: str, recipient: str | None = None
) -> list[dict[str, Any]]:
    """Return a messenger's whole inbox, or one recipient's, paging by cursor."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": PAGE}
    if recipient is not None:
        params["recipient"] = recipient
    for _ in range(MAX_PAGES):
        response = client.get(f"/v1/emulator/{messenger}/inbox", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]
    pytest.fail(f"more than {MAX_PAGES} pages of the {messenger} inbox")


def all_final(client: httpx.Client, ids: list[str]) -> dict[str, str] | None:
    """Return the statuses once every named delivery is sent or failed, else None."""
    found = all_deliveries(client)
    picked = {i: found.get(i, "missing") for i in ids}
    return picked if set(picked.values()) <= FINAL else None


def all_sending(client: httpx.Client, ids: list[str]) -> bool:
    """Return whether every named delivery is claimed and being sent."""
    return set(statuses(client, ids).values()) == {"sending"}


def some_sent(client: httpx.Client) -> dict[str, str] | None:
    """Return every delivery's status once one of them is sent, else None."""
    found = all_deliveries(client)
    return found if "sent" in found.values() else None


def received_ids(client: httpx.Client) -> list[str]:
    """Return the delivery id of every inbox entry of every messenger."""
    return [i["delivery_id"] for m in MESSENGERS for i in inbox(client, m)]


def latency(ms: int) -> dict[str, int]:
    """Return settings giving every emulated messenger the same latency."""
    return {f"emulator_{m}_latency_ms": ms for m in MESSENGERS}


def released_ids(events: list[dict[str, Any]]) -> set[str]:
    """Return the delivery ids the log says were released at shutdown."""
    return {e["delivery_id"] for e in events if e.get("event") == "delivery_released"}


def stopped_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the dispatcher_stopped log record; fail if there is none."""
    found = [e for e in events if e.get("event") == "dispatcher_stopped"]
    assert len(found) == 1, f"expected one dispatcher_stopped event, got {found}"
    return found[0]


def test_server_main_job(launcher: Launcher) -> None:
    """One text reaches three messengers; the scheduled one not before its time."""
    server = launcher.start()
    text = "Café at 15:00, see you there ☕"
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    recipients = [
        {"messenger": "telegram", "id": "@E2E_Alice"},
        {"messenger": "whatsapp", "id": "+7 999 123-45-67"},
        {"messenger": "viber", "id": "e2e-viber-bob", "send_at": send_at.isoformat()},
    ]

    with server.client() as client:
        answer = client.post(
            "/v1/messages", json={"text": text, "recipients": recipients}
        )
        assert answer.status_code == 202, answer.text
        deliveries = answer.json()["deliveries"]
        final = wait_for(
            lambda: all_final(client, [d["id"] for d in deliveries]),
            timeout_s=15,
            what="the three deliveries to finish",
        )
        received = {
            d["messenger"]: inbox(client, d["messenger"], d["recipient"])
            for d in deliveries
        }

    assert set(final.values()) == {"sent"}
    texts = {m: [i["text"] for i in items] for m, items in received.items()}
    assert texts == {m: [text] for m in MESSENGERS}
    scheduled_at = datetime.fromisoformat(deliveries[2]["send_at"])
    received_at = datetime.fromisoformat(received["viber"][0]["received_at"])
    assert scheduled_at >= send_at - timedelta(milliseconds=1)
    assert received_at >= scheduled_at


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("info", ["delivery_sent"]),
        ("debug", ["delivery_claimed", "attempt_finished", "delivery_sent"]),
    ],
    ids=["info", "debug"],
)
def test_server_logs_each_delivery_once_at_info(
    launcher: Launcher, level: str, expected: list[str]
) -> None:
    """At info a sent delivery is one line; debug adds its claim and attempt."""
    server = launcher.start(logging_level=level)
    with server.client() as client:
        answer = post_message(
            client, f"logged at {level}", [("telegram", "@log_a"), ("viber", "log-b")]
        )
        ids = [d["id"] for d in answer["deliveries"]]
        wait_for(lambda: all_final(client, ids), timeout_s=15, what="both sent")
    server.signal(signal.SIGTERM)  # the last lines are out once it has exited
    assert server.wait_exit(timeout_s=10) == 0

    for delivery_id in ids:
        events = [
            e["event"]
            for e in server.log_events()
            if e.get("delivery_id") == delivery_id
        ]
        assert events == expected


async def test_server_concurrent_identical_requests_make_one_delivery(
    launcher: Launcher,
) -> None:
    server = launcher.start()
    burst = 50
    body = {
        "text": "Your code is 4711",
        "recipients": [{"messenger": "telegram", "id": "@e2e_burst"}],
    }
    limits = httpx.Limits(max_connections=burst)

    async with server.async_client(limits=limits) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/messages", json=body) for _ in range(burst))
        )
    deliveries = [
        d for a in answers if a.status_code == 202 for d in a.json()["deliveries"]
    ]
    with server.client() as client:
        final = wait_for(
            lambda: all_final(client, [deliveries[0]["id"]]),
            timeout_s=10,
            what="the delivery to finish",
        )
        items = inbox(client, "telegram", "@e2e_burst")

    assert [a.status_code for a in answers] == [202] * burst
    assert len({d["id"] for d in deliveries}) == 1
    assert [d["duplicate"] for d in deliveries].count(False) == 1
    assert final == {deliveries[0]["id"]: "sent"}
    assert [i["delivery_id"] for i in items] == [deliveries[0]["id"]]


def test_server_survives_sigkill_mid_send(launcher: Launcher) -> None:
    """After a SIGKILL mid-send, every delivery ends sent or failed, sent ones once."""
    server = launcher.start(**CHAOS, **FAST_RETRIES)
    recipients = [
        *[("telegram", f"@e2e_user_{i:03d}") for i in range(100)],
        *[("whatsapp", f"+4930{i:07d}") for i in range(100)],
        *[("viber", f"e2e-user-{i:03d}") for i in range(100)],
    ]
    with server.client() as client:
        accepted = [
            d["id"]
            for part in range(3)
            for d in post_message(client, f"Drill {part}", recipients[part::3])[
                "deliveries"
            ]
        ]
        before_kill = wait_for(
            lambda: some_sent(client), timeout_s=10, what="a first delivery to be sent"
        )

    server.signal(signal.SIGKILL)
    server.wait_exit(timeout_s=5)
    server = launcher.restart(server)
    with server.client() as client:
        final = wait_for(
            lambda: all_final(client, accepted),
            timeout_s=60,
            what="every delivery to be sent or failed",
        )
        received = received_ids(client)

    assert len(set(accepted)) == len(recipients)
    assert "sending" in before_kill.values()  # the kill cut sends short
    assert [i for i, n in Counter(received).items() if n > 1] == []
    assert set(received) == {i for i, status in final.items() if status == "sent"}


def test_server_sigterm_drains(launcher: Launcher) -> None:
    """SIGTERM lets running sends finish; nothing is sent again after a restart."""
    grace_s = 10
    server = launcher.start(**latency(1500), dispatcher_shutdown_grace_s=grace_s)
    recipients = [
        ("telegram", "@e2e_drain"),
        ("whatsapp", "+4930555000"),
        ("viber", "e2e-drain"),
    ]
    with server.client() as client:
        answer = post_message(client, "Drain me", recipients)
        ids = [d["id"] for d in answer["deliveries"]]
        wait_for(lambda: all_sending(client, ids), timeout_s=10, what="sends to start")

    server.signal(signal.SIGTERM)
    exit_status = server.wait_exit(timeout_s=grace_s + 5)
    events = server.log_events()
    server = launcher.restart(server)
    with server.client() as client:
        after_restart = all_final(client, ids)
        received = received_ids(client)

    assert exit_status == 0
    assert stopped_event(events)["released"] == 0
    assert after_restart == dict.fromkeys(ids, "sent")
    assert sorted(received) == sorted(ids)


def test_server_sigterm_without_grace_releases_sends(launcher: Launcher) -> None:
    """With no grace period, running sends are released and sent once after restart."""
    grace_s = 0
    server = launcher.start(**latency(5000), dispatcher_shutdown_grace_s=grace_s)
    recipients = [
        ("telegram", "@e2e_release"),
        ("whatsapp", "+4930555001"),
        ("viber", "e2e-release"),
    ]
    with server.client() as client:
        answer = post_message(client, "Release me", recipients)
        ids = [d["id"] for d in answer["deliveries"]]
        wait_for(lambda: all_sending(client, ids), timeout_s=10, what="sends to start")

    server.signal(signal.SIGTERM)
    exit_status = server.wait_exit(timeout_s=grace_s + 5)
    events = server.log_events()
    server = launcher.restart(server, **latency(20))
    with server.client() as client:
        final = wait_for(
            lambda: all_final(client, ids), timeout_s=10, what="released sends to end"
        )
        received = received_ids(client)

    assert exit_status == 0
    assert stopped_event(events)["released"] == len(ids)
    assert released_ids(events) == set(ids)
    assert final == dict.fromkeys(ids, "sent")
    assert sorted(received) == sorted(ids)


def test_server_delivery_received_before_crash_ends_sent(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A text the messenger took before a crash is not reported failed afterwards.

    A write lock held on the outbox file keeps the result from being recorded,
    which opens the window between "messenger accepted" and "outbox updated".
    """
    server = launcher.start(emulator_telegram_latency_ms=1000, dispatcher_lease_s=4)
    with server.client() as client:
        answer = post_message(client, "Held", [("telegram", "@e2e_held")])
        ids = [d["id"] for d in answer["deliveries"]]
        wait_for(lambda: all_sending(client, ids), timeout_s=10, what="the send")
        lock = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            wait_for(
                lambda: inbox(client, "telegram", "@e2e_held"),
                timeout_s=10,
                what="the text to reach the inbox",
            )
            server.signal(signal.SIGKILL)
            server.wait_exit(timeout_s=5)
        finally:
            lock.close()

    server = launcher.restart(server, emulator_telegram_permanent_error_rate=1)
    with server.client() as client:
        final = wait_for(
            lambda: all_final(client, ids), timeout_s=15, what="the resend to end"
        )
        received = received_ids(client)

    assert final == dict.fromkeys(ids, "sent")
    assert received == ids


def test_server_sigterm_exits_with_status_zero(launcher: Launcher) -> None:
    server = launcher.start()

    server.signal(signal.SIGTERM)
    exit_status = server.wait_exit(timeout_s=15)

    assert exit_status == 0


def test_server_bad_config_stops_startup(launcher: Launcher, tmp_path: Path) -> None:
    finished = launcher.run_once(timeout_s=20, server_port="abc")

    assert finished.returncode != 0
    assert "server.port" in finished.stderr
    assert not (tmp_path / "outbox.db").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_server_start_on_a_file_that_is_not_a_database_exits_4_naming_it(
    launcher: Launcher, tmp_path: Path, workers: int
) -> None:
    """Before, the failed start left a database thread that kept serve alive."""
    (tmp_path / "outbox.db").write_bytes(b"not a database, " * 512)

    finished = launcher.run_once(timeout_s=30, server_workers=workers)

    assert finished.returncode == 4
    assert f"{tmp_path / 'outbox.db'}: file is not a database" in finished.stderr


def test_server_upgrades_an_older_file_only_once_nothing_else_serves_it(
    launcher: Launcher, tmp_path: Path
) -> None:
    """An older notifier still serving would write old dedupe keys into it."""
    outbox = tmp_path / "outbox.db"
    first = launcher.start()
    with first.client() as client:
        post_message(client, "made before the upgrade", [("telegram", "1001")])
    first.signal(signal.SIGTERM)
    first.wait_exit(timeout_s=15)
    with closing(sqlite3.connect(outbox)) as db:
        db.execute("PRAGMA user_version = 0")  # as the older notifier left it
    holder = os.open(f"{outbox}-dispatch", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # as its dispatching process would

    try:
        refused = launcher.run_once(timeout_s=30)
    finally:
        os.close(holder)
    with closing(sqlite3.connect(outbox)) as db:
        untouched = db.execute("PRAGMA user_version").fetchone()[0]
    second = launcher.restart(first)
    with closing(sqlite3.connect(outbox)) as db:
        upgraded = db.execute("PRAGMA user_version").fetchone()[0]

    assert refused.returncode == 4
    assert "a process still serves it" in refused.stderr
    assert untouched == 0
    assert upgraded == 1
    assert second.process.poll() is None


def test_server_two_workers_send_each_delivery_once(launcher: Launcher) -> None:
    """Two workers share the port and the outbox beside a dispatcher process."""
    server = launcher.start(server_workers=2, **latency(20))
    recipients = [("viber", f"two-workers-{n}") for n in range(60)]
    with server.client() as client:
        ids = []
        for n in range(0, len(recipients), 10):
            answer = post_message(client, "Two workers", recipients[n : n + 10])
            ids += [d["id"] for d in answer["deliveries"]]
        statuses = wait_for(
            lambda: all_final(client, ids), timeout_s=20, what="every delivery sent"
        )
        received = received_ids(client)

    server.signal(signal.SIGTERM)
    exit_status = server.wait_exit(timeout_s=15)
    events = [e["event"] for e in server.log_events()]

    assert statuses == dict.fromkeys(ids, "sent")
    assert sorted(received) == sorted(ids)
    # A process of its own dispatched and drained; both workers only accepted.
    assert events.count("dispatcher_started") == 1
    assert events.count("dispatcher_standby") == 2
    assert events.count("dispatcher_stopped") == 1
    assert exit_status == 0


def test_server_workers_metrics_add_up_every_process(launcher: Launcher) -> None:
    """A scrape of either worker counts the dispatcher process's sends too."""
    metrics_dirs = set(Path(tempfile.gettempdir()).glob("notifier-metrics-*"))
    server = launcher.start(server_workers=2)
    recipients = [("viber", f"metrics-{n}") for n in range(12)]
    with server.client() as client:
        answer = post_message(client, "Counted", recipients)
        ids = [d["id"] for d in answer["deliveries"]]
        wait_for(lambda: all_final(client, ids), timeout_s=15, what="every send")
        # Fresh connections, so that both workers answer some of the scrapes.
        scrapes = [
            metric_sums(httpx.get(f"{server.base_url}/metrics", timeout=5).text)
            for _ in range(6)
        ]
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout_s=15) == 0

    for sums in scrapes:
        assert sums["notifier_deliveries_accepted_total"] == len(ids)
        assert sums["notifier_attempts_total"] == len(ids)
        assert sums["notifier_deliveries_finished_total"] == len(ids)
        assert sums["notifier_http_requests_total"] >= 1
    # The run's directory of metric files is gone with it.
    assert set(Path(tempfile.gettempdir()).glob("notifier-metrics-*")) == metrics_dirs


def metric_sums(text: str) -> dict[str, float]:
    """Return each sample name of a Prometheus text page with its values summed."""
    sums: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] += sample.value
    return dict(sums)


def test_server_workers_take_over_when_the_dispatcher_process_dies(
    launcher: Launcher,
) -> None:
    server = launcher.start(server_workers=2, dispatcher_poll_interval_s=0.2)
    wait_for_standbys(server, 2)
    (started,) = [
        e for e in server.log_events() if e.get("event") == "dispatcher_started"
    ]

    os.kill(started["pid"], signal.SIGKILL)
    wait_for(
        lambda: any(
            e.get("event") == "dispatcher_took_over" for e in server.log_events()
        ),
        timeout_s=10,
        what="a worker to take the dispatcher's place",
    )
    with server.client() as client:
        answer = post_message(client, "After", [("viber", "after-the-dispatcher")])
        ids = [d["id"] for d in answer["deliveries"]]
        statuses = wait_for(
            lambda: all_final(client, ids), timeout_s=10, what="the send"
        )

    assert statuses == dict.fromkeys(ids, "sent")


def test_server_workers_exit_3_when_a_restarted_worker_cannot_start(
    launcher: Launcher, tmp_path: Path
) -> None:
    """uvicorn then stops them all; serve used to exit 0 as after SIGTERM."""
    server = launcher.start(server_workers=2)
    wait_for_standbys(server, 2)
    worker = next(
        e["pid"] for e in server.log_events() if e.get("event") == "dispatcher_standby"
    )
    lock = tmp_path / "outbox.db-lock"
    lock.unlink()
    lock.mkdir()  # the replacement worker cannot open its write lock

    os.kill(worker, signal.SIGKILL)

    assert server.wait_exit(timeout_s=30) == 3


def test_server_emulator_changes_reach_every_worker_until_restart(
    launcher: Launcher,
) -> None:
    """A PUT lands on one worker; the others, the dispatching one too, follow."""
    server = launcher.start(server_workers=2, emulator_viber_latency_ms=20)
    with server.client() as client:
        changed = client.put("/v1/emulator/viber", json={"latency_ms": 1500})
    assert changed.status_code == 200

    def latencies() -> list[int]:
        seen = []
        for _ in range(12):  # fresh connections, spread over both workers
            with server.client() as client:
                seen.append(client.get("/v1/emulator/viber").json()["latency_ms"])
        return seen

    after_put = wait_for(
        lambda: (seen := latencies()) == [1500] * 12 and seen,
        timeout_s=10,
        what="every worker to answer 1500 ms",
    )
    server.signal(signal.SIGTERM)
    server.wait_exit(timeout_s=15)
    server = launcher.restart(server)
    with server.client() as client:
        after_restart = client.get("/v1/emulator/viber").json()["latency_ms"]

    assert after_put == [1500] * 12
    assert after_restart == 20  # the configured value again


def test_server_start_that_finds_the_port_taken_keeps_emulator_changes(
    launcher: Launcher, tmp_path: Path
) -> None:
    server = launcher.start()
    with server.client() as client:
        client.put("/v1/emulator/viber", json={"latency_ms": 1500})

    second = launcher.run_once(timeout_s=20, server_port=server.settings["server_port"])

    with closing(sqlite3.connect(tmp_path / "inbox.db")) as inbox:
        saved = inbox.execute("SELECT messenger FROM emulator_settings").fetchall()
    assert second.returncode != 0
    assert saved == [("viber",)]
