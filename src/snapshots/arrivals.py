"""Arrivals: how many inbox items of each connection arrived in each hour (`received_at`), in
the `inbox_arrivals` table. Every statement that stores items adds to it in the same
transaction (`inbox.enqueue_many`, `inbox.add_new`), and items are never deleted nor their
arrival moved, so it is exact: the overview's 24 hourly bars read 24 hours of these rows, not a
day of the (connection_id, received_at) index (33,000 entries a refresh at 1,000,000 items).

A connection's hour has several rows (`SHARDS`), summed when read: each store adds to one at
random, so writers storing at once (serve processes on PostgreSQL) seldom wait on a row lock.
`recount` makes the table again from the items (for what wrote items by hand).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from snapshots.store import dialect, tables
from snapshots.store.db import Tx

T = tables.inbox_arrivals
HOUR = 3600  # seconds
SHARDS = 8  # rows per connection and hour


def hour_of(received_at: float) -> int:
    """The start of the hour `received_at` falls in (unix seconds; times are positive)."""
    return int(received_at) // HOUR * HOUR


def shard() -> int:
    return random.randrange(SHARDS)


def add(tx: Tx, connection_ids: Iterable[str], *, received_at: float) -> None:
    """Count items that arrived at `received_at`, one per connection id given (repeated for
    several): in the transaction that stored them."""
    counts = Counter(connection_ids)
    if not counts:
        return
    hour, picked = hour_of(received_at), shard()
    # Intake adds every batch: on SQLite the statement, compiled once, goes to the driver's
    # executemany as tuples (SQLAlchemy's execution of it cost more CPU than SQLite's running it).
    dialect.executemany(
        tx,
        _adding(tx.dialect),
        [
            {"connection_id": connection_id, "hour": hour, "shard": picked, "count": n}
            for connection_id, n in counts.items()
        ],
    )


@functools.cache
def _adding(sql: sa.Dialect) -> Any:
    """The UPSERT that adds to a row, built once per dialect (intake runs it every batch)."""
    stmt = dialect.insert(sql, T)
    return stmt.on_conflict_do_update(
        index_elements=[T.c.connection_id, T.c.hour, T.c.shard],
        set_={"count": T.c["count"] + stmt.excluded["count"]},
    )


def counting_cte(sql: sa.Dialect) -> str:
    """The part of a PostgreSQL statement that stores items (a CTE `new` returning their
    `connection_id`) which counts them, with the parameters `arrival_hour` and
    `arrival_shard`: the statement stays one round trip."""
    assert sql.name == "postgresql"
    return (
        "counted AS (INSERT INTO inbox_arrivals (connection_id, hour, shard, count) "
        "SELECT connection_id, CAST(:arrival_hour AS BIGINT), CAST(:arrival_shard AS SMALLINT), "
        "count(*) FROM new "
        "GROUP BY connection_id "
        "ON CONFLICT (connection_id, hour, shard) "
        "DO UPDATE SET count = inbox_arrivals.count + EXCLUDED.count)"
    )


def recount(tx: Tx) -> None:
    """Make the table again from the inbox's items (as the migration that made it does)."""
    items = tables.inbox_items
    seconds: sa.ColumnElement[int] = (
        sa.cast(sa.func.floor(items.c.received_at), sa.BigInteger)
        if dialect.is_postgresql(tx)
        else sa.cast(items.c.received_at, sa.Integer)  # truncated: the floor, times being positive
    )
    hour = seconds // HOUR * HOUR
    tx.execute(T.delete())
    tx.execute(
        T.insert().from_select(
            ["connection_id", "hour", "shard", "count"],
            sa.select(items.c.connection_id, hour, sa.literal(0), sa.func.count()).group_by(
                items.c.connection_id, hour
            ),
        )
    )


def in_hour(
    hour: sa.ColumnElement[int] | int, connection_id: sa.ColumnElement[str]
) -> sa.ScalarSelect[int]:
    """How many items of a connection arrived in the hour starting at `hour`."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(T.c["count"]), 0))
        .where(T.c.connection_id == connection_id, T.c.hour == hour)
        .scalar_subquery()
    )
