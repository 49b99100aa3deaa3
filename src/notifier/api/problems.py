"""The one place that turns errors into application/problem+json answers."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
)

from notifier.api.schemas import DeliverySummary
from notifier.domain.errors import (
    Conflict,
    FieldError,
    IdempotencyMismatch,
    NotFound,
    NotifierError,
    ValidationFailed,
)
from notifier.domain.models import Delivery

log = structlog.get_logger("notifier.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:notifier:problem:"


class MalformedBody(NotifierError):
    """Raised when a request body is not JSON at all."""


def problem(
    status: int, slug: str, title: str, detail: str, **extra: Any
) -> Response[dict[str, Any]]:
    """Return one RFC 9457 problem answer."""
    body = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def _field_errors(errors: list[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "reason": e.reason} for e in errors]


def on_notifier_error(_: Request[Any, Any, Any], exc: NotifierError) -> Response[Any]:
    """Map a domain error to its problem answer."""
    if isinstance(exc, ValidationFailed):
        return problem(
            HTTP_422_UNPROCESSABLE_ENTITY,
            "validation-error",
            "The request is not valid",
            f"{len(exc.errors)} field(s) failed validation: {exc}",
            errors=_field_errors(exc.errors),
        )
    if isinstance(exc, NotFound):
        return problem(HTTP_404_NOT_FOUND, "not-found", f"No such {exc.kind}", str(exc))
    if isinstance(exc, Conflict):
        extra: dict[str, Any] = {}
        if isinstance(exc.current, Delivery):
            extra["delivery"] = msgspec.to_builtins(DeliverySummary.of(exc.current))
        return problem(
            HTTP_409_CONFLICT,
            "conflict",
            "The delivery is in the wrong state",
            str(exc),
            **extra,
        )
    if isinstance(exc, IdempotencyMismatch):
        return problem(
            HTTP_422_UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "The Idempotency-Key was used for another request",
            str(exc),
        )
    if isinstance(exc, MalformedBody):
        return problem(
            HTTP_400_BAD_REQUEST, "malformed-body", "The body is not JSON", str(exc)
        )
    return on_unexpected(_, exc)


def on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Map Litestar's own errors (unknown route, bad query parameter...) to problems."""
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        errors = [_litestar_field(e) for e in extra if isinstance(e, dict)]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem(
            HTTP_422_UNPROCESSABLE_ENTITY,
            "validation-error",
            "The request is not valid",
            f"{len(errors)} field(s) failed validation: {detail}",
            errors=errors,
        )
    if exc.status_code == HTTP_400_BAD_REQUEST:
        return problem(
            HTTP_400_BAD_REQUEST,
            "malformed-body",
            "The body is not JSON",
            f"The request body is not valid JSON: {exc.detail}.",
        )
    # The type names the status, so it stays stable whatever the detail says.
    phrase = HTTPStatus(exc.status_code).phrase
    slug = re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")
    if exc.status_code == HTTP_403_FORBIDDEN:
        slug = "forbidden"
    response = problem(exc.status_code, slug, phrase, exc.detail)
    response.headers.update(exc.headers or {})
    return response


def _litestar_field(error: dict[str, Any]) -> dict[str, str]:
    """Name the field of one of Litestar's decoding errors as notifier does.

    Litestar names the whole body ``data``; msgspec's message names the field
    for unknown and missing ones ("Object contains unknown field `sendAt`").
    """
    key = str(error.get("key", ""))
    reason = str(error.get("message", ""))
    path = "" if key == "data" else key
    named = _FIELD.search(reason)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    return {"field": path or "body", "reason": reason}


def on_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Log an unexpected error and answer 500 without a trace."""
    if isinstance(exc, RecursionError):
        # The JSON decoder recurses once per level of nesting.
        return problem(
            HTTP_400_BAD_REQUEST,
            "malformed-body",
            "The body is not JSON",
            "The request body is nested too deeply to decode.",
        )
    log.exception("request_crashed", error=type(exc).__name__)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        "The server failed to handle the request; it has been logged.",
    )


_WHERE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD = re.compile(r"field `(?P<name>[^`]+)`")


def from_msgspec(exc: msgspec.ValidationError) -> ValidationFailed:
    """Translate msgspec's message ("Expected `str`, got `int` - at `$.text`")."""
    message = str(exc)
    match = _WHERE.search(message)
    path = match["path"].lstrip(".") if match else ""
    reason = message[: match.start()] if match else message
    named = _FIELD.search(reason)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    return ValidationFailed([FieldError(path or "body", reason)])


EXCEPTION_HANDLERS = {
    NotifierError: on_notifier_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
