"""The v1 router: every route, with its dependencies, guard and body check."""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide

from notifier.api.auth import require_scope
from notifier.api.deliveries import (
    cancel_delivery,
    get_delivery,
    get_stats,
    list_deliveries,
    retry_delivery,
)
from notifier.api.docs import SECURITY
from notifier.api.emulator import get_emulator, put_emulator, read_inbox
from notifier.api.messages import get_message, send_message
from notifier.api.params import provide_services, require_json

v1 = Router(
    path="/v1",
    route_handlers=[
        send_message,
        get_message,
        get_delivery,
        list_deliveries,
        cancel_delivery,
        retry_delivery,
        get_stats,
        read_inbox,
        get_emulator,
        put_emulator,
    ],
    dependencies={"services": Provide(provide_services, sync_to_thread=False)},
    guards=[require_scope],
    before_request=require_json,
    security=SECURITY,
    tags=["v1"],
)
