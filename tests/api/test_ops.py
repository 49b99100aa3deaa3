"""Probes, Prometheus metrics and /v1/stats, through the app client."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any, TypeVar

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from notifier.app import create_app
from notifier.config import AuthConfig, Config
from notifier.domain.models import Messenger

T = TypeVar("T")

ACCEPTED = "notifier_deliveries_accepted_total"
DEDUPLICATED = "notifier_deliveries_deduplicated_total"
STATUSES = ["pending", "sending", "sent", "failed", "cancelled"]


def later(hours: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def send(
    client, messenger: str, recipient: str, text: str = "hi", **extra
) -> str:
    response = await client.post(
        "/v1/messages",
        json={"text": text, "recipients": [{"messenger": messenger, "id": recipient}]}
        | extra,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["deliveries"][0]["id"])


async def scrape(client) -> list[Any]:
    """Return every sample /metrics shows, parsed by prometheus-client."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


async def value(client, sample_name: str, **labels: str) -> float:
    """Return the sum of the samples named so whose labels include ``labels``."""
    return sum(
        s.value
        for s in await scrape(client)
        if s.name == sample_name and labels.items() <= s.labels.items()
    )


def services(client) -> Any:
    return client.app.state.services


async def on_app_loop(client, func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Await ``func(*args)`` on the app's event loop, where its outbox lives.

    The test client runs the app in a thread of its own; the outbox's lock and
    connections must not be used from the test's loop.
    """
    future = client.blocking_portal.start_task_soon(func, *args)
    return await asyncio.wrap_future(future)


def move_clock(client, monkeypatch: pytest.MonkeyPatch, ahead_s: float) -> None:
    """Make the API's clock run ``ahead_s`` ahead; the dispatcher keeps real time."""
    monkeypatch.setattr(services(client), "clock", lambda: time.time() + ahead_s)


async def wait_ticked(client) -> None:
    dispatcher = services(client).dispatcher
    for _ in range(200):
        if dispatcher.last_tick_s is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the dispatcher never ticked")


# health


async def test_live_answers_ok(client) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_answers_ok_once_the_dispatcher_ticked(client) -> None:
    await wait_ticked(client)

    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_answers_503_when_the_database_does_not_answer(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_ticked(client)

    async def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(services(client).outbox, "ping", broken)

    response = await client.get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    (reason,) = body["reasons"]
    assert "database" in reason
    assert "disk I/O error" in reason


async def test_ready_answers_503_when_the_dispatcher_stopped_ticking(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_ticked(client)
    # 3 poll intervals of 0.05 s plus 1 s is the limit; 60 s is far past it.
    move_clock(client, monkeypatch, 60)

    response = await client.get("/health/ready")

    assert response.status_code == 503
    (reason,) = response.json()["reasons"]
    assert "dispatcher" in reason
    assert "has not ticked for" in reason


async def test_ready_lists_every_reason_at_once(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_ticked(client)

    async def broken() -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(services(client).outbox, "ping", broken)
    move_clock(client, monkeypatch, 60)

    response = await client.get("/health/ready")

    assert response.status_code == 503
    assert len(response.json()["reasons"]) == 2


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
async def test_ops_routes_answer_without_a_key_when_auth_is_required(
    config: Config, path: str
) -> None:
    locked = msgspec.structs.replace(config, auth=AuthConfig(required=True))
    async with AsyncTestClient(create_app(locked)) as client:
        await wait_ticked(client)

        response = await client.get(path)
        refused = await client.get("/v1/stats")

    assert response.status_code == 200
    assert refused.status_code == 401


# metrics


async def test_metrics_are_prometheus_text(client) -> None:
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {
        "notifier_deliveries_accepted",
        "notifier_deliveries_pending",
        "notifier_oldest_due_age_seconds",
    } <= names


async def test_metrics_content_type_has_each_parameter_once(client) -> None:
    """Prometheus 3 rejects a Content-Type it cannot parse, as with a repeated key."""
    response = await client.get("/metrics")

    header = Message()
    header["content-type"] = response.headers["content-type"]
    names = [name for name, _ in header.get_params()[1:]]
    assert len(names) == len(set(names)), response.headers["content-type"]


async def test_metrics_count_an_accepted_delivery(client) -> None:
    before = await value(client, ACCEPTED, messenger="viber")

    await send(client, "viber", "user-1", send_at=later())

    assert await value(client, ACCEPTED, messenger="viber") == before + 1


async def test_metrics_count_a_repeat_as_deduplicated_not_accepted(client) -> None:
    await send(client, "viber", "user-1", send_at=later())
    names = (ACCEPTED, DEDUPLICATED)
    before = [await value(client, n, messenger="viber") for n in names]

    await send(client, "viber", "user-1", send_at=later(2))

    after = [await value(client, n, messenger="viber") for n in names]
    assert after == [before[0], before[1] + 1]


async def test_metrics_count_a_sent_delivery(client, wait_status) -> None:
    names = [
        ("notifier_deliveries_finished_total", {"status": "sent"}),
        ("notifier_attempts_total", {"outcome": "sent"}),
        ("notifier_send_duration_seconds_count", {}),
        ("notifier_accept_to_sent_seconds_count", {}),
    ]
    before = [
        await value(client, n, messenger="telegram", **labels) for n, labels in names
    ]

    await wait_status(await send(client, "telegram", "42"), {"sent"})

    after = [
        await value(client, n, messenger="telegram", **labels) for n, labels in names
    ]
    assert after == [b + 1 for b in before]


async def test_metrics_count_a_failed_delivery(client, wait_status) -> None:
    finished = ("notifier_deliveries_finished_total", {"status": "failed"})
    attempts = ("notifier_attempts_total", {"outcome": "permanent_error"})
    sent = ("notifier_accept_to_sent_seconds_count", {})
    before = [
        await value(client, n, messenger="telegram", **labels)
        for n, labels in (finished, attempts, sent)
    ]

    await wait_status(await send(client, "telegram", "@test_blocked"), {"failed"})

    after = [
        await value(client, n, messenger="telegram", **labels)
        for n, labels in (finished, attempts, sent)
    ]
    assert after == [before[0] + 1, before[1] + 1, before[2]]


async def test_metrics_count_attempts_by_outcome(client, wait_status) -> None:
    outcomes = ["transient_error", "sent"]
    before = [
        await value(client, "notifier_attempts_total", messenger="viber", outcome=o)
        for o in outcomes
    ]

    # The scripted flaky recipient fails twice, then takes the text.
    await wait_status(await send(client, "viber", "test-flaky"), {"sent"})

    after = [
        await value(client, "notifier_attempts_total", messenger="viber", outcome=o)
        for o in outcomes
    ]
    assert after == [before[0] + 2, before[1] + 1]


async def test_metrics_count_a_cancelled_delivery(client) -> None:
    labels = {"messenger": "whatsapp", "status": "cancelled"}
    before = await value(client, "notifier_deliveries_finished_total", **labels)
    delivery_id = await send(client, "whatsapp", "+79991234567", send_at=later())

    response = await client.post(f"/v1/deliveries/{delivery_id}/cancel")

    assert response.status_code == 200
    after = await value(client, "notifier_deliveries_finished_total", **labels)
    assert after == before + 1


async def test_metrics_count_a_lease_reclaimed_after_expiry(
    client, wait_status
) -> None:
    before = await value(
        client, "notifier_leases_reclaimed_total", messenger="telegram"
    )
    send_at_ms = int(time.time() * 1000) + 500
    send_at = datetime.fromtimestamp(send_at_ms / 1000, UTC).isoformat()
    delivery_id = await send(client, "telegram", "4242", send_at=send_at)
    # Take the row before the dispatcher can, under a lease that ends as it falls
    # due: the dispatcher then finds an expired lease and reclaims it.
    claims = await on_app_loop(
        client, services(client).outbox.claim, {Messenger.TELEGRAM: 1}, send_at_ms, 1
    )
    assert [c.delivery_id for c in claims] == [delivery_id]

    detail = await wait_status(delivery_id, {"sent"})

    assert [a["outcome"] for a in detail["attempts"]] == ["lease_expired", "sent"]
    after = await value(client, "notifier_leases_reclaimed_total", messenger="telegram")
    assert after == before + 1


async def test_metrics_gauge_scheduled_deliveries(client) -> None:
    await send(client, "telegram", "42", send_at=later(1))
    await send(client, "telegram", "43", send_at=later(2))

    scheduled = await value(
        client, "notifier_deliveries_pending", messenger="telegram", state="scheduled"
    )
    due = await value(
        client, "notifier_deliveries_pending", messenger="telegram", state="due"
    )

    assert (scheduled, due) == (2, 0)
    assert await value(client, "notifier_oldest_due_age_seconds") == 0


async def test_metrics_gauge_due_deliveries_and_their_age(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send(client, "viber", "user-1", send_at=later(1))
    await send(client, "viber", "user-2", send_at=later(5))
    # Two hours on, the first is an hour overdue and the second still waits.
    move_clock(client, monkeypatch, 2 * 3600)

    samples = await scrape(client)

    pending = {
        s.labels["state"]: s.value
        for s in samples
        if s.name == "notifier_deliveries_pending" and s.labels["messenger"] == "viber"
    }
    assert pending == {"due": 1, "scheduled": 1}
    (age,) = [s.value for s in samples if s.name == "notifier_oldest_due_age_seconds"]
    assert 3500 < age < 3700


async def test_metrics_count_http_requests_by_route_template(client) -> None:
    delivery_id = await send(client, "viber", "user-1", send_at=later())
    labels = {"method": "GET", "path": "/v1/deliveries/{delivery_id}"}
    found_before = await value(
        client, "notifier_http_requests_total", status_code="200", **labels
    )
    missing_before = await value(
        client, "notifier_http_requests_total", status_code="404", **labels
    )

    await client.get(f"/v1/deliveries/{delivery_id}")
    await client.get("/v1/deliveries/no-such-delivery")

    found = await value(
        client, "notifier_http_requests_total", status_code="200", **labels
    )
    missing = await value(
        client, "notifier_http_requests_total", status_code="404", **labels
    )
    assert (found, missing) == (found_before + 1, missing_before + 1)


async def test_metrics_labels_name_no_id_or_recipient(client, wait_status) -> None:
    delivery_id = await send(client, "telegram", "@secret_recipient")
    await wait_status(delivery_id, {"sent"})
    await client.get("/v1/deliveries/no-such-delivery")

    samples = await scrape(client)

    label_values = {v for s in samples for v in s.labels.values()}
    for secret in (delivery_id, "secret_recipient", "no-such-delivery"):
        assert not [v for v in label_values if secret in v]


# /v1/stats


async def test_stats_count_every_messenger_and_status(client, wait_status) -> None:
    await wait_status(await send(client, "telegram", "42"), {"sent"})
    await wait_status(await send(client, "viber", "test-blocked"), {"failed"})
    await send(client, "whatsapp", "+79991234567", send_at=later())
    cancelled = await send(client, "whatsapp", "+79990000000", send_at=later())
    await client.post(f"/v1/deliveries/{cancelled}/cancel")

    stats = (await client.get("/v1/stats")).json()

    zeros = dict.fromkeys(STATUSES, 0)
    assert stats["deliveries"] == {
        "telegram": zeros | {"sent": 1},
        "whatsapp": zeros | {"pending": 1, "cancelled": 1},
        "viber": zeros | {"failed": 1},
    }
    assert stats["totals"] == zeros | {
        "sent": 1,
        "failed": 1,
        "pending": 1,
        "cancelled": 1,
    }
    assert (stats["due_now"], stats["scheduled"]) == (0, 1)
    assert stats["oldest_due_age_s"] is None
    assert stats["sent_last_minute"] == 1


async def test_stats_show_due_deliveries_and_the_oldest_age(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send(client, "telegram", "42", send_at=later(1))
    await send(client, "viber", "user-1", send_at=later(1.5))
    await send(client, "whatsapp", "+79991234567", send_at=later(3))
    move_clock(client, monkeypatch, 2 * 3600)

    stats = (await client.get("/v1/stats")).json()

    assert (stats["due_now"], stats["scheduled"]) == (2, 1)
    assert 3500 < stats["oldest_due_age_s"] < 3700
    assert stats["sent_last_minute"] == 0
