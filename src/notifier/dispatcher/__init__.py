"""The background loop: claim due deliveries, send them, record every attempt."""

from notifier.dispatcher.loop import Dispatcher

__all__ = ["Dispatcher"]
