"""API keys and scopes, development and production mode, through the app client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from notifier.api.auth import MAX_FAILURES_PER_MINUTE
from notifier.app import create_app
from notifier.config import AuthConfig, Config
from notifier.domain.keys import ApiKey, Scope, new_key
from notifier.storage.sqlite import SqliteOutbox

T = TypeVar("T")

CHALLENGE = 'Bearer realm="notifier"'
LATER = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
BODY = {"text": "hi", "recipients": [{"messenger": "telegram", "id": "@alice_bot"}]}
SCHEDULED = BODY | {"send_at": LATER}

# (scope, method, path, body, status once the guard lets the request through)
ROUTES = [
    ("send", "POST", "/v1/messages", BODY, 202),
    ("read", "GET", "/v1/messages/{message_id}", None, 200),
    ("read", "GET", "/v1/deliveries/{delivery_id}", None, 200),
    ("read", "GET", "/v1/deliveries", None, 200),
    ("read", "GET", "/v1/stats", None, 200),
    ("read", "GET", "/v1/emulator/{messenger}/inbox", None, 200),
    ("read", "GET", "/v1/emulator/{messenger}", None, 200),
    # the scheduled delivery is still pending, so it can be cancelled
    ("admin", "POST", "/v1/deliveries/{delivery_id}/cancel", None, 200),
    # a pending delivery is not failed: 409 means the guard let it through
    ("admin", "POST", "/v1/deliveries/{delivery_id}/retry", None, 409),
    ("admin", "PUT", "/v1/emulator/{messenger}", {"latency_ms": 0}, 200),
]
ROUTE_IDS = [f"{method} {path}" for _, method, path, _, _ in ROUTES]


def now_ms() -> int:
    return int(time.time() * 1000)


def on_app(client: AsyncTestClient, call: Callable[..., Awaitable[T]], *args: Any) -> T:  # type: ignore[type-arg]
    """Run ``call`` on the app's event loop, where its database connections live."""
    return client.blocking_portal.call(call, *args)


def grant(client: AsyncTestClient, name: str, *scopes: str) -> dict[str, str]:  # type: ignore[type-arg]
    """Store a key with these scopes; return the header that carries it."""
    new = new_key()
    wanted = frozenset(Scope(s) for s in scopes)
    keys = client.app.state.services.outbox.keys
    on_app(client, keys.create, name, wanted, new, now_ms())
    return {"Authorization": f"Bearer {new.token}"}


def list_keys(client: AsyncTestClient) -> list[ApiKey]:  # type: ignore[type-arg]
    return on_app(client, client.app.state.services.outbox.keys.list_all)


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Check a problem+json answer; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:notifier:problem:{slug}"
    assert problem["status"] == status
    return problem


def assert_unauthorized(response: Any) -> dict[str, Any]:
    problem = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == CHALLENGE
    return problem


@pytest.fixture(params=["auth_required", "production"])
def locked_config(request: pytest.FixtureRequest, config: Config) -> Config:
    """A config where every /v1 request needs a key, in either way of asking."""
    if request.param == "production":
        server = msgspec.structs.replace(config.server, environment="production")
        return msgspec.structs.replace(config, server=server)
    return msgspec.structs.replace(config, auth=AuthConfig(required=True))


@pytest.fixture
async def locked(locked_config: Config) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """An app client on which /v1 needs a key."""
    async with AsyncTestClient(create_app(locked_config)) as client:
        yield client


@pytest.fixture
async def production(config: Config) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """An app client in production mode."""
    server = msgspec.structs.replace(config.server, environment="production")
    app = create_app(msgspec.structs.replace(config, server=server))
    async with AsyncTestClient(app) as client:
        yield client


@pytest.fixture
async def secured(config: Config) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """An app client in development mode with auth.required set."""
    app = create_app(msgspec.structs.replace(config, auth=AuthConfig(required=True)))
    async with AsyncTestClient(app) as client:
        yield client


@pytest.fixture
async def scheduled(secured: AsyncTestClient) -> dict[str, str]:  # type: ignore[type-arg]
    """The ids of a message held for tomorrow, to fill the route templates."""
    headers = grant(secured, "setup", "send")
    response = await secured.post("/v1/messages", json=SCHEDULED, headers=headers)
    assert response.status_code == 202, response.text
    accepted = response.json()
    return {
        "message_id": accepted["id"],
        "delivery_id": accepted["deliveries"][0]["id"],
        "messenger": "telegram",
    }


# who may pass


async def test_auth_refuses_a_request_without_a_key(locked) -> None:
    response = await locked.get("/v1/stats")

    problem = assert_unauthorized(response)
    assert "Authorization: Bearer" in problem["detail"]


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",  # another scheme
        "Bearer",  # a scheme and no key
        "Bearer    ",  # a key of blanks
        "ntf_0123456789ab_" + "A" * 43,  # a key without the scheme
        "Bearer not-a-notifier-key",  # not our token format
        "Bearer ntf_0123456789ab_tooshort",  # the secret cut short
        "Bearer ntf_0123456789AB_" + "A" * 43,  # the key id in upper case
    ],
)
async def test_auth_refuses_a_malformed_header(secured, header: str) -> None:
    response = await secured.get("/v1/stats", headers={"Authorization": header})

    assert_unauthorized(response)


async def test_auth_refuses_an_unknown_key(secured) -> None:
    grant(secured, "ci", "read")
    stranger = new_key().token

    response = await secured.get(
        "/v1/stats", headers={"Authorization": f"Bearer {stranger}"}
    )

    problem = assert_unauthorized(response)
    assert problem["detail"] == "The API key is not valid."


