"""Senders that hand a text to a messenger; here, emulated ones."""
