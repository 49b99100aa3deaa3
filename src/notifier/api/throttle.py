"""Throttling per scope, with Litestar's rate-limit middleware."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
from litestar import Request
from litestar.middleware.rate_limit import (
    CacheObject,
    RateLimitConfig,
    RateLimitMiddleware,
    get_remote_address,
)
from litestar.types import ASGIApp, Message, Send

from notifier.config import ThrottleConfig
from notifier.domain.keys import Scope


class _RateLimit(RateLimitMiddleware):
    """Litestar's middleware, plus Retry-After on the 429 answers.

    Litestar makes one instance per route, each with a lock of its own; the
    budget of a scope spans several routes, so its instances share one lock,
    or concurrent requests to two routes could both take the last slot.
    """

    _locks: ClassVar[dict[int, anyio.Lock]] = {}

    def __init__(self, app: ASGIApp, config: RateLimitConfig) -> None:
        super().__init__(app, config)
        self._lock = self._locks.setdefault(id(config), anyio.Lock())

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        """Add Retry-After to the standard RateLimit headers when none are left."""
        headers = super().create_response_headers(cache_object)
        if len(cache_object.history) >= self.max_requests:
            headers["Retry-After"] = headers[self.config.rate_limit_reset_header_key]
        return headers

    def create_send_wrapper(self, send: Send, cache_object: CacheObject) -> Send:
        """Keep Retry-After off the answers that went through (the last one too)."""

        async def without_retry_after(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, v) for k, v in message["headers"] if k.lower() != b"retry-after"
                ]
            await send(message)

        return super().create_send_wrapper(without_retry_after, cache_object)


def rate_limits(config: ThrottleConfig) -> list[RateLimitConfig]:
    """Return one rate-limit middleware config per scope that has a limit."""
    per_minute = {
        Scope.SEND: config.send_per_minute,
        Scope.READ: config.read_per_minute,
        Scope.ADMIN: config.admin_per_minute,
    }
    return [
        RateLimitConfig(
            rate_limit=("minute", limit),
            check_throttle_handler=_for_scope(scope),
            identifier_for_request=_identify(scope),
            middleware_class=_RateLimit,
            exclude=["^/health", "^/metrics", "^/schema"],
        )
        for scope, limit in per_minute.items()
        if limit
    ]


def _for_scope(scope: Scope) -> Any:
    # async on purpose: Litestar runs a plain function in a worker thread.
    async def applies(request: Request[Any, Any, Any]) -> bool:
        return bool(request.route_handler.opt.get("scope") == scope)

    return applies


def _identify(scope: Scope) -> Any:
    def identify(request: Request[Any, Any, Any]) -> str:
        key = request.scope.get("auth")
        who = (
            f"key:{key.name}"
            if key is not None
            else f"ip:{get_remote_address(request)}"
        )
        return f"{scope.value}:{who}"

    return identify
