"""Retention: how long Snapshots keeps raw events and audit entries, and pruning them.

The raw payload of a `done` or `ignored` inbox item (its row in `inbox_payloads`) goes once it
was settled longer ago than `SNAPSHOTS_EVENT_RETENTION` (default 30 days, Stripe's own Events
window); a `dead` one's after `DEAD_AFTER` at least (it may still be replayed meanwhile). The
item's row stays (`pruned_at` says when its bytes went): it keeps the event's history and its dedup key, so a
redelivery is still acknowledged as a duplicate whatever the setting (Stripe retries for 3
days). Audit entries are kept for ever unless `SNAPSHOTS_AUDIT_RETENTION` is set (at least a
year). The worker's schedule prunes in small batches, one process at a time (`job`);
`snapshots prune` does it at once, or with `--dry-run` counts what would go (`due`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import BaseModel

from snapshots import schedule
from snapshots.settings import Settings
from snapshots.store import dialect, tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

DAY = 86400.0  # seconds
DEAD_AFTER = 90 * DAY  # a dead item's payload is kept at least this long
BATCH = 1000  # rows a pruning transaction touches at most
JOB = "retention"  # its row in `schedules`
INTERVAL = 300.0  # seconds between two scheduled runs
BUDGET = 20.0  # seconds a scheduled run prunes at most (the rest waits for the next run)

ITEMS = tables.inbox_items
PAYLOADS = tables.inbox_payloads
A = tables.audit_entries


@dataclass(frozen=True)
class Cutoffs:
    """What settled before these moments (unix seconds) goes; None: nothing of that kind."""

    settled: float  # done and ignored items
    dead: float
    audit: float | None

    @classmethod
    def of(cls, settings: Settings, now: float | None = None) -> Cutoffs:
        at = time.time() if now is None else now
        audit = settings.audit_retention
        return cls(
            settled=at - settings.event_retention,
            dead=at - max(settings.event_retention, DEAD_AFTER),
            audit=None if audit is None else at - audit,
        )


class Prunable(BaseModel):
    """What goes (or went): payloads of settled and of dead items, and audit entries."""

    payloads: int
    dead_payloads: int
    audit_entries: int
    settled_before: Timestamp
    dead_before: Timestamp
    audit_before: Timestamp | None


def _payloads(cutoffs: Cutoffs, *, dead: bool) -> sa.ColumnElement[bool]:
    if dead:
        which = sa.and_(ITEMS.c.status == "dead", ITEMS.c.processed_at < cutoffs.dead)
    else:
        which = sa.and_(
            ITEMS.c.status.in_(("done", "ignored")), ITEMS.c.processed_at < cutoffs.settled
        )
    return sa.and_(ITEMS.c.pruned_at.is_(None), which)


def _count(tx: Tx, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int(tx.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())


def due(tx: Tx, cutoffs: Cutoffs) -> Prunable:
    """What pruning at these cutoffs would take (nothing is changed)."""
    audit = 0 if cutoffs.audit is None else _count(tx, A, A.c.at < cutoffs.audit)
    return Prunable(
        payloads=_count(tx, ITEMS, _payloads(cutoffs, dead=False)),
        dead_payloads=_count(tx, ITEMS, _payloads(cutoffs, dead=True)),
        audit_entries=audit,
        settled_before=cutoffs.settled,
        dead_before=cutoffs.dead,
        audit_before=cutoffs.audit,
    )


def _prune_payloads(tx: Tx, where: sa.ColumnElement[bool], limit: int) -> int:
    batch = sa.select(ITEMS.c.id).where(where).order_by(ITEMS.c.processed_at).limit(limit)
    item_ids = list(tx.execute(dialect.locked(tx, batch)).scalars())
    if not item_ids:
        return 0
    tx.execute(ITEMS.update().where(ITEMS.c.id.in_(item_ids)).values(pruned_at=time.time()))
    tx.execute(PAYLOADS.delete().where(PAYLOADS.c.item_id.in_(item_ids)))
    return len(item_ids)


def _prune_audit(tx: Tx, before: float, limit: int) -> int:
    batch = sa.select(A.c.id).where(A.c.at < before).order_by(A.c.id).limit(limit)
    return int(tx.execute(A.delete().where(A.c.id.in_(batch.scalar_subquery()))).rowcount)


def prune(
    db: Database, cutoffs: Cutoffs, *, budget: float | None = None, limit: int = BATCH
) -> Prunable:
    """Prune what is due, `limit` rows a transaction, until nothing is left or `budget`
    seconds have passed; returns what went."""
    deadline = None if budget is None else time.monotonic() + budget
    went = {"payloads": 0, "dead_payloads": 0, "audit_entries": 0}

    def settled(tx: Tx) -> int:
        return _prune_payloads(tx, _payloads(cutoffs, dead=False), limit)

    def dead(tx: Tx) -> int:
        return _prune_payloads(tx, _payloads(cutoffs, dead=True), limit)

    def audit(tx: Tx) -> int:
        return 0 if cutoffs.audit is None else _prune_audit(tx, cutoffs.audit, limit)

    steps: list[tuple[str, Callable[[Tx], int]]] = [("payloads", settled), ("dead_payloads", dead)]
    if cutoffs.audit is not None:
        steps.append(("audit_entries", audit))
    for name, step in steps:
        while deadline is None or time.monotonic() < deadline:
            with db.write() as tx:
                count = step(tx)
            went[name] += count
            if count < limit:
                break
    return Prunable(
        **went,
        settled_before=cutoffs.settled,
        dead_before=cutoffs.dead,
        audit_before=cutoffs.audit,
    )


def job(db: Database, settings: Settings) -> schedule.Job:
    """The scheduled pruning: at most `BUDGET` seconds every `INTERVAL` seconds."""
    return schedule.Job(JOB, INTERVAL, lambda: prune(db, Cutoffs.of(settings), budget=BUDGET))
