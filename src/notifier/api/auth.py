"""Bearer API keys: the authentication middleware and the per-route scope guard."""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from notifier.domain.keys import ApiKey, Scope, parse_token, secret_matches
from notifier.services import Services

log = structlog.get_logger("notifier.auth")

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="notifier"'}
# last_used_at is written at most this often per key: a write per request
# would cost more than the request itself.
_TOUCH_EVERY_MS = 60_000
# Bad keys allowed per client address and minute before 429: keys cannot be
# guessed, but each try costs a lookup.
MAX_FAILURES_PER_MINUTE = 20
# Routes outside /v1 (probes, metrics, docs) never need a key.
PUBLIC_PATHS = ["^/health", "^/metrics", "^/schema"]


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer <key>`` to an ApiKey on every /v1 request.

    A key is looked up on each request, so a revoked key stops working at once.
    Without a header the request passes as anonymous unless auth is required.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._touched: dict[str, int] = {}
        self._failures: dict[str, list[int]] = {}

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """Return the key behind the request, or raise NotAuthorizedException."""
        services: Services = connection.app.state.services
        header = connection.headers.get("authorization")
        if header is None:
            if services.config.auth_required:
                raise _unauthorized(
                    "This route needs an API key: send 'Authorization: Bearer <key>'."
                )
            return AuthenticationResult(user=None, auth=None)
        client = connection.client.host if connection.client else "unknown"
        self._refuse_guessers(client, services.now_ms())
        try:
            key = await _resolve(services, header)
        except NotAuthorizedException:
            self._failures.setdefault(client, []).append(services.now_ms())
            raise
        await self._touch(services, key)
        return AuthenticationResult(user=key.name, auth=key)

    def _refuse_guessers(self, client: str, now_ms: int) -> None:
        """Answer 429 to an address with too many bad keys in the last minute."""
        recent = [t for t in self._failures.get(client, []) if now_ms - t < 60_000]
        self._failures[client] = recent
        if len(recent) >= MAX_FAILURES_PER_MINUTE:
            retry_after_s = max(1, (recent[0] + 60_000 - now_ms + 999) // 1000)
            raise TooManyRequestsException(
                f"Too many requests with a bad API key from {client}; "
                f"try again in {retry_after_s} s.",
                headers={"Retry-After": str(retry_after_s)},
            )

    async def _touch(self, services: Services, key: ApiKey) -> None:
        now_ms = services.now_ms()
        if now_ms - self._touched.get(key.key_id, 0) >= _TOUCH_EVERY_MS:
            self._touched[key.key_id] = now_ms
            await services.outbox.keys.touch(key.key_id, now_ms)


async def _resolve(services: Services, header: str) -> ApiKey:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("The Authorization header must read 'Bearer <key>'.")
    parsed = parse_token(token.strip())
    found = await services.outbox.keys.find(parsed[0]) if parsed else None
    if parsed is None or found is None or not secret_matches(parsed[1], found[1]):
        raise _unauthorized("The API key is not valid.")
    key = found[0]
    if not key.is_active:
        raise _unauthorized(f"The API key {key.name!r} was revoked.")
    return key


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail, headers=CHALLENGE)


def require_scope(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: the request's key must hold the scope the route names in ``opt``."""
    if "scope" not in handler.opt:
        return  # Litestar's own OPTIONS answers carry no scope and no data
    scope = Scope(handler.opt["scope"])
    key = connection.scope.get("auth")
    if key is None:
        return  # anonymous, which the middleware allowed: auth is off
    if scope not in key.scopes:
        held = ", ".join(sorted(key.scopes)) or "none"
        raise PermissionDeniedException(
            f"The API key {key.name!r} lacks the {scope.value!r} scope this route "
            f"needs; it holds: {held}."
        )
