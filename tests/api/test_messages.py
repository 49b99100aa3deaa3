"""POST and GET /v1/messages through the app client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

ALICE = {"messenger": "telegram", "id": "@alice_bot"}
BOB = {"messenger": "whatsapp", "id": "+7 999 123-45-67"}
CAROL = {"messenger": "viber", "id": "carol=="}
JSON_TYPE = {"Content-Type": "application/json"}


def body(
    text: str = "hello", *recipients: dict[str, str], **extra: Any
) -> dict[str, Any]:
    return {"text": text, "recipients": list(recipients) or [ALICE], **extra}


async def test_send_message_accepts_one_delivery_per_recipient(client) -> None:
    response = await client.post("/v1/messages", json=body("hi", ALICE, BOB, CAROL))

    assert response.status_code == 202
    deliveries = response.json()["deliveries"]
    assert [(d["messenger"], d["recipient"]) for d in deliveries] == [
        ("telegram", "@alice_bot"),
        ("whatsapp", "+79991234567"),
        ("viber", "carol=="),
    ]
    assert {d["duplicate"] for d in deliveries} == {False}
    assert len({d["id"] for d in deliveries}) == 3


async def test_send_message_collapses_one_recipient_named_twice(client) -> None:
    same_bob = {"messenger": "whatsapp", "id": "79991234567"}

    response = await client.post("/v1/messages", json=body("hi", BOB, same_bob))

    assert len(response.json()["deliveries"]) == 1


async def test_send_message_marks_repeat_text_as_duplicate(client) -> None:
    first = (await client.post("/v1/messages", json=body("hi", ALICE))).json()

    second = (await client.post("/v1/messages", json=body("hi", ALICE, BOB))).json()

    assert second["id"] != first["id"]
    repeat, fresh = second["deliveries"]
    assert repeat["id"] == first["deliveries"][0]["id"]
    assert repeat["duplicate"] is True
    assert fresh["duplicate"] is False


async def test_send_message_delivers_to_the_inbox(client, wait_status) -> None:
    accepted = (await client.post("/v1/messages", json=body("ping", BOB))).json()
    delivery_id = accepted["deliveries"][0]["id"]

    await wait_status(delivery_id, {"sent"})

    inbox = (
        await client.get("/v1/emulator/whatsapp/inbox?recipient=79991234567")
    ).json()
    assert [(i["delivery_id"], i["text"]) for i in inbox["items"]] == [
        (delivery_id, "ping")
    ]


async def test_send_message_holds_a_scheduled_delivery(client) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()

    accepted = (
        await client.post("/v1/messages", json=body("later", send_at=later))
    ).json()

    delivery = accepted["deliveries"][0]
    assert delivery["status"] == "pending"
    assert datetime.fromisoformat(delivery["send_at"]) == datetime.fromisoformat(later)
    detail = (await client.get(f"/v1/deliveries/{delivery['id']}")).json()
    assert detail["attempts"] == []


async def test_send_message_replays_idempotent_request(client, wait_status) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/v1/messages", json=body("hi"), headers=headers)
    await wait_status(first.json()["deliveries"][0]["id"], {"sent"})

    again = await client.post("/v1/messages", json=body("hi"), headers=headers)

    assert again.status_code == 202
    assert again.content == first.content


async def test_send_message_rejects_reused_idempotency_key(client) -> None:
    headers = {"Idempotency-Key": "order-43"}
    await client.post("/v1/messages", json=body("hi"), headers=headers)

    response = await client.post("/v1/messages", json=body("bye"), headers=headers)

    assert response.status_code == 422
    assert response.json()["type"] == "urn:notifier:problem:idempotency-key-reused"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        # a typo of send_at must not turn into an immediate send
        (body(sendAt="2030-01-01T00:00:00Z"), "sendAt"),
        # a naive time is refused rather than guessed
        (body(send_at="2030-01-01T00:00:00"), "send_at"),
        # not a time at all
        (body(send_at="tomorrow"), "send_at"),
        ({"recipients": [ALICE]}, "text"),
        (body(""), "text"),
        (body("x" * 4097), "text"),
        ({"text": "hi", "recipients": []}, "recipients"),
        (body("hi", {"messenger": "signal", "id": "1"}), "recipients[0].messenger"),
        (body("hi", ALICE, {"messenger": "whatsapp", "id": "12"}), "recipients[1]"),
        (body("hi", {"messenger": "telegram", "id": 5}), "recipients[0].id"),
    ],
)
async def test_send_message_rejects_invalid_body(client, payload, field) -> None:
    response = await client.post("/v1/messages", json=payload)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "urn:notifier:problem:validation-error"
    assert field in [e["field"] for e in problem["errors"]]


async def test_send_message_stores_nothing_for_invalid_body(client) -> None:
    bad = body("hi", ALICE, {"messenger": "whatsapp", "id": "nope"})

    await client.post("/v1/messages", json=bad)

    page = (await client.get("/v1/deliveries")).json()
    assert page["items"] == []


async def test_send_message_rejects_malformed_json(client) -> None:
    response = await client.post(
        "/v1/messages", content=b'{"text": ', headers=JSON_TYPE
    )

    assert response.status_code == 400
    assert response.json()["type"] == "urn:notifier:problem:malformed-body"


async def test_send_message_rejects_oversized_body(client) -> None:
    huge = body("x" * 2_000_000)

    response = await client.post("/v1/messages", json=huge)

    assert response.status_code == 413


async def test_get_message_shows_current_statuses(client, wait_status) -> None:
    accepted = (await client.post("/v1/messages", json=body("hi", ALICE, BOB))).json()
    for d in accepted["deliveries"]:
        await wait_status(d["id"], {"sent"})

    message = (await client.get(f"/v1/messages/{accepted['id']}")).json()

    assert message["text"] == "hi"
    assert [d["status"] for d in message["deliveries"]] == ["sent", "sent"]


async def test_get_message_answers_404_for_unknown_id(client) -> None:
    response = await client.get("/v1/messages/nope")

    assert response.status_code == 404
    assert response.json()["type"] == "urn:notifier:problem:not-found"


async def test_send_message_lets_one_recipient_have_its_own_time(client) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    scheduled = {**CAROL, "send_at": later.isoformat()}

    accepted = (
        await client.post("/v1/messages", json=body("hi", ALICE, scheduled))
    ).json()

    now_one, later_one = accepted["deliveries"]
    assert datetime.fromisoformat(later_one["send_at"]) == later
    assert datetime.fromisoformat(now_one["send_at"]) < later


async def test_send_message_names_a_bad_recipient_time(client) -> None:
    naive = {**CAROL, "send_at": "2030-01-01T09:00:00"}

    response = await client.post("/v1/messages", json=body("hi", ALICE, naive))

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["recipients[1].send_at"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # curl -d without -H sends form encoding; this is its cousin
        "application/x-www-form-urlencoded",
        "image/png",
    ],
)
async def test_send_message_refuses_a_body_not_sent_as_json(
    client, content_type
) -> None:
    payload = b'{"text": "x", "recipients": [{"messenger": "viber", "id": "a"}]}'

    response = await client.post(
        "/v1/messages", content=payload, headers={"Content-Type": content_type}
    )

    assert response.status_code == 415
    assert response.json()["type"] == "urn:notifier:problem:unsupported-media-type"
    assert (await client.get("/v1/deliveries")).json()["items"] == []


async def test_send_message_refuses_an_empty_body(client) -> None:
    response = await client.post("/v1/messages", content=b"", headers=JSON_TYPE)

    assert response.status_code == 400
    assert response.json()["type"] == "urn:notifier:problem:malformed-body"


async def test_send_message_refuses_deeply_nested_json(client) -> None:
    nested = b'{"text": "x", "recipients": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    response = await client.post("/v1/messages", content=nested, headers=JSON_TYPE)

    assert response.status_code == 400


async def test_options_answers_without_a_server_error(client) -> None:
    response = await client.options("/v1/messages")

    assert response.status_code < 500
