"""What the v1 handlers share: injected services, query types, body checks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from notifier.api.problems import MalformedBody
from notifier.domain.errors import FieldError, ValidationFailed
from notifier.services import Services

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size.")]
Cursor = Annotated[
    int, QueryParameter(ge=0, le=2**53, description="The next_cursor of a page.")
]
DeliveryCursor = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="The next_cursor of a page.",
    ),
]
Injected = NamedDependency[Services]


def provide_services(state: State) -> Services:
    """Hand the app's running services to a handler."""
    services: Services = state.services
    return services


async def require_json(request: Request[Any, Any, Any]) -> None:
    """Refuse, before decoding, a body that is empty or not declared as JSON."""
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    media_type = request.content_type[0]
    if media_type != "application/json" and not media_type.endswith("+json"):
        sent = media_type or "no Content-Type"
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Send the body as application/json, not {sent!r}.",
        )
    if not (await request.body()).strip():
        raise MalformedBody("The request body is empty; send a JSON object.")


def parse_time(value: str | None, field: str) -> datetime | None:
    """Parse an RFC 3339 time strictly, or raise ValidationFailed naming ``field``."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, datetime)
    except msgspec.ValidationError as exc:
        example = "'2026-12-24T18:00:00+01:00'"
        reason = f"expected an RFC 3339 time such as {example}, got {value!r}"
        if ":60" in value:
            reason += "; leap seconds (:60) are not supported"
        raise ValidationFailed([FieldError(field, reason)]) from exc