async def test_auth_refuses_a_known_key_id_with_a_wrong_secret(secured) -> None:
    headers = grant(secured, "ci", "read")
    key_id = headers["Authorization"].split("_")[1]
    other_secret = new_key().token.split("_", 2)[2]
    forged = f"Bearer ntf_{key_id}_{other_secret}"

    response = await secured.get("/v1/stats", headers={"Authorization": forged})

    assert_unauthorized(response)


async def test_auth_answers_429_to_an_address_that_keeps_guessing(secured) -> None:
    headers = grant(secured, "ci", "read")
    key_id = headers["Authorization"].split("_")[1]
    guess = {"Authorization": f"Bearer ntf_{key_id}_{'A' * 43}"}
    misses = [
        (await secured.get("/v1/stats", headers=guess)).status_code
        for _ in range(MAX_FAILURES_PER_MINUTE)
    ]

    response = await secured.get("/v1/stats", headers=guess)

    assert misses == [401] * MAX_FAILURES_PER_MINUTE
    assert_problem(response, 429, "too-many-requests")
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_auth_refuses_a_key_revoked_while_the_service_runs(
    secured, config: Config
) -> None:
    headers = grant(secured, "ci", "read")
    assert (await secured.get("/v1/stats", headers=headers)).status_code == 200
    # Revoke through a connection of its own, as `notifier keys revoke` does.
    other = await SqliteOutbox.open(config.database.path)
    try:
        await other.keys.revoke("ci", now_ms())
    finally:
        await other.close()

    response = await secured.get("/v1/stats", headers=headers)

    problem = assert_unauthorized(response)
    assert "'ci'" in problem["detail"]
    assert "revoked" in problem["detail"]


@pytest.mark.parametrize(
    ("scope", "method", "path", "body", "status"), ROUTES, ids=ROUTE_IDS
)
async def test_auth_lets_a_key_use_the_routes_of_its_scope(
    secured, scheduled, scope, method, path, body, status
) -> None:
    headers = grant(secured, "only-one-scope", scope)

    response = await secured.request(
        method, path.format(**scheduled), json=body, headers=headers
    )

    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("scope", "method", "path", "body", "status"), ROUTES, ids=ROUTE_IDS
)
async def test_auth_answers_403_naming_the_scope_a_key_lacks(
    secured, scheduled, scope, method, path, body, status
) -> None:
    others = [s.value for s in Scope if s.value != scope]
    headers = grant(secured, "every-other-scope", *others)

    response = await secured.request(
        method, path.format(**scheduled), json=body, headers=headers
    )

    problem = assert_problem(response, 403, "forbidden")
    assert f"lacks the {scope!r} scope" in problem["detail"]


async def test_auth_table_names_every_v1_route_with_its_scope(client) -> None:
    """A route added to /v1 must be added to ROUTES, with the scope it declares."""
    declared = {
        (method, re.sub(r":\w+}", "}", route.path), handler.opt.get("scope"))
        for route in client.app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/v1/")
        for handler in route.route_handlers
        for method in handler.http_methods
        # Litestar answers OPTIONS itself, with the Allow header only.
        if method != "OPTIONS"
    }

    tested = {(method, path, scope) for scope, method, path, _, _ in ROUTES}

    assert declared == tested


async def test_auth_records_when_a_key_was_last_used(secured) -> None:
    headers = grant(secured, "ci", "read")
    before = now_ms()

    await secured.get("/v1/stats", headers=headers)

    (key,) = list_keys(secured)
    assert key.last_used_at_ms is not None
    assert before <= key.last_used_at_ms <= now_ms()


async def test_auth_leaves_last_used_empty_for_a_refused_secret(secured) -> None:
    headers = grant(secured, "ci", "read")
    key_id = headers["Authorization"].split("_")[1]
    forged = f"Bearer ntf_{key_id}_{'A' * 43}"

    await secured.get("/v1/stats", headers={"Authorization": forged})

    (key,) = list_keys(secured)
    assert key.last_used_at_ms is None


# development mode


async def test_auth_development_serves_v1_without_a_key(client) -> None:
    sent = await client.post("/v1/messages", json=BODY)

    read = await client.get("/v1/stats")

    assert sent.status_code == 202
    assert read.status_code == 200


async def test_auth_development_still_refuses_a_bad_key(client) -> None:
    stranger = new_key().token

    response = await client.get(
        "/v1/stats", headers={"Authorization": f"Bearer {stranger}"}
    )

    assert_unauthorized(response)


async def test_auth_development_still_checks_the_scope_of_a_key(client) -> None:
    headers = grant(client, "reader", "read")

    response = await client.post("/v1/messages", json=BODY, headers=headers)

    assert_problem(response, 403, "forbidden")


async def test_auth_development_serves_the_api_docs(client) -> None:
    page = await client.get("/schema")

    schema = await client.get("/schema/openapi.json")

    assert page.status_code == 200
    assert schema.status_code == 200
    assert "BearerKey" in schema.json()["components"]["securitySchemes"]


# production mode


async def wait_ticked(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    dispatcher = client.app.state.services.dispatcher
    for _ in range(200):
        if dispatcher.last_tick_s is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the dispatcher never ticked")


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
async def test_auth_production_leaves_probes_and_metrics_open(
    production, path: str
) -> None:
    await wait_ticked(production)

    response = await production.get(path)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/schema",
        "/schema/swagger",
        "/schema/openapi.json",
        "/schema/assets/swagger-ui-bundle.js",
    ],
)
async def test_auth_production_serves_no_api_docs(production, path: str) -> None:
    headers = grant(production, "ops", "read", "send", "admin")

    response = await production.get(path, headers=headers)

    assert response.status_code == 404


async def test_auth_production_serves_v1_to_a_valid_key(production) -> None:
    headers = grant(production, "ci", "send")

    response = await production.post("/v1/messages", json=BODY, headers=headers)

    assert response.status_code == 202, response.text
