"""The claim query must find due rows through the due index, even among a million."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from notifier.domain.models import Messenger
from notifier.storage.schema import DDL
from notifier.storage.sqlite.leasing import claim_sql

ROWS = 1_000_000

# A million deliveries, written by SQLite itself: nearly all scheduled a day
# ahead, a few due now, a share already final.
_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO deliveries (id, message_id, messenger, recipient, status, send_at_ms,
    due_at_ms, created_at_ms, updated_at_ms)
SELECT printf('d%08d', i), 'm', CASE i % 3 WHEN 0 THEN 'telegram'
    WHEN 1 THEN 'whatsapp' ELSE 'viber' END, 'r' || i,
    CASE WHEN i % 10 = 0 THEN 'sent' ELSE 'pending' END,
    1000, CASE WHEN i % 10 = 0 THEN NULL WHEN i % 1000 = 1 THEN 1000
    ELSE 86400000 END, 0, 0
FROM n"""


def test_claim_plan_uses_the_due_index_at_a_million_rows(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "plan.db")
    for statement in DDL:
        db.execute(statement)
    db.execute(_FILL, (ROWS,))
    db.execute("ANALYZE")

    plan = db.execute(
        "EXPLAIN QUERY PLAN " + claim_sql(list(Messenger)),
        {"token": "t", "lease_until": 2, "now": 1, **{m.value: 100 for m in Messenger}},
    ).fetchall()

    details = [row[3] for row in plan]
    searches = [d for d in details if "deliveries_due" in d]
    assert len(searches) == len(Messenger), details
    assert all("SEARCH" in d and "due_at_ms<?" in d for d in searches), details
    assert not any(d.startswith("SCAN deliveries") for d in details), details
    db.close()
