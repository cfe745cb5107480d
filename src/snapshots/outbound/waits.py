"""Waits: a flow with steps that reached `wait: 3d` leaves a row here, and its remaining steps
run when the row is due.

A wait names its source event, its flow and the flows version it was made under, the index of
the step after it, the record the flow is about, and when it is due. Workers claim due waits
under a lease (as inbox items), so a wait survives a restart of every process and fires once; a
wait whose flow is no longer in the flows in force is `cancelled`. Statuses: `waiting` ->
`processing` -> `done` | `skipped` (an `if` was false; the reason is kept) | `cancelled` |
`failed` (a step failed; the reason is kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from snapshots import ids
from snapshots.store import dialect, tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

W = tables.waits
Clock = Callable[[], float]  # unix seconds; tests hand in their own
STATUSES = ("waiting", "processing", "done", "skipped", "cancelled", "failed")


class Wait(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    connection_id: str
    event_id: str
    flow: str
    flow_version: int
    step: int
    record_kind: str | None
    record_id: str | None
    due_at: Timestamp
    status: str
    attempts: int
    reason: str | None
    test: bool
    created_at: Timestamp
    finished_at: Timestamp | None


def create(
    tx: Tx,
    *,
    connection_id: str,
    event_id: str,
    flow: str,
    flow_version: int,
    step: int,
    record_kind: str | None,
    record_id: str | None,
    due_at: float,
    test: bool = False,
    now: float | None = None,
) -> str:
    """A wait, once per (connection, event, flow, step): a replayed event makes no second."""
    new_id = ids.new("wait_", 20)
    stmt = (
        dialect.insert(tx, W)
        .values(
            id=new_id,
            connection_id=connection_id,
            event_id=event_id,
            flow=flow,
            flow_version=flow_version,
            step=step,
            record_kind=record_kind,
            record_id=record_id,
            due_at=due_at,
            status="waiting",
            attempts=0,
            test=test,
            created_at=time.time() if now is None else now,
        )
        .on_conflict_do_nothing(
            index_elements=[W.c.connection_id, W.c.event_id, W.c.flow, W.c.step]
        )
    )
    if tx.execute(stmt).rowcount == 1:
        return new_id
    return str(
        tx.execute(
            sa.select(W.c.id).where(
                W.c.connection_id == connection_id,
                W.c.event_id == event_id,
                W.c.flow == flow,
                W.c.step == step,
            )
        ).scalar_one()
    )


def _claimable(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(W.c.status == "waiting", W.c.due_at <= now),
        sa.and_(W.c.status == "processing", W.c.lease_until < now),
    )


def has_due(tx: Tx, now: float) -> bool:
    return tx.execute(sa.select(W.c.seq).where(_claimable(now)).limit(1)).first() is not None


def claim(tx: Tx, *, worker_id: str, limit: int, lease: float, now: float) -> list[Wait]:
    """Take up to `limit` due waits for `lease` seconds, the earliest due first."""
    pick = sa.select(W.c.seq).where(_claimable(now)).order_by(W.c.due_at, W.c.seq).limit(limit)
    if dialect.is_postgresql(tx):
        pick = pick.with_for_update(skip_locked=True)
    seqs = list(tx.execute(pick).scalars())
    if not seqs:
        return []
    tx.execute(
        W.update()
        .where(W.c.seq.in_(seqs))
        .values(
            status="processing",
            locked_by=worker_id,
            lease_until=time.time() + lease,
            attempts=W.c.attempts + 1,
        )
    )
    rows = tx.execute(sa.select(W).where(W.c.seq.in_(seqs)).order_by(W.c.seq)).all()
    return [Wait.model_validate(row._mapping) for row in rows]


def still_mine(tx: Tx, wait_id: str, *, worker_id: str) -> bool:
    """Does this worker still hold the wait? (Locked for the rest of the transaction, so a
    wait taken over by another worker runs its steps once.)"""
    stmt = sa.select(W.c.seq).where(
        W.c.id == wait_id, W.c.locked_by == worker_id, W.c.status == "processing"
    )
    return tx.execute(dialect.locked(tx, stmt)).first() is not None


def finish(tx: Tx, wait_id: str, *, status: str, reason: str | None = None) -> None:
    tx.execute(
        W.update()
        .where(W.c.id == wait_id)
        .values(
            status=status,
            reason=None if reason is None else reason[:4000],
            lease_until=None,
            locked_by=None,
            finished_at=time.time(),
        )
    )


def retry(tx: Tx, wait_id: str, *, reason: str, delay: float, dead: bool) -> None:
    """A step failed: try the wait again after `delay`, or give up (`failed`)."""
    values: dict[str, Any] = {"reason": reason[:4000], "lease_until": None, "locked_by": None}
    if dead:
        values |= {"status": "failed", "finished_at": time.time()}
    else:
        values |= {"status": "waiting", "due_at": time.time() + delay}
    tx.execute(W.update().where(W.c.id == wait_id).values(**values))


def release(tx: Tx, wait_id: str, *, worker_id: str) -> None:
    """Give a wait back uncharged (a fault of the process)."""
    tx.execute(
        W.update()
        .where(W.c.id == wait_id, W.c.locked_by == worker_id)
        .values(status="waiting", lease_until=None, locked_by=None, attempts=W.c.attempts - 1)
    )


def cancel_missing(tx: Tx, flows: set[str]) -> int:
    """Cancel the waits of flows not in `flows` (a flow removed by an import or a rollback)."""
    return int(
        tx.execute(
            W.update()
            .where(W.c.status == "waiting", W.c.flow.not_in(flows) if flows else sa.true())
            .values(status="cancelled", reason="its flow was removed", finished_at=time.time())
        ).rowcount
    )


def for_event(tx: Tx, event_id: str) -> list[Wait]:
    rows = tx.execute(sa.select(W).where(W.c.event_id == event_id).order_by(W.c.seq)).all()
    return [Wait.model_validate(row._mapping) for row in rows]


@dataclass(frozen=True)
class Figures:
    due: int
    lag: float  # seconds the earliest due wait has waited past its time


def figures(tx: Tx, now: float | None = None) -> Figures:
    now = time.time() if now is None else now
    count, earliest = tx.execute(
        sa.select(sa.func.count(), sa.func.min(W.c.due_at)).where(
            W.c.status == "waiting", W.c.due_at <= now
        )
    ).one()
    return Figures(int(count), 0.0 if earliest is None else max(now - earliest, 0.0))
