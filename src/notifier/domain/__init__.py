"""Pure rules of notifier: models, validation, dedupe keys and retry policy."""
