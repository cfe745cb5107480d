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
DENIED_MAX = 30  # denied-request entries per window in all (from however many addresses)

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
    and client address, and at most `DENIED_MAX` a minute in all, so a flood of bad requests
    (from one address or many) cannot flood the log. An entry says how many refusals the
    window before it left out (`suppressed`)."""
    if not limits.first_in_window(tx, f"audit:{action}:{ip}", window=DENIED_EVERY):
        return
    now = time.time()
    usage = limits.hit(tx, "audit:denied", limit=DENIED_MAX, window=DENIED_EVERY, now=now)
    if usage.exceeded:
        return  # counted in the window's total: the next window's first entry says how many
    details: dict[str, Any] = {"reason": reason}
    if usage.count == 1:
        before = limits.count(tx, "audit:denied", window=DENIED_EVERY, now=now - DENIED_EVERY)
        if before > DENIED_MAX:
            details["suppressed"] = before - DENIED_MAX
    record(tx, actor=actor, action=action, outcome="denied", details=details)


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


def _matching(column: Any, text: str) -> Any:
    """`text` exactly, or every value starting with it when it ends with `*`."""
    if text.endswith("*"):
        prefix = text[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(prefix + "%", escape="\\")
    return column == text


def page(
    tx: Tx,
    *,
    since: float | None = None,
    until: float | None = None,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    limit: int = 20,
    starting_after: int | None = None,
) -> paging.Page[AuditEntry]:
    """Entries newest first, optionally within a time span, of one action, of one actor
    (`key.*`, `ui:*`: prefixes work) and about one target."""
    where = []
    if since is not None:
        where.append(T.c.at >= since)
    if until is not None:
        where.append(T.c.at < until)
    if action:
        where.append(_matching(T.c.action, action))
    if actor:
        where.append(_matching(T.c.actor, actor))
    if target:
        where.append(T.c.target == target)
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


WORKING_HOURS = (8, 18)  # UTC hours, Monday to Friday: a key made outside them is highlighted
REFUSED = ("auth.bad_key", "auth.scope_denied", "console.sign_in_failed", "console.sign_in_limited")


def unusual(entry: AuditEntry) -> str | None:
    """Why an entry deserves a second look, or None: refusals and failed sign-ins, secrets
    rotated, and keys made outside working hours (UTC)."""
    if entry.action in REFUSED or entry.outcome == "denied":
        return "refused" if entry.action.startswith("auth.") else "sign-in refused"
    if "rotat" in entry.action:
        return "secret rotated"
    if entry.action == "key.created" and entry.at is not None:
        moment = time.gmtime(entry.at)
        start, end = WORKING_HOURS
        if moment.tm_wday >= 5 or not start <= moment.tm_hour < end:
            return "key made outside working hours (UTC)"
    return None
