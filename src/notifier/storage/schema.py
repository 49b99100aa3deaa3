"""The SQLite schema, as idempotent DDL run at every start."""

from __future__ import annotations

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA temp_store = MEMORY",
    # After each checkpoint that resets it, the WAL file is cut back to this size.
    "PRAGMA journal_size_limit = 16777216",
)

CREATE_MESSAGES = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
)"""

# due_at_ms is when the dispatcher must next look at a delivery: its send time
# or retry time while pending, its lease expiry while sending, NULL once final.
CREATE_DELIVERIES = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id),
    messenger TEXT NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,
    send_at_ms INTEGER NOT NULL,
    due_at_ms INTEGER,
    lease_token TEXT,
    attempts_made INTEGER NOT NULL DEFAULT 0,
    attempts_counted INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    sent_at_ms INTEGER
)"""

CREATE_DUE_INDEX = """
CREATE INDEX IF NOT EXISTS deliveries_due
ON deliveries (messenger, due_at_ms) WHERE due_at_ms IS NOT NULL"""

CREATE_STATUS_INDEX = """
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, id)"""

CREATE_MESSENGER_INDEX = """
CREATE INDEX IF NOT EXISTS deliveries_messenger ON deliveries (messenger, id)"""

CREATE_MESSAGE_INDEX = """
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries (message_id)"""

CREATE_SENT_INDEX = """
CREATE INDEX IF NOT EXISTS deliveries_sent
ON deliveries (sent_at_ms) WHERE sent_at_ms IS NOT NULL"""

# Final deliveries (due_at_ms NULL) by age, for retention.
CREATE_FINISHED_INDEX = """
CREATE INDEX IF NOT EXISTS deliveries_finished
ON deliveries (updated_at_ms) WHERE due_at_ms IS NULL"""

# The dedupe record is kept apart from deliveries so that it can outlive them.
# When retention prunes the delivery, its final status and send time stay here,
# which is all a duplicate's answer shows.
CREATE_DEDUPE = """
CREATE TABLE IF NOT EXISTS dedupe (
    key BLOB PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    final_status TEXT,
    final_send_at_ms INTEGER
) WITHOUT ROWID"""

CREATE_DEDUPE_PRUNED_INDEX = """
CREATE INDEX IF NOT EXISTS dedupe_pruned
ON dedupe (created_at_ms) WHERE final_status IS NOT NULL"""

CREATE_MESSAGE_DELIVERIES = """
CREATE TABLE IF NOT EXISTS message_deliveries (
    message_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    delivery_id TEXT NOT NULL,
    duplicate INTEGER NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID"""

CREATE_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    lease_token TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID"""

CREATE_IDEMPOTENCY = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash BLOB NOT NULL,
    response BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
)"""

CREATE_IDEMPOTENCY_AGE_INDEX = """
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys (created_at_ms)"""

CREATE_API_KEYS = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    secret_hash BLOB NOT NULL,
    scopes TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_used_at_ms INTEGER,
    revoked_at_ms INTEGER
)"""

DDL = (
    CREATE_MESSAGES,
    CREATE_DELIVERIES,
    CREATE_DUE_INDEX,
    CREATE_STATUS_INDEX,
    CREATE_MESSENGER_INDEX,
    CREATE_MESSAGE_INDEX,
    CREATE_SENT_INDEX,
    CREATE_FINISHED_INDEX,
    CREATE_DEDUPE,
    CREATE_DEDUPE_PRUNED_INDEX,
    CREATE_MESSAGE_DELIVERIES,
    CREATE_ATTEMPTS,
    CREATE_IDEMPOTENCY,
    CREATE_IDEMPOTENCY_AGE_INDEX,
    CREATE_API_KEYS,
)
