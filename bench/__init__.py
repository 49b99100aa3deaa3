"""notifier's benchmark suite: notifier against the ceilings of its own stack."""
