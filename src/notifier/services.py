"""The running parts of one notifier process, handed to the API as one object."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from notifier.config import Config
from notifier.dispatcher import Dispatcher
from notifier.dispatcher.role import DispatchRole
from notifier.domain.models import Messenger
from notifier.messengers.emulator import EmulatedMessenger
from notifier.messengers.inbox import Inbox
from notifier.storage.base import Outbox


@dataclass
class Services:
    """What the handlers need: config, outbox, emulators and background loops."""

    config: Config
    outbox: Outbox
    inbox: Inbox
    emulators: dict[Messenger, EmulatedMessenger]
    dispatcher: Dispatcher
    role: DispatchRole
    clock: Callable[[], float] = field(default=time.time)
    settings_sync: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        """Return the current time in epoch milliseconds."""
        return int(self.clock() * 1000)
