"""Per-scope throttling: 429 with the RateLimit headers, per key, per scope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.middleware import rate_limit
from litestar.testing import AsyncTestClient

from notifier.app import create_app
from notifier.config import Config, ThrottleConfig
from notifier.domain.keys import Scope, new_key

SEND_LIMIT = 3
READ_LIMIT = 5
WINDOW_S = 60


def message(recipient: str = "@alice_bot") -> dict[str, Any]:
    return {"text": "hi", "recipients": [{"messenger": "telegram", "id": recipient}]}


@pytest.fixture
def config(config: Config) -> Config:
    """The app client's config, with small send and read budgets."""
    throttle = ThrottleConfig(send_per_minute=SEND_LIMIT, read_per_minute=READ_LIMIT)
    return msgspec.structs.replace(config, throttle=throttle)


@pytest.fixture
async def unthrottled(config: Config) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """An app client with every limit set to 0, which turns throttling off."""
    off = ThrottleConfig(send_per_minute=0, read_per_minute=0, admin_per_minute=0)
    app = create_app(msgspec.structs.replace(config, throttle=off))
    async with AsyncTestClient(app) as client:
        yield client


def grant(client: AsyncTestClient, name: str, *scopes: str) -> dict[str, str]:  # type: ignore[type-arg]
    """Store a key on the app's own loop; return the header that carries it."""
    new = new_key()
    keys = client.app.state.services.outbox.keys
    wanted = frozenset(Scope(s) for s in scopes)
    client.blocking_portal.call(keys.create, name, wanted, new, int(time.time() * 1000))
    return {"Authorization": f"Bearer {new.token}"}


async def use_up_send(client: AsyncTestClient, **kwargs: Any) -> None:  # type: ignore[type-arg]
    for i in range(SEND_LIMIT):
        response = await client.post(
            "/v1/messages", json=message(f"@user{i}_bot"), **kwargs
        )
        assert response.status_code == 202, response.text


async def delivery_count(client: AsyncTestClient) -> int:  # type: ignore[type-arg]
    page = (await client.get("/v1/deliveries?limit=500")).json()
    return len(page["items"])


async def test_throttle_answers_429_past_the_limit(client) -> None:
    await use_up_send(client)

    response = await client.post("/v1/messages", json=message("@late_bot"))

    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:notifier:problem:too-many-requests"


async def test_throttle_sends_retry_after_and_ratelimit_headers(client) -> None:
    await use_up_send(client)

    headers = (await client.post("/v1/messages", json=message("@late_bot"))).headers

    assert 1 <= int(headers["retry-after"]) <= WINDOW_S
    assert headers["ratelimit-limit"] == str(SEND_LIMIT)
    assert headers["ratelimit-remaining"] == "0"
    assert 1 <= int(headers["ratelimit-reset"]) <= WINDOW_S
    assert headers["ratelimit-policy"] == f"{SEND_LIMIT}; w={WINDOW_S}"


async def test_throttle_sends_no_retry_after_on_an_accepted_request(client) -> None:
    responses = [
        await client.post("/v1/messages", json=message(f"@user{i}_bot"))
        for i in range(SEND_LIMIT)
    ]

    # the last one used up the budget, but it was accepted all the same
    assert [r.status_code for r in responses] == [202] * SEND_LIMIT
    assert ["retry-after" in r.headers for r in responses] == [False] * SEND_LIMIT


async def test_throttle_counts_down_what_remains(client) -> None:
    remaining = []

    for i in range(SEND_LIMIT):
        response = await client.post("/v1/messages", json=message(f"@user{i}_bot"))
        remaining.append(response.headers["ratelimit-remaining"])

    assert remaining == ["2", "1", "0"]


async def test_throttle_stores_nothing_of_a_refused_request(client) -> None:
    await use_up_send(client)
    before = await delivery_count(client)

    refused = await client.post(
        "/v1/messages",
        json=message("@refused_bot"),
        headers={"Idempotency-Key": "order-1"},
    )

    assert refused.status_code == 429
    assert await delivery_count(client) == before


async def test_throttle_accepts_again_after_the_window(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await use_up_send(client)
    assert (await client.post("/v1/messages", json=message())).status_code == 429
    real_time = time.time
    monkeypatch.setattr(rate_limit, "time", lambda: real_time() + WINDOW_S + 1)

    response = await client.post("/v1/messages", json=message("@next_bot"))

    assert response.status_code == 202, response.text
    assert response.headers["ratelimit-remaining"] == str(SEND_LIMIT - 1)


async def test_throttle_forgets_the_idempotency_key_of_a_refused_request(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused request must not half-claim its key: a later, other body may use it."""
    headers = {"Idempotency-Key": "order-2"}
    await use_up_send(client)
    await client.post("/v1/messages", json=message("@first_bot"), headers=headers)
    real_time = time.time
    monkeypatch.setattr(rate_limit, "time", lambda: real_time() + WINDOW_S + 1)

    response = await client.post(
        "/v1/messages", json=message("@second_bot"), headers=headers
    )

    assert response.status_code == 202, response.text


async def test_throttle_gives_each_key_its_own_budget(client) -> None:
    first = grant(client, "first", "send")
    second = grant(client, "second", "send")
    await use_up_send(client, headers=first)

    refused = await client.post("/v1/messages", json=message(), headers=first)
    accepted = await client.post("/v1/messages", json=message(), headers=second)

    assert refused.status_code == 429
    assert accepted.status_code == 202


async def test_throttle_keeps_a_budget_per_scope(client) -> None:
    headers = grant(client, "both", "send", "read")
    await use_up_send(client, headers=headers)

    response = await client.get("/v1/stats", headers=headers)

    assert response.status_code == 200
    assert response.headers["ratelimit-limit"] == str(READ_LIMIT)


async def test_throttle_keeps_keys_apart_from_anonymous_clients(client) -> None:
    headers = grant(client, "app", "send")
    await use_up_send(client)

    response = await client.post("/v1/messages", json=message(), headers=headers)

    assert response.status_code == 202


@pytest.mark.parametrize("path", ["/health/live", "/metrics", "/schema/openapi.json"])
async def test_throttle_leaves_routes_outside_v1_alone(client, path: str) -> None:
    statuses = [(await client.get(path)).status_code for _ in range(READ_LIMIT + 2)]

    assert statuses == [200] * (READ_LIMIT + 2)


async def test_throttle_of_zero_is_off(unthrottled) -> None:
    responses = [
        await unthrottled.post("/v1/messages", json=message(f"@user{i}_bot"))
        for i in range(SEND_LIMIT * 3)
    ]

    assert [r.status_code for r in responses] == [202] * (SEND_LIMIT * 3)
    assert "ratelimit-limit" not in responses[-1].headers


async def burst(app: Litestar, paths: list[str]) -> list[int]:
    """Send GETs to ``paths`` all at once, in the app's own event loop."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        responses = await asyncio.gather(*(http.get(p) for p in paths))
    return [r.status_code for r in responses]


async def test_throttle_holds_a_route_budget_under_concurrent_requests(client) -> None:
    statuses = client.blocking_portal.call(burst, client.app, ["/v1/stats"] * 20)

    assert statuses.count(200) == READ_LIMIT
    assert statuses.count(429) == 20 - READ_LIMIT


async def test_throttle_holds_a_scope_budget_under_concurrent_requests(client) -> None:
    read_routes = [
        "/v1/stats",
        "/v1/deliveries",
        "/v1/emulator/telegram",
        "/v1/emulator/viber/inbox",
    ]

    statuses = client.blocking_portal.call(burst, client.app, read_routes * 5)

    assert statuses.count(200) == READ_LIMIT
