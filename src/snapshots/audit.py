"""Audit entries: who changed what. Append-only; nothing here updates or deletes."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection

from snapshots.store import tables


def record(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry inside the caller's transaction (so it commits with the change)."""
    conn.execute(
        tables.audit_entries.insert().values(
            at=time.time(),
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            details=details or {},
        )
    )
