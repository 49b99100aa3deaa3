"""The /v1/deliveries routes: detail, listing, cancel and retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def later() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def send(client, recipient: dict[str, str], text: str = "hi", **extra) -> str:
    response = await client.post(
        "/v1/messages", json={"text": text, "recipients": [recipient], **extra}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["deliveries"][0]["id"])


async def test_get_delivery_lists_retries_of_a_flaky_recipient(
    client, wait_status
) -> None:
    delivery_id = await send(client, {"messenger": "viber", "id": "test-flaky"})

    detail = await wait_status(delivery_id, {"sent"})

    outcomes = [a["outcome"] for a in detail["attempts"]]
    assert outcomes == ["transient_error", "transient_error", "sent"]
    assert [a["number"] for a in detail["attempts"]] == [1, 2, 3]
    assert detail["next_attempt_at"] is None


async def test_get_delivery_fails_a_blocked_recipient_at_once(
    client, wait_status
) -> None:
    delivery_id = await send(client, {"messenger": "telegram", "id": "@test_blocked"})

    detail = await wait_status(delivery_id, {"failed"})

    assert [a["outcome"] for a in detail["attempts"]] == ["permanent_error"]
    assert "blocked" in detail["last_error"]


async def test_get_delivery_fails_after_max_attempts(client, wait_status) -> None:
    delivery_id = await send(client, {"messenger": "whatsapp", "id": "+15550100002"})

    detail = await wait_status(delivery_id, {"failed"})

    assert len(detail["attempts"]) == 3  # max_attempts in the fixture's config


async def test_get_delivery_answers_404_for_unknown_id(client) -> None:
    response = await client.get("/v1/deliveries/nope")

    assert response.status_code == 404


async def test_list_deliveries_pages_newest_first(client) -> None:
    ids = [
        await send(client, {"messenger": "viber", "id": f"user{i}"}, send_at=later())
        for i in range(5)
    ]

    first = (await client.get("/v1/deliveries?limit=3")).json()
    second = (
        await client.get(f"/v1/deliveries?limit=3&cursor={first['next_cursor']}")
    ).json()

    listed = [d["id"] for d in first["items"] + second["items"]]
    assert listed == ids[::-1]
    assert second["next_cursor"] is None


async def test_list_deliveries_filters_by_status_and_messenger(client) -> None:
    await send(client, {"messenger": "viber", "id": "user1"}, send_at=later())
    wanted = await send(client, {"messenger": "telegram", "id": "42"}, send_at=later())

    page = (await client.get("/v1/deliveries?status=pending&messenger=telegram")).json()

    assert [d["id"] for d in page["items"]] == [wanted]


async def test_list_deliveries_rejects_unknown_status(client) -> None:
    response = await client.get("/v1/deliveries?status=lost")

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "status"


async def test_cancel_delivery_stops_a_scheduled_send(client) -> None:
    delivery_id = await send(
        client, {"messenger": "viber", "id": "user1"}, send_at=later()
    )

    response = await client.post(f"/v1/deliveries/{delivery_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["next_attempt_at"] is None


async def test_cancel_delivery_answers_409_once_sent(client, wait_status) -> None:
    delivery_id = await send(client, {"messenger": "viber", "id": "user1"})
    await wait_status(delivery_id, {"sent"})

    response = await client.post(f"/v1/deliveries/{delivery_id}/cancel")

    assert response.status_code == 409
    assert response.json()["delivery"]["status"] == "sent"


async def test_retry_delivery_requeues_a_failed_one(client, wait_status) -> None:
    delivery_id = await send(client, {"messenger": "telegram", "id": "@test_blocked"})
    await wait_status(delivery_id, {"failed"})

    response = await client.post(f"/v1/deliveries/{delivery_id}/retry")
    detail = await wait_status(delivery_id, {"failed"})

    assert response.status_code == 200
    assert response.json()["status"] in {"pending", "sending", "failed"}
    assert len(detail["attempts"]) == 2


async def test_retry_delivery_answers_409_unless_failed(client) -> None:
    delivery_id = await send(
        client, {"messenger": "viber", "id": "user1"}, send_at=later()
    )

    response = await client.post(f"/v1/deliveries/{delivery_id}/retry")

    assert response.status_code == 409
    assert response.json()["delivery"]["status"] == "pending"
