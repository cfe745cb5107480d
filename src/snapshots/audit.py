"""Audit entries: who changed what, when, from where. Append-only: nothing here updates or
deletes, and the database refuses it too (triggers, migration 0004).

An entry records the actor (`cli:<user>`, `key:<id>`), the action (`key.created`,
`connection.created`, `flows.imported`, `auth.scope_denied`, ...), its target, the outcome,
details (never a secret: at most its last 4 characters), and, for API requests, the request id
and the client's IP (taken from the request context, `REQUEST`).
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from snapshots import limits, paging
from snapshots.store import tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

T = tables.audit_entries
DENIED_EVERY = 60  # seconds: at most one denied-request entry per kind and IP in this window

# (request id, client IP) of the API request being served, for the entries it writes.
REQUEST: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "snapshots_audit_request", default=(None, None)
)


def record(
    tx: Tx,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry inside the caller's transaction (so it commits with the change)."""
    request_id, ip = REQUEST.get()
    tx.execute(
        T.insert().values(
            at=time.time(),
            actor=actor[:200],
            action=action,
            target=None if target is None else target[:200],
            outcome=outcome,
            details=details or {},
            request_id=request_id,
            ip=ip,
        )
    )


def denied(tx: Tx, *, action: str, actor: str, ip: str | None, reason: str) -> None:
    """Record a refused request (a bad key, a missing scope), at most once a minute per kind
    and client, so a flood of bad requests cannot flood the log."""
    if not limits.first_in_window(tx, f"audit:{action}:{ip}", window=DENIED_EVERY):
        return
    record(tx, actor=actor, action=action, outcome="denied", details={"reason": reason})


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int
    at: Timestamp | None
    actor: str
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any]
    request_id: str | None
    ip: str | None


def page(
    tx: Tx,
    *,
    since: float | None = None,
    action: str | None = None,
    limit: int = 20,
    starting_after: int | None = None,
) -> paging.Page[AuditEntry]:
    """Entries newest first, optionally since a time and of one action (`key.*` prefixes work)."""
    where = []
    if since is not None:
        where.append(T.c.at >= since)
    if action:
        where.append(
            T.c.action.like(action[:-1] + "%") if action.endswith("*") else T.c.action == action
        )
    return paging.paginate(
        tx,
        T,
        "audit entry",
        lambda row: AuditEntry.model_validate(row._mapping),
        limit=limit,
        starting_after=starting_after,
        where=where,
        key="id",
    )
