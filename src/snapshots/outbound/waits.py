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
from dataclasses import dataclass

import sqlalchemy as sa

from snapshots.store import tables
from snapshots.store.db import Tx

W = tables.waits


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
