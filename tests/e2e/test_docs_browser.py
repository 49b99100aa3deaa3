"""The Swagger UI page in a real headless Chromium, against the real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from conftest import Launcher, Server

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}; Debian's package installs it: "
        "apt-get install chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the playwright package is not installed: pip install playwright",
)

pytestmark = pytest.mark.e2e

# No sandbox: CI runs as root. The rest keeps Chromium from calling home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
SEND = "#operations-v1-V1MessagesSendMessage"
LOCAL_HOST = "127.0.0.1"


@dataclass
class Traffic:
    """Every URL the page asked for, and those refused for leaving 127.0.0.1."""

    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str | None]:
        """Return the host of every URL asked for."""
        return {urlsplit(url).hostname for url in self.requested + self.refused}


@pytest.fixture
def server(launcher: Launcher) -> Server:
    """A development server: no key needed, the docs served, instant sends."""
    return launcher.start(
        server_environment="development",
        emulator_telegram_latency_ms=0,
        dispatcher_shutdown_grace_s=1,
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright; closed after the test."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture
def page(browser: Any, traffic: Traffic) -> Iterator[Any]:
    """A page whose every request is recorded; none may leave 127.0.0.1."""
    context = browser.new_context()

    def only_local(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == LOCAL_HOST:
            traffic.requested.append(url)
            route.continue_()
        else:
            traffic.refused.append(url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda error: traffic.page_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()


def open_send_operation(page: Any, server: Server) -> Any:
    """Load the docs, wait for POST /v1/messages, expand it and press Try it out."""
    page.goto(f"{server.base_url}/schema")
    operation = page.locator(SEND)
    operation.wait_for()
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    return operation


def execute(operation: Any) -> str:
    """Press Execute; return the status code the page shows."""
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    status.wait_for()
    return str(status.inner_text()).strip()


def test_docs_page_renders_every_operation(
    page: Any, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    page.goto(f"{server.base_url}/schema")

    page.locator(SEND).wait_for()

    shot = tmp_path / "docs.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/messages" in summaries
    assert "/health/ready" in summaries
    assert len(summaries) == 13
    assert traffic.page_errors == []
    assert traffic.hosts() == {LOCAL_HOST}


def test_docs_try_it_out_sends_a_message(
    page: Any, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    body = {
        "text": "sent from the docs page",
        "recipients": [{"messenger": "telegram", "id": "@docs_reader"}],
    }
    operation = open_send_operation(page, server)
    operation.locator("textarea.body-param__text").fill(json.dumps(body))

    status = execute(operation)

    page.screenshot(path=str(tmp_path / "try-it-out.png"))
    assert status == "202"
    with server.client() as http:
        stored = http.get("/v1/deliveries").json()["items"]
    assert [d["recipient"] for d in stored] == ["@docs_reader"]
    assert f"{server.base_url}/v1/messages" in traffic.requested
    assert traffic.page_errors == []
    assert traffic.hosts() == {LOCAL_HOST}


def test_docs_prefilled_example_is_accepted_as_it_stands(
    page: Any, server: Server, traffic: Traffic
) -> None:
    operation = open_send_operation(page, server)

    status = execute(operation)

    assert status == "202"
    assert traffic.hosts() == {LOCAL_HOST}
