"""Durable state: the outbox of messages, deliveries and attempts."""
