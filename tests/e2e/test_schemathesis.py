"""Schema-driven fuzzing: schemathesis against the real server and its own schema.

One test per operation in the schema, each against a fresh ``notifier serve``
on 127.0.0.1, through schemathesis' examples, coverage and fuzzing phases.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from notifier.app import create_app
from notifier.config import Config
from notifier.domain.keys import Scope, new_key
from notifier.storage.sqlite import SqliteOutbox

if TYPE_CHECKING:
    from conftest import Launcher, Server

pytestmark = pytest.mark.e2e

# The fuzzing phase's cases per operation; examples and coverage add their own.
MAX_EXAMPLES = 30
WAIT_S = 10.0
POLL_S = 0.05

# The schema a development server serves at /schema/openapi.json. It is built
# in-process because the cases are made when the module loads, before any
# server runs; test_schemathesis_fuzzes_the_schema_the_server_serves checks
# that it is the served one. (schemathesis.pytest.from_fixture would load it
# from the server, but breaks on pytest 9.2: it sets Function._nodeid.)
APP_SCHEMA: dict[str, Any] = create_app(Config()).openapi_schema.to_schema()
schema = schemathesis.openapi.from_dict(APP_SCHEMA)


@dataclass(frozen=True)
class Fuzzed:
    """The server under fuzzing, the key it knows, and ids of stored records."""

    server: Server
    headers: dict[str, str]
    ids: dict[str, list[str]]


def store_key(database: Path) -> str:
    """Create a key with every scope in the server's database; return its token."""

    async def create() -> str:
        new = new_key()
        outbox = await SqliteOutbox.open(database)
        try:
            now_ms = int(time.time() * 1000)
            await outbox.keys.create("fuzz", frozenset(Scope), new, now_ms)
        finally:
            await outbox.close()
        return new.token

    return asyncio.run(create())


def send(
    http: httpx.Client, messenger: str, recipient: str, **extra: Any
) -> dict[str, str]:
    body = {"text": "seed", "recipients": [{"messenger": messenger, "id": recipient}]}
    response = http.post("/v1/messages", json=body | extra)
    assert response.status_code == 202, response.text
    accepted = response.json()
    return {
        "message_id": accepted["id"],
        "delivery_id": accepted["deliveries"][0]["id"],
    }


