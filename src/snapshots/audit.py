"""Audit entries: who changed what, when, from where. Append-only: nothing here updates or
deletes, and the database refuses it too (triggers, migration 0004).

An entry records the actor (`cli:<user>`, `key:<id>`), the action (`key.created`,
`connection.created`, `flows.imported`, `auth.scope_denied`, ...), its target, the outcome,
details (never a secret: at most its last 4 characters), and, for API requests, the request id
and the client's IP (taken from the request context, see `for_request`).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from snapshots import errors, limits
from snapshots.store import tables
from snapshots.store.db import Database

T = tables.audit_entries
DENIED_EVERY = 60  # seconds: at most one denied-request entry per kind and IP in this window

# (request id, client IP) of the API request being served, for the entries it writes.
REQUEST: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "snapshots_audit_request", default=(None, None)
)


@contextmanager
def for_request(request_id: str | None, ip: str | None) -> Iterator[None]:
    token = REQUEST.set((request_id, ip))
    try:
        yield
    finally:
        REQUEST.reset(token)


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
    request_id, ip = REQUEST.get()
    conn.execute(
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


def denied(db: Database, *, action: str, actor: str, ip: str | None, reason: str) -> None:
    """Record a refused request (a bad key, a missing scope), at most once a minute per kind
    and client, so a flood of bad requests cannot flood the log."""
    if not limits.first_in_window(db, f"audit:{action}:{ip}", window=DENIED_EVERY):
        return
    with db.write() as conn:
        record(conn, actor=actor, action=action, outcome="denied", details={"reason": reason})


def public(row: Any) -> dict[str, Any]:
    from snapshots.records import iso

    return {
        "id": row.id,
        "at": iso(row.at),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "details": row.details or {},
        "request_id": row.request_id,
        "ip": row.ip,
    }


def page(
    db: Database,
    *,
    since: float | None = None,
    action: str | None = None,
    limit: int = 20,
    starting_after: int | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Entries newest first, optionally since a time and of one action (`key.*` prefixes work)."""
    stmt = sa.select(T).order_by(T.c.id.desc()).limit(limit + 1)
    if since is not None:
        stmt = stmt.where(T.c.at >= since)
    if action:
        stmt = stmt.where(
            T.c.action.like(action[:-1] + "%") if action.endswith("*") else T.c.action == action
        )
    with db.read() as conn:
        if starting_after is not None:
            if conn.execute(sa.select(T.c.id).where(T.c.id == starting_after)).first() is None:
                raise errors.BadRequest(
                    f"starting_after: no audit entry {starting_after}", code="invalid_cursor"
                )
            stmt = stmt.where(T.c.id < starting_after)
        rows = conn.execute(stmt).all()
    return [public(r) for r in rows[:limit]], len(rows) > limit
