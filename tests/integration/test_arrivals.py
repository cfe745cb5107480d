"""The inbox's hourly counts of arrivals (`inbox_arrivals`) on SQLite and PostgreSQL: kept by
every statement that stores items, exact (duplicates not counted), and the overview's counts
made from them equal to counting the items themselves."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import arrivals, inbox, overview
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from tests.conftest import EventFactory

A = tables.inbox_arrivals
T = tables.inbox_items


def kept(tx: Tx) -> Counter[tuple[str, int]]:
    """What the table says, per (connection, hour), shards summed."""
    rows = tx.execute(
        sa.select(A.c.connection_id, A.c.hour, sa.func.sum(A.c["count"])).group_by(
            A.c.connection_id, A.c.hour
        )
    )
    return Counter({(c, int(h)): int(n) for c, h, n in rows if n})


def counted(tx: Tx) -> Counter[tuple[str, int]]:
    """The same, counted from the items."""
    rows = tx.execute(sa.select(T.c.connection_id, T.c.received_at))
    return Counter((c, arrivals.hour_of(at)) for c, at in rows)


def arrival(connection_id: str, event: dict[str, Any]) -> inbox.Arrival:
    return inbox.Arrival(connection_id, event, json.dumps(event).encode(), "webhook", True)


def test_each_stored_item_is_counted_once(db: Database, event_factory: EventFactory) -> None:
    a = [event_factory("customer.updated") for _ in range(3)]
    b = [event_factory("customer.updated") for _ in range(2)]
    with db.write() as tx:  # a duplicate within the batch
        inbox.enqueue_many(tx, [arrival("conn_a", e) for e in [*a, a[0]]])
    with db.write() as tx:  # duplicates of stored items, and new ones of another connection
        inbox.enqueue_many(tx, [arrival("conn_a", a[1]), *(arrival("conn_b", e) for e in b)])
    synced = [event_factory("customer.updated") for _ in range(4)]
    with db.write() as tx:  # a sync's batch, with a duplicate and two connections
        new = inbox.add_new(
            tx,
            [
                *(arrival("conn_a", e) for e in synced[:3]),
                arrival("conn_a", a[2]),
                arrival("conn_c", synced[3]),
            ],
        )
    assert new == 4
    with db.read() as tx:
        found = kept(tx)
        assert found == counted(tx)
    assert {c: sum(n for (k, _), n in found.items() if k == c) for c, _ in found} == {
        "conn_a": 6,
        "conn_b": 2,
        "conn_c": 1,
    }
    with db.write() as tx:
        arrivals.recount(tx)
        assert kept(tx) == counted(tx)


def _items(connection_id: str, times: list[float]) -> list[dict[str, Any]]:
    return [
        {
            "connection_id": connection_id,
            "event_id": f"evt_{connection_id}_{n}",
            "event_type": "customer.updated",
            "event_created": int(at),
            "livemode": False,
            "source": "webhook",
            "payload": b"{}",
            "status": "done",
            "run_after": at,
            "received_at": at,
        }
        for n, at in enumerate(times)
    ]


@pytest.mark.parametrize("into", [0.0, 1.5, 1799.0, 1800.0, 2500.25, 3599.5])
def test_the_overview_counts_what_arrived_as_the_items_say(db: Database, into: float) -> None:
    """Whichever side of the hour's middle `now` is (the counts take the shorter part of a cut
    hour from the index), the bars, the last hour and the last 24 hours are exact, items on
    the edges and ahead of `now` (another process's clock) included."""
    now = 1_800_000_000 // 3600 * 3600 + into
    rng = random.Random(into)
    times = [now - rng.uniform(-2 * 3600, 27 * 3600) for _ in range(600)]
    edges = overview._edges(now)
    times += [float(e) for e in edges] + [now - 3600, now - 86400, now, edges[0] - 3600.0]
    with db.write() as tx:
        tx.execute(T.insert(), _items("conn_a", times))
        tx.execute(T.insert(), _items("conn_b", times[:50]))
        arrivals.recount(tx)
    with db.read() as tx:
        found = overview._counts(tx, "conn_a", now)
    assert found.bars == [sum(e <= t < e + 3600 for t in times) for e in edges]
    assert found.hour == sum(t >= now - 3600 for t in times)
    assert found.day == sum(now - 86400 <= t < edges[-1] + 3600 for t in times)


def test_a_batch_over_one_statements_rows_is_stored_whole(
    db: Database, event_factory: EventFactory
) -> None:
    """SQLite takes a bounded number of parameters a statement: a large batch (a sync's) is
    stored in several, each item once with its payload, duplicates reported as such."""
    events = [event_factory("customer.updated") for _ in range(2 * inbox.SQLITE_ROWS + 7)]
    with db.write() as tx:
        first = inbox.enqueue_many(tx, [arrival("conn_a", e) for e in events[:3]])
    with db.write() as tx:
        stored = inbox.enqueue_many(tx, [arrival("conn_a", e) for e in events])
    assert [s.duplicate for s in stored] == [True] * 3 + [False] * (len(events) - 3)
    assert [s.item_id for s in stored[:3]] == [s.item_id for s in first]
    assert len({s.item_id for s in stored}) == len(events)
    with db.read() as tx:
        payloads = dict(
            tx.execute(
                sa.select(tables.inbox_payloads.c.item_id, tables.inbox_payloads.c.payload)
            ).all()
        )
        assert {i: bytes(p) for i, p in payloads.items()} == {
            s.item_id: json.dumps(e).encode() for s, e in zip(stored, events, strict=True)
        }
        assert sum(kept(tx).values()) == len(events)
