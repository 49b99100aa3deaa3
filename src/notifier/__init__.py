"""notifier: a message dispatch service with emulated messengers."""

__version__ = "0.1.0"
