"""The /v1/emulator routes: settings and inboxes."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, put
from litestar.params import FromPath, FromQuery, JSONBody

from notifier.api.docs import problems
from notifier.api.params import Cursor, Injected, Limit
from notifier.api.problems import from_msgspec
from notifier.api.schemas import EmulatorPatch, InboxItemOut, InboxPage, MessengerName
from notifier.domain.errors import FieldError, ValidationFailed
from notifier.domain.keys import Scope
from notifier.domain.models import Messenger
from notifier.domain.recipients import InvalidRecipient, normalise
from notifier.messengers.emulator import (
    EmulatorSettings,
    change_settings,
    load_shared_settings,
)


@get(
    "/emulator/{messenger:str}/inbox",
    summary="Read an emulated messenger's inbox",
    opt={"scope": Scope.READ},
    responses=problems(400, 401, 403, 422, 429),
)
async def read_inbox(
    messenger: FromPath[MessengerName],
    services: Injected,
    recipient: FromQuery[str | None] = None,
    limit: Limit = 50,
    cursor: Cursor = 0,
) -> InboxPage:
    """Return what the emulated messenger received, oldest first."""
    kind = Messenger(messenger)
    wanted = None
    if recipient is not None:
        try:
            wanted = normalise(kind, recipient).id
        except InvalidRecipient as exc:
            raise ValidationFailed([FieldError("recipient", str(exc))]) from exc
    items = await services.inbox.list(
        kind, recipient=wanted, limit=limit + 1, after_seq=cursor
    )
    page = items[:limit]
    next_cursor = str(page[-1].seq) if len(items) > limit else None
    return InboxPage([InboxItemOut.of(i) for i in page], next_cursor)


@get(
    "/emulator/{messenger:str}",
    summary="Read an emulator's settings",
    opt={"scope": Scope.READ},
    responses=problems(400, 401, 403, 422, 429),
)
async def get_emulator(
    messenger: FromPath[MessengerName], services: Injected
) -> EmulatorSettings:
    """Return the emulated messenger's current latency and failure rates."""
    await load_shared_settings(services.inbox, services.emulators)
    return services.emulators[Messenger(messenger)].settings


@put(
    "/emulator/{messenger:str}",
    summary="Change an emulator's settings",
    opt={"scope": Scope.ADMIN},
    responses=problems(400, 401, 403, 413, 415, 422, 429),
)
async def put_emulator(
    request: Request[Any, Any, Any],
    messenger: FromPath[MessengerName],
    data: JSONBody[EmulatorPatch],
    services: Injected,
) -> EmulatorSettings:
    """Change any subset of the settings, in every worker, until the next restart."""
    try:
        # Litestar converts "100" to 100 for ``data``; a number must be a number.
        strict = msgspec.json.decode(await request.body(), type=EmulatorPatch)
        patch = msgspec.structs.asdict(strict)
        changes = {k: v for k, v in patch.items() if v is not msgspec.UNSET}
        return await change_settings(services.emulators[Messenger(messenger)], changes)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from exc
