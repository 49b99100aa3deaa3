"""Bearer API keys: the authentication middleware and the per-route scope guard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="notifier"'}
# last_used_at is written at most this often per key: a write per request
# would cost more than the request itself.
_TOUCH_EVERY_MS = 60_000
# Bad keys allowed per client address and minute before 429: keys cannot be
# guessed, but each try costs a lookup.
MAX_FAILURES_PER_MINUTE = 20
_MAX_TRACKED = 10_000
# Routes outside /v1 (probes, metrics, docs) never need a key.
PUBLIC_PATHS = ["^/health", "^/metrics", "^/schema"]


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer <key>`` to an ApiKey on every /v1 request.

    A key is looked up on each request, so a revoked key stops working at once.
    Without a header the request passes as anonymous unless auth is required.
    """

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
        usage = _usage(connection)
        client = connection.client.host if connection.client else "unknown"
        now_ms = services.now_ms()
        usage.refuse_guesser(client, now_ms)
        try:
            key = await _resolve(services, header)
        except NotAuthorizedException:
            usage.failures.setdefault(client, []).append(now_ms)
            raise
        if usage.is_touch_due(key, now_ms):
            await services.outbox.keys.touch(key.key_id, now_ms)
        return AuthenticationResult(user=key.name, auth=key)


@dataclass
class _Usage:
    """Per app (Litestar makes a middleware per route): bad keys and last uses."""

    failures: dict[str, list[int]] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)

    def refuse_guesser(self, client: str, now_ms: int) -> None:
        """Answer 429 to an address with too many bad keys in the last minute."""
        if len(self.failures) > _MAX_TRACKED:
            self._forget_idle(now_ms)
        recent = [t for t in self.failures.get(client, []) if now_ms - t < 60_000]
        if recent:
            self.failures[client] = recent
        else:
            self.failures.pop(client, None)
        if len(recent) >= MAX_FAILURES_PER_MINUTE:
            retry_after_s = max(1, (recent[0] + 60_000 - now_ms + 999) // 1000)
            raise TooManyRequestsException(
                f"Too many requests with a bad API key from {client}; "
                f"try again in {retry_after_s} s.",
                headers={"Retry-After": str(retry_after_s)},
            )

    def is_touch_due(self, key: ApiKey, now_ms: int) -> bool:
        """Whether to write the key's last use now; at most once a minute."""
        if now_ms - self.touched.get(key.key_id, 0) < _TOUCH_EVERY_MS:
            return False
        self.touched[key.key_id] = now_ms
        return True

    def _forget_idle(self, now_ms: int) -> None:
        for client, times in list(self.failures.items()):
            if now_ms - times[-1] >= 60_000:
                del self.failures[client]


def _usage(connection: ASGIConnection[Any, Any, Any, Any]) -> _Usage:
    state = connection.app.state
    usage: _Usage | None = state.get("key_usage")
    if usage is None:
        usage = state["key_usage"] = _Usage()
    return usage


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


async def require_scope(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: the request's key must hold the scope the route names in ``opt``.

    async on purpose: Litestar runs a plain function guard in a worker thread.
    """
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
