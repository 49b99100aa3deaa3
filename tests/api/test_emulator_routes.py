"""The /v1/emulator routes: settings and inboxes."""

from __future__ import annotations

import pytest


async def test_get_emulator_returns_configured_settings(client) -> None:
    response = await client.get("/v1/emulator/telegram")

    assert response.status_code == 200
    assert response.json() == {
        "latency_ms": 0,
        "transient_error_rate": 0.0,
        "rate_limit_rate": 0.0,
        "retry_after_s": 1.0,
        "permanent_error_rate": 0.0,
    }


async def test_put_emulator_changes_only_given_fields(client) -> None:
    response = await client.put("/v1/emulator/viber", json={"latency_ms": 5})

    assert response.status_code == 200
    assert response.json()["latency_ms"] == 5
    assert (await client.get("/v1/emulator/viber")).json()["latency_ms"] == 5
    assert (await client.get("/v1/emulator/telegram")).json()["latency_ms"] == 0


async def test_put_emulator_keeps_configured_and_earlier_values(client) -> None:
    """The fields a PUT leaves out keep their values: configured, or put before."""
    await client.put("/v1/emulator/viber", json={"transient_error_rate": 0.3})

    response = await client.put("/v1/emulator/viber", json={"rate_limit_rate": 0.1})

    assert response.json() == {
        "latency_ms": 0,  # configured in the test config, not the default 20
        "transient_error_rate": 0.3,
        "rate_limit_rate": 0.1,
        "retry_after_s": 1.0,
        "permanent_error_rate": 0.0,
    }


async def test_put_emulator_makes_sends_fail(client, wait_status) -> None:
    await client.put("/v1/emulator/viber", json={"permanent_error_rate": 1.0})

    accepted = await client.post(
        "/v1/messages",
        json={"text": "x", "recipients": [{"messenger": "viber", "id": "u1"}]},
    )

    detail = await wait_status(accepted.json()["deliveries"][0]["id"], {"failed"})
    assert detail["attempts"][0]["outcome"] == "permanent_error"


async def test_put_emulator_rejects_bad_rates(client) -> None:
    too_high = await client.put(
        "/v1/emulator/viber", json={"transient_error_rate": 1.5}
    )
    too_many = await client.put(
        "/v1/emulator/viber",
        json={"transient_error_rate": 0.6, "permanent_error_rate": 0.6},
    )
    unknown = await client.put("/v1/emulator/viber", json={"latency": 5})

    assert [too_high.status_code, too_many.status_code, unknown.status_code] == [
        422
    ] * 3
    assert too_high.json()["errors"][0]["field"] == "transient_error_rate"
    assert (await client.get("/v1/emulator/viber")).json()[
        "transient_error_rate"
    ] == 0.0


@pytest.mark.parametrize(
    "body",
    [
        {"latency_ms": "100"},  # a number in a string
        {"rate_limit_rate": "0.1"},
        {"retry_after_s": "2.5"},
    ],
)
async def test_put_emulator_refuses_numbers_sent_as_strings(client, body) -> None:
    response = await client.put("/v1/emulator/viber", json=body)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == next(iter(body))
    assert (await client.get("/v1/emulator/viber")).json()["latency_ms"] == 0


async def test_emulator_routes_reject_unknown_messenger(client) -> None:
    response = await client.get("/v1/emulator/signal/inbox")

    assert response.status_code == 422


async def test_read_inbox_normalises_the_recipient_filter(client, wait_status) -> None:
    accepted = await client.post(
        "/v1/messages",
        json={
            "text": "x",
            "recipients": [{"messenger": "whatsapp", "id": "+44 20 7946 0000"}],
        },
    )
    await wait_status(accepted.json()["deliveries"][0]["id"], {"sent"})

    page = (
        await client.get("/v1/emulator/whatsapp/inbox?recipient=00442079460000")
    ).json()
    bad = await client.get("/v1/emulator/whatsapp/inbox?recipient=abc")

    assert [i["recipient"] for i in page["items"]] == ["+442079460000"]
    assert bad.status_code == 422
