"""Body size, recipient count, unknown fields and unsafe text, via the app client."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from notifier.config import ApiConfig, Config

MAX_BODY = 2048
MAX_RECIPIENTS = 3
JSON = {"content-type": "application/json"}


def recipients(count: int) -> list[dict[str, str]]:
    return [{"messenger": "telegram", "id": f"@user{i}_bot"} for i in range(count)]


def message(text: str = "hi", count: int = 1, **extra: Any) -> dict[str, Any]:
    return {"text": text, "recipients": recipients(count), **extra}


def sized(size: int) -> bytes:
    """Return a valid send request of exactly ``size`` bytes, padded in its text."""
    empty = json.dumps(message("")).encode()
    return json.dumps(message("x" * (size - len(empty)))).encode()


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Check a problem+json answer; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:notifier:problem:{slug}"
    return problem


async def stored(client) -> int:
    """Return how many deliveries the outbox holds."""
    return len((await client.get("/v1/deliveries?limit=500")).json()["items"])


@pytest.fixture
def config(config: Config) -> Config:
    """The app client's config, with small body and recipient limits."""
    api = ApiConfig(max_body_bytes=MAX_BODY, max_recipients=MAX_RECIPIENTS)
    return msgspec.structs.replace(config, api=api)


# body size


@pytest.mark.parametrize(
    ("size", "status"),
    [
        (MAX_BODY, 202),  # exactly the limit is allowed
        (MAX_BODY + 1, 413),  # one byte more is not
    ],
)
async def test_limits_cut_the_body_at_max_body_bytes(client, size, status) -> None:
    body = sized(size)

    response = await client.post("/v1/messages", content=body, headers=JSON)

    assert len(body) == size
    assert response.status_code == status, response.text


async def test_limits_answer_413_as_a_problem_and_store_nothing(client) -> None:
    response = await client.post(
        "/v1/messages", content=sized(MAX_BODY * 4), headers=JSON
    )

    assert_problem(response, 413, "request-entity-too-large")
    assert await stored(client) == 0


async def test_limits_cut_an_emulator_change_at_max_body_bytes(client) -> None:
    padded = b'{"latency_ms": 7' + b" " * MAX_BODY + b"}"

    response = await client.put("/v1/emulator/telegram", content=padded, headers=JSON)

    assert_problem(response, 413, "request-entity-too-large")
    settings = (await client.get("/v1/emulator/telegram")).json()
    assert settings["latency_ms"] == 0


# recipients


async def test_limits_accept_max_recipients(client) -> None:
    response = await client.post("/v1/messages", json=message(count=MAX_RECIPIENTS))

    assert response.status_code == 202, response.text
    assert len(response.json()["deliveries"]) == MAX_RECIPIENTS


async def test_limits_answer_422_past_max_recipients(client) -> None:
    response = await client.post("/v1/messages", json=message(count=MAX_RECIPIENTS + 1))

    problem = assert_problem(response, 422, "validation-error")
    (error,) = problem["errors"]
    assert error["field"] == "recipients"
    assert f"at most {MAX_RECIPIENTS}" in error["reason"]
    assert await stored(client) == 0


async def test_limits_count_repeated_recipients_against_the_limit(client) -> None:
    same = recipients(1) * (MAX_RECIPIENTS + 1)

    response = await client.post(
        "/v1/messages", json={"text": "hi", "recipients": same}
    )

    assert_problem(response, 422, "validation-error")


# unknown fields


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        # camelCase send_at must not turn into an immediate send
        ("POST", "/v1/messages", message(sendAt="2030-01-01T00:00:00Z"), "sendAt"),
        (
            "POST",
            "/v1/messages",
            {
                "text": "hi",
                "recipients": [{**recipients(1)[0], "sendAt": "2030-01-01T00:00:00Z"}],
            },
            "recipients[0].sendAt",
        ),
        ("PUT", "/v1/emulator/telegram", {"latencyMs": 5}, "latencyMs"),
    ],
)
async def test_limits_answer_422_naming_an_unknown_field(
    client, method, path, payload, field
) -> None:
    response = await client.request(method, path, json=payload)

    problem = assert_problem(response, 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert field in problem["detail"]


async def test_limits_store_nothing_for_a_misspelt_send_at(client) -> None:
    await client.post("/v1/messages", json=message(sendAt="2030-01-01T00:00:00Z"))

    assert await stored(client) == 0


# unsafe text


@pytest.mark.parametrize(
    "text",
    [
        "\x00",  # only a NUL
        "hello\x00world",  # a NUL inside
        "hello\x00",  # a NUL at the end
    ],
)
async def test_limits_answer_422_for_nul_in_text(client, text: str) -> None:
    response = await client.post("/v1/messages", json=message(text))

    problem = assert_problem(response, 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == ["text"]
    assert await stored(client) == 0


@pytest.mark.parametrize(
    "escaped",
    [
        r"\ud800",  # a high surrogate at the end
        r"a\ud800b",  # a high surrogate before a letter
        r"\udc00",  # a low surrogate alone
        r"\ude00\ud83d",  # a pair in the wrong order
        r"\ud83d\ud83d",  # two high surrogates
    ],
)
async def test_limits_refuse_a_lone_surrogate_in_text(client, escaped: str) -> None:
    raw = (
        '{"text": "' + escaped + '", '
        '"recipients": [{"messenger": "telegram", "id": "@alice_bot"}]}'
    ).encode()

    response = await client.post("/v1/messages", content=raw, headers=JSON)

    # msgspec refuses it while decoding (400); a 422 from validation is as good.
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await stored(client) == 0


async def test_limits_refuse_surrogate_bytes_that_are_not_utf8(client) -> None:
    # U+D800 encoded as if it were a character (CESU-8): not valid UTF-8.
    raw = (
        b'{"text": "\xed\xa0\x80", '
        b'"recipients": [{"messenger": "telegram", "id": "@alice_bot"}]}'
    )

    response = await client.post("/v1/messages", content=raw, headers=JSON)

    assert_problem(response, 400, "malformed-body")
    assert await stored(client) == 0


async def test_limits_accept_a_surrogate_pair_as_one_character(client) -> None:
    raw = (
        b'{"text": "ok \\ud83d\\ude00", '
        b'"recipients": [{"messenger": "telegram", "id": "@alice_bot"}]}'
    )

    response = await client.post("/v1/messages", content=raw, headers=JSON)

    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    stored_text = (await client.get(f"/v1/messages/{message_id}")).json()["text"]
    assert stored_text == "ok \N{GRINNING FACE}"
