"""Retention benchmark on PostgreSQL: inbox tables' size and query times before and after pruning.

A database of its own is migrated and filled, in SQL, with `--items` inbox items: every one
carries the same real 4.3 KB pretty-printed Stripe event as its payload (PostgreSQL compresses
each row on its own, so the size is that of real payloads), settled (`done`, 5% `ignored`,
0.1% `dead`) at moments spread evenly over the last 60 days, and a few thousand `pending`.
Then, before and after `retention.prune` with the default 30 days (and a plain VACUUM, as
autovacuum would do): the tables' total size (items and payloads: heap, TOAST, indexes) and the median of 5 runs
of the queries that touch it: a claim (FOR UPDATE SKIP LOCKED), `has_claimable`, a dedup
lookup, the event log's first page, and counts by status. Figures are printed, never asserted.

    .venv/bin/python -m bench.retention [--items 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import sqlalchemy as sa

from bench.drain import stream
from snapshots import inbox, retention
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables

T = tables.inbox_items
DAY = 86400.0


def fill(db: store.Database, items: int, payload: bytes) -> None:
    now = time.time()
    with db.write() as tx:
        tx.execute(
            sa.text(
                """
                INSERT INTO inbox_items (connection_id, event_id, event_type, event_created,
                  livemode, source, status, attempts, run_after, received_at,
                  processed_at, flows, records)
                SELECT 'conn_bench', 'evt_' || g, 'customer.updated', 1700000000 + g, false,
                  'webhook',
                  CASE WHEN g % 1000 = 0 THEN 'dead' WHEN g % 20 = 0 THEN 'ignored'
                       ELSE 'done' END,
                  1, 0, :start + g * :step, :start + g * :step,
                  CASE WHEN g % 20 = 0 AND g % 1000 <> 0 THEN NULL ELSE 'contacts' END,
                  CASE WHEN g % 20 = 0 AND g % 1000 <> 0 THEN NULL ELSE 'con_' || md5(g::text) END
                FROM generate_series(1, :items) AS g
                """
            ),
            {"start": now - 60 * DAY, "step": 60 * DAY / items, "items": items},
        )
        tx.execute(
            sa.text(
                """
                INSERT INTO inbox_items (connection_id, event_id, event_type, event_created,
                  livemode, source, status, attempts, run_after, received_at)
                SELECT 'conn_bench', 'evt_p' || g, 'customer.updated', 1700000000, false,
                  'webhook', 'pending', 0, :now, :now
                FROM generate_series(1, 5000) AS g
                """
            ),
            {"now": now},
        )
        tx.execute(
            sa.text(
                "INSERT INTO inbox_payloads (item_id, payload) SELECT id, :payload FROM inbox_items"
            ),
            {"payload": payload},
        )


def vacuum(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE inbox_items")
        conn.exec_driver_sql("VACUUM ANALYZE inbox_payloads")
    engine.dispose()


def size(db: store.Database) -> int:
    with db.read() as tx:
        return int(
            tx.execute(
                sa.text(
                    "SELECT pg_total_relation_size('inbox_items') "
                    "+ pg_total_relation_size('inbox_payloads')"
                )
            ).scalar_one()
        )


def timed(db: store.Database, run: Any, rounds: int = 5) -> float:
    """Median milliseconds of `run(tx)`, each in a transaction rolled back."""
    found = []
    for _ in range(rounds):
        conn = db.engine.connect()
        tx = conn.begin()
        started = time.perf_counter()
        run(conn)
        found.append((time.perf_counter() - started) * 1000)
        tx.rollback()
        conn.close()
    return statistics.median(found)


QUERIES = {
    "claim 200 (FOR UPDATE SKIP LOCKED)": lambda tx: inbox.claim(
        tx, worker_id="bench", limit=200, lease=30
    ),
    "has_claimable": lambda tx: inbox.has_claimable(tx),
    "dedup lookup by event id": lambda tx: tx.execute(
        sa.select(T.c.id).where(T.c.connection_id == "conn_bench", T.c.event_id == "evt_123457")
    ).all(),
    "event log, first page of 50": lambda tx: inbox.page(tx, limit=50),
    "event log, dead only": lambda tx: inbox.page(tx, status="dead", limit=50),
    "counts by status": lambda tx: inbox.counts(tx),
}


def measure(db: store.Database) -> dict[str, float]:
    return {name: timed(db, query) for name, query in QUERIES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
    admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"bench_retention_{os.getpid()}"
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    admin = sa.create_engine(f"{base}/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = f"{base}/{name}"
    db = store.Database(url)
    try:
        store.migrate(db)
        bodies = [json.dumps(event, indent=2).encode() for event in stream(300)]
        payload = min(bodies, key=lambda body: abs(len(body) - 4300))  # the peers' mean size
        started = time.monotonic()
        fill(db, args.items, payload)
        vacuum(url)
        print(
            f"filled {args.items:,} items ({len(payload)} B payloads) in "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        before_size, before = size(db), measure(db)
        settings = Settings(database_url=url)
        cutoffs = retention.Cutoffs.of(settings)
        with db.read() as tx:
            due = retention.due(tx, cutoffs)
        started = time.monotonic()
        went = retention.prune(db, cutoffs)
        took = time.monotonic() - started
        vacuum(url)
        after_size, after = size(db), measure(db)
        print(
            f"due {due.payloads:,} + {due.dead_payloads:,} dead; pruned {went.payloads:,} "
            f"payloads in {took:.0f} s ({went.payloads / took:,.0f}/s, 1,000 a transaction)"
        )
        print(f"{'':40} {'before':>10} {'after':>10}")
        print(
            f"{'table size (heap+TOAST+indexes), MB':40} {before_size / 1e6:10,.0f} "
            f"{after_size / 1e6:10,.0f}"
        )
        for query in QUERIES:
            print(f"{query + ', ms':40} {before[query]:10.2f} {after[query]:10.2f}")
        engine = sa.create_engine(url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM FULL inbox_items")
            conn.exec_driver_sql("VACUUM FULL inbox_payloads")
        engine.dispose()
        print(f"{'size after VACUUM FULL, MB':40} {'':>10} {size(db) / 1e6:10,.0f}")
    finally:
        db.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    main()
