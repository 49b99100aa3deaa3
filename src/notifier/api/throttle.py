"""Throttling per scope, with Litestar's rate-limit middleware."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.middleware.rate_limit import (
    CacheObject,
    RateLimitConfig,
    RateLimitMiddleware,
    get_remote_address,
)

from notifier.config import ThrottleConfig
from notifier.domain.keys import Scope


class _RateLimit(RateLimitMiddleware):
    """Litestar's middleware, plus Retry-After once the window is used up."""

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        """Add Retry-After to the standard RateLimit headers when none are left."""
        headers = super().create_response_headers(cache_object)
        if len(cache_object.history) >= self.max_requests:
            headers["Retry-After"] = headers[self.config.rate_limit_reset_header_key]
        return headers


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
    def applies(request: Request[Any, Any, Any]) -> bool:
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
