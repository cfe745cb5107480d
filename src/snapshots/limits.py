"""Rate limits counted in the database, so every `serve` process shares them.

A fixed window per bucket (`key:<api key id>`, `audit:<kind>:<ip>`): one UPSERT counts a hit and
returns the count. Old windows are pruned now and then.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import sqlalchemy as sa

from snapshots.store import dialect, tables
from snapshots.store.db import Tx

T = tables.rate_limits
PRUNE_CHANCE = 0.01  # of hits that also delete windows over an hour old


@dataclass(frozen=True)
class Usage:
    limit: int
    count: int
    reset_at: int  # unix seconds when the window ends

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def retry_after(self, now: float | None = None) -> int:
        return max(1, int(self.reset_at - (time.time() if now is None else now) + 0.999))


def hit(tx: Tx, bucket: str, *, limit: int, window: int, now: float | None = None) -> Usage:
    """Count one hit in `bucket`'s current window."""
    now = time.time() if now is None else now
    start = int(now) // window * window
    stmt = (
        dialect.insert(tx, T)
        .values(bucket=bucket, window_start=start, count=1)
        .on_conflict_do_update(
            index_elements=[T.c.bucket, T.c.window_start], set_={"count": T.c["count"] + 1}
        )
        .returning(T.c["count"])
    )
    count = int(tx.execute(stmt).scalar_one())
    if random.random() < PRUNE_CHANCE:
        tx.execute(T.delete().where(T.c.window_start < start - 3600))
    return Usage(limit, count, start + window)


def count(tx: Tx, bucket: str, *, window: int, now: float | None = None) -> int:
    """The hits counted in `bucket`'s window holding `now` (0 when none)."""
    now = time.time() if now is None else now
    start = int(now) // window * window
    found = tx.execute(
        sa.select(T.c["count"]).where(T.c.bucket == bucket, T.c.window_start == start)
    ).scalar_one_or_none()
    return int(found or 0)


def first_in_window(tx: Tx, bucket: str, *, window: int) -> bool:
    """True for the first hit of a window: lets something happen at most once a window."""
    return hit(tx, bucket, limit=1, window=window).count == 1