def wait_status(http: httpx.Client, delivery_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if http.get(f"/v1/deliveries/{delivery_id}").json()["status"] == status:
            return
        time.sleep(POLL_S)
    raise AssertionError(f"delivery {delivery_id} never became {status!r}")


def seed(http: httpx.Client) -> dict[str, list[str]]:
    """Store a pending, a sent and a failed delivery; return their ids by name."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pending = send(http, "telegram", "@pending_bot", send_at=tomorrow)
    sent = send(http, "whatsapp", "+44 7700 900123")
    http.put("/v1/emulator/viber", json={"permanent_error_rate": 1.0})
    failed = send(http, "viber", "failing==")
    wait_status(http, sent["delivery_id"], "sent")
    wait_status(http, failed["delivery_id"], "failed")
    http.put("/v1/emulator/viber", json={"permanent_error_rate": 0.0})
    records = [pending, sent, failed]
    return {name: [r[name] for r in records] for name in ("message_id", "delivery_id")}


@pytest.fixture
def fuzzed(launcher: Launcher, tmp_path: Path) -> Iterator[Fuzzed]:
    """A development server that needs a key, with throttling off and instant sends."""
    headers = {"Authorization": f"Bearer {store_key(tmp_path / 'outbox.db')}"}
    server = launcher.start(
        server_environment="development",
        auth_required="true",
        throttle_send_per_minute=0,
        throttle_read_per_minute=0,
        throttle_admin_per_minute=0,
        emulator_telegram_latency_ms=0,
        emulator_whatsapp_latency_ms=0,
        emulator_viber_latency_ms=0,
        dispatcher_poll_interval_s=0.05,
        dispatcher_backoff_base_s=0.05,
        dispatcher_max_attempts=2,
        # PUT /v1/emulator may set a 60 s latency; do not wait for it at exit.
        dispatcher_shutdown_grace_s=1,
    )
    with server.client(headers=headers) as http:
        ids = seed(http)
    yield Fuzzed(server, headers, ids)


# Not negative_data_rejection: the key sent with every case fills in the
# Authorization a negative case left out, and unknown query parameters are
# ignored by design. Nor positive_data_acceptance: recipient ids and times are
# checked past what the schema can say (a Viber id is not a phone number).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_schemathesis_fuzzes_the_schema_the_server_serves(fuzzed: Fuzzed) -> None:
    with fuzzed.server.client() as http:
        served = http.get("/schema/openapi.json").json()

    assert served == APP_SCHEMA


def stored_or_generated(value: Any, ids: list[str]) -> Any:
    """Swap about half the generated ids, picked by checksum, for stored ones.

    Random ids only ever find 404. The choice hangs on the value, so a case
    that fails is made again the same way when hypothesis replays it.
    """
    digest = zlib.crc32(str(value).encode())
    return ids[digest // 2 % len(ids)] if digest % 2 else value


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_finds_no_5xx_and_no_answer_off_the_schema(
    case: schemathesis.Case, fuzzed: Fuzzed
) -> None:
    for name, ids in fuzzed.ids.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = stored_or_generated(
                case.path_parameters[name], ids
            )
    # A made-up key counts as a guess: 20 a minute and the route answers 429.
    # test_auth covers the 401s; here every case carries the real key.
    case.headers = {**(case.headers or {}), **fuzzed.headers}

    case.call_and_validate(
        base_url=fuzzed.server.base_url,
        headers=fuzzed.headers,
        checks=CHECKS,
        timeout=10,
    )


# Fuzzed recipients almost never fit their messenger, so the 202 is made by hand.
SOON = datetime.now(UTC) + timedelta(days=1)
VALID_SENDS = [
    # one recipient, now
    {"text": "hi", "recipients": [{"messenger": "telegram", "id": "@alice_bot"}]},
    # several, one of them held to its own time, and a repeat that collapses
    {
        "text": "later",
        "send_at": SOON.astimezone(timezone(timedelta(hours=1))).isoformat(),
        "recipients": [
            {"messenger": "whatsapp", "id": "+7 999 123-45-67"},
            {
                "messenger": "viber",
                "id": "carol==",
                "send_at": (SOON + timedelta(days=1)).isoformat(),
            },
            {"messenger": "whatsapp", "id": "79991234567"},
        ],
    },
]


@pytest.mark.parametrize("body", VALID_SENDS)
def test_schemathesis_accepted_message_keeps_to_the_schema(
    fuzzed: Fuzzed, body: dict[str, Any]
) -> None:
    case = schema["/v1/messages"]["POST"].Case(body=body, media_type="application/json")

    response = case.call_and_validate(
        base_url=fuzzed.server.base_url, headers=fuzzed.headers, checks=CHECKS
    )

    assert response.status_code == 202


# What the fuzz run found, pinned down


@pytest.mark.parametrize(
    ("method", "path", "schema_path"),
    [
        ("POST", "/v1/messages", "/v1/messages"),
        ("PUT", "/v1/emulator/telegram", "/v1/emulator/{messenger}"),
    ],
)
def test_schema_documents_the_415_for_a_body_that_is_not_json(
    fuzzed: Fuzzed, method: str, path: str, schema_path: str
) -> None:
    with fuzzed.server.client(headers=fuzzed.headers) as http:
        response = http.request(method, path, content=b"{}")

    assert response.status_code == 415
    documented = APP_SCHEMA["paths"][schema_path][method.lower()]["responses"]
    assert "415" in documented


@pytest.mark.parametrize(
    ("method", "path", "component", "body"),
    [
        (
            "POST",
            "/v1/messages",
            "SendMessage",
            {
                "text": "hi",
                "recipients": [{"messenger": "telegram", "id": "@alice_bot"}],
                "sendAt": "2030-01-01T00:00:00Z",
            },
        ),
        (
            "POST",
            "/v1/messages",
            "RecipientIn",
            {
                "text": "hi",
                "recipients": [{"messenger": "telegram", "id": "@alice_bot", "x": 1}],
            },
        ),
        ("PUT", "/v1/emulator/telegram", "EmulatorPatch", {"latencyMs": 5}),
    ],
)
def test_schema_forbids_the_unknown_fields_the_server_refuses(
    fuzzed: Fuzzed, method: str, path: str, component: str, body: dict[str, Any]
) -> None:
    with fuzzed.server.client(headers=fuzzed.headers) as http:
        response = http.request(method, path, json=body)

    assert response.status_code == 422
    declared = APP_SCHEMA["components"]["schemas"][component]
    assert declared.get("additionalProperties") is False
