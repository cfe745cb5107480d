"""The inbox: every event waits here, raw, until a worker has applied it.

Statuses: `pending` -> `processing` (claimed under a lease) -> `done` | `failed` (retried after
a backoff) | `dead` (gave up; replayable). `ignored` means no flow wanted the event type.
A claim whose lease ran out (its worker died) is claimable again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from snapshots import errors, ids
from snapshots.records import iso
from snapshots.store import tables
from snapshots.store.db import Database

STATUSES = ("pending", "processing", "done", "ignored", "failed", "dead")
T = tables.inbox_items


@dataclass(frozen=True)
class Item:
    """A claimed inbox item, as a worker sees it."""

    id: int
    connection_id: str
    event_id: str
    event_type: str
    source: str
    attempts: int
    payload: bytes


@dataclass(frozen=True)
class Arrival:
    """An event to store: its connection, parsed envelope, raw bytes and source."""

    connection_id: str
    event: dict[str, Any]
    payload: bytes
    source: str
    wanted: bool


@dataclass(frozen=True)
class Stored:
    item_id: int
    status: str
    duplicate: bool


def _row(arrival: Arrival, now: float) -> dict[str, Any]:
    event = arrival.event
    return {
        "connection_id": arrival.connection_id,
        "event_id": event["id"],
        "event_type": event["type"],
        "event_created": event["created"],
        "api_version": event.get("api_version"),
        "livemode": bool(event.get("livemode", False)),
        "source": arrival.source,
        "payload": arrival.payload,
        "status": "pending" if arrival.wanted else "ignored",
        "run_after": now,
        "received_at": now,
        "processed_at": None if arrival.wanted else now,
    }


def _insert_new(dialect: sa.Dialect) -> Any:
    """INSERT ... ON CONFLICT (connection, event id) DO NOTHING, in the database's dialect."""
    insert = postgresql.insert(T) if dialect.name == "postgresql" else sqlite.insert(T)
    return insert.on_conflict_do_nothing(index_elements=[T.c.connection_id, T.c.event_id])


def enqueue_many(conn: Connection, arrivals: list[Arrival]) -> list[Stored]:
    """Store events unless (connection, event id) is there already, in one statement.

    Returns, for each arrival in order, its item and whether it was a duplicate (of an item
    stored before, or of an earlier arrival in the same call)."""
    now = time.time()
    first: dict[tuple[str, str], int] = {}
    rows = []
    for index, arrival in enumerate(arrivals):
        key = (arrival.connection_id, arrival.event["id"])
        if key in first:
            continue
        first[key] = index
        rows.append(_row(arrival, now))
    stmt = _insert_new(conn.dialect).returning(T.c.id, T.c.connection_id, T.c.event_id, T.c.status)
    stored: dict[tuple[str, str], Stored] = {}
    for row in conn.execute(stmt, rows):
        stored[(row.connection_id, row.event_id)] = Stored(row.id, row.status, False)
    for key in first.keys() - stored.keys():  # there already: report the stored item
        row = conn.execute(
            sa.select(T.c.id, T.c.status).where(T.c.connection_id == key[0], T.c.event_id == key[1])
        ).one()
        stored[key] = Stored(row.id, row.status, True)
    results = []
    for index, arrival in enumerate(arrivals):
        key = (arrival.connection_id, arrival.event["id"])
        found = stored[key]
        results.append(found if first[key] == index else Stored(found.item_id, found.status, True))
    return results


def add_new(conn: Connection, arrivals: list[Arrival]) -> int:
    """Store the events the inbox has not seen (the duplicates rule of `enqueue_many`) without
    reporting each one: returns how many were new. For bulk sources (sync)."""
    if not arrivals:
        return 0
    now = time.time()
    sql, order = _bulk_insert(conn.dialect)
    rows = [_row(arrival, now) for arrival in arrivals]
    # The driver's executemany, compiled once: a page of rows costs no per-row statement work.
    if order is None:  # named parameters (psycopg)
        result = conn.exec_driver_sql(sql, rows)
    else:
        result = conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])
    return int(result.rowcount)


@functools.cache
def _bulk_insert(dialect: sa.Dialect) -> tuple[str, tuple[str, ...] | None]:
    stmt = _insert_new(dialect)
    names = tuple(_row(Arrival("c", {"id": "e", "type": "t", "created": 0}, b"", "s", True), 0))
    values: dict[str, Any] = {name: sa.bindparam(name) for name in names}
    compiled = stmt.values(values).inline().compile(dialect=dialect)  # inline: no RETURNING
    order = None if compiled.positiontup is None else tuple(compiled.positiontup)
    return str(compiled), order


def enqueue(
    conn: Connection,
    *,
    connection_id: str,
    event: dict[str, Any],
    payload: bytes,
    source: str,
    wanted: bool,
) -> tuple[int, str, bool]:
    """Store one event (see `enqueue_many`); returns (item id, status, duplicate)."""
    (stored,) = enqueue_many(conn, [Arrival(connection_id, event, payload, source, wanted)])
    return stored.item_id, stored.status, stored.duplicate


def has_claimable(db: Database) -> bool:
    """A cheap read: is anything claimable now? (Spares SQLite a write lock when idle.)"""
    with db.read() as conn:
        return (
            conn.execute(sa.select(T.c.id).where(_claimable(time.time())).limit(1)).first()
            is not None
        )


def _claimable(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(T.c.status.in_(("pending", "failed")), T.c.run_after <= now),
        sa.and_(T.c.status == "processing", T.c.lease_until < now),
    )


def _claim_postgresql(conn: Connection, *, worker_id: str, limit: int, lease: float) -> list[Item]:
    now = time.time()
    ids = (
        sa.select(T.c.id)
        .where(_claimable(now))
        .order_by(T.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _claim_update(conn, ids, worker_id=worker_id, until=now + lease)


def _claim_sqlite(conn: Connection, *, worker_id: str, limit: int, lease: float) -> list[Item]:
    # The write transaction (BEGIN IMMEDIATE) already excludes every other claimer.
    now = time.time()
    ids = sa.select(T.c.id).where(_claimable(now)).order_by(T.c.id).limit(limit).scalar_subquery()
    return _claim_update(conn, ids, worker_id=worker_id, until=now + lease)


def _claim_update(
    conn: Connection, ids: sa.ScalarSelect[Any], *, worker_id: str, until: float
) -> list[Item]:
    rows = conn.execute(
        T.update()
        .where(T.c.id.in_(ids))
        .values(
            status="processing", locked_by=worker_id, lease_until=until, attempts=T.c.attempts + 1
        )
        .returning(
            T.c.id,
            T.c.connection_id,
            T.c.event_id,
            T.c.event_type,
            T.c.source,
            T.c.attempts,
            T.c.payload,
        )
    ).all()
    return sorted((Item(**r._mapping) for r in rows), key=lambda item: item.id)


def claim(db: Database, *, worker_id: str, limit: int, lease: float) -> list[Item]:
    """Take up to `limit` items for `lease` seconds, oldest first."""
    if not has_claimable(db):
        return []
    claimer = _claim_postgresql if db.dialect == "postgresql" else _claim_sqlite
    with db.write() as conn:
        return claimer(conn, worker_id=worker_id, limit=limit, lease=lease)


def still_mine(conn: Connection, ids: list[int], *, worker_id: str) -> set[int]:
    """Of these items, the ones this worker still holds, locked for the rest of the transaction
    (a worker whose lease ran out must not apply an item another worker has taken over)."""
    stmt = sa.select(T.c.id).where(
        T.c.id.in_(ids), T.c.locked_by == worker_id, T.c.status == "processing"
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return set(conn.execute(stmt).scalars())


_UPDATE_ONE = T.update().where(T.c.id == sa.bindparam("b_id"))


def finish(
    conn: Connection,
    outcomes: Sequence[tuple[int, str, list[str]] | tuple[int, str, list[str], list[str]]],
) -> None:
    """Mark items applied: (item id, `done` or `ignored`, names of the flows that ran[, ids of
    the records they wrote])."""
    if not outcomes:
        return
    now = time.time()
    conn.execute(
        _UPDATE_ONE,
        [
            {
                "b_id": item_id,
                "status": status,
                "flows": ",".join(outcome[2]) or None,
                "records": ",".join(outcome[3]) or None if len(outcome) > 3 else None,
                "processed_at": now,
                "lease_until": None,
                "locked_by": None,
                "last_error": None,
            }
            for outcome in outcomes
            for item_id, status in [outcome[:2]]
        ],
    )


def fail(conn: Connection, item_id: int, *, error: str, dead: bool, delay: float) -> None:
    now = time.time()
    conn.execute(
        _UPDATE_ONE,
        {
            "b_id": item_id,
            "status": "dead" if dead else "failed",
            "last_error": error[:4000],
            "run_after": now + delay,
            "processed_at": now if dead else None,
            "lease_until": None,
            "locked_by": None,
        },
    )


def _give_back(conn: Connection, item_ids: list[int], worker_id: str, **values: Any) -> int:
    if not item_ids:
        return 0
    mine = (T.c.id.in_(item_ids), T.c.locked_by == worker_id, T.c.status == "processing")
    return int(
        conn.execute(
            T.update()
            .where(*mine)
            .values(
                status="pending",
                attempts=sa.case((T.c.attempts > 0, T.c.attempts - 1), else_=0),
                lease_until=None,
                locked_by=None,
                **values,
            )
        ).rowcount
    )


def release(conn: Connection, item_ids: list[int], *, worker_id: str) -> int:
    """Give back claimed items without counting the attempt (a fault of the process, not of
    the items): pending again at once. Items this worker no longer holds are left alone."""
    return _give_back(conn, item_ids, worker_id)


def postpone(conn: Connection, item_id: int, *, worker_id: str, reason: str, delay: float) -> None:
    """Give back one claimed item uncharged, to be tried again in `delay` seconds, with the
    reason it waits (the connection's Stripe is refused or away)."""
    _give_back(conn, [item_id], worker_id, run_after=time.time() + delay, last_error=reason[:4000])


def requeue(conn: Connection, item_ids: list[int], *, statuses: Sequence[str]) -> int:
    """Queue these items again with a fresh attempt count, those still in one of `statuses`;
    returns how many."""
    return int(
        conn.execute(
            T.update()
            .where(T.c.id.in_(item_ids), T.c.status.in_(statuses))
            .values(
                status="pending",
                attempts=0,
                run_after=time.time(),
                last_error=None,
                processed_at=None,
                lease_until=None,
                locked_by=None,
            )
        ).rowcount
    )


# Reading and replaying, for the CLI and the API.


MAX_ITEM_ID = 2**31 - 1  # inbox_items.id is a 32-bit integer on PostgreSQL


def _ref_filter(ref: str) -> sa.ColumnElement[bool]:
    if ref.isascii() and ref.isdigit() and int(ref) <= MAX_ITEM_ID:
        return T.c.id == int(ref)
    return T.c.event_id == ref


def get(db: Database, ref: str) -> dict[str, Any]:
    """One item by its number or its Stripe event id."""
    if not ids.plausible(ref):
        raise errors.NotFound(f"no inbox item {ref}")
    with db.read() as conn:
        rows = conn.execute(sa.select(T).where(_ref_filter(ref)).order_by(T.c.id)).all()
    if not rows:
        raise errors.NotFound(f"no inbox item {ref}")
    if len(rows) > 1:
        raise errors.Conflict(
            f"event {ref} arrived on {len(rows)} connections; give the item number instead"
        )
    return dict(rows[0]._mapping)


def list_items(
    db: Database, *, status: str | None = None, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """Newest first, without payloads."""
    if status is not None and status not in STATUSES:
        raise errors.BadRequest(f"unknown status {status!r}; one of: {', '.join(STATUSES)}")
    columns = [c for c in T.c if c.name != "payload"]
    stmt = sa.select(*columns).order_by(T.c.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(T.c.status == status)
    with db.read() as conn:
        if before is not None:
            known = conn.execute(sa.select(T.c.id).where(T.c.id == before)).scalar_one_or_none()
            if known is None:
                raise errors.BadRequest(
                    f"starting_after: no inbox item {before}", code="invalid_cursor"
                )
            stmt = stmt.where(T.c.id < before)
        return [dict(r._mapping) for r in conn.execute(stmt)]


def replay(db: Database, ref: str) -> dict[str, Any]:
    """Queue a `dead`, `done`, `failed` or `ignored` item again, with a fresh attempt count."""
    item = get(db, ref)
    if item["status"] in ("pending", "processing"):
        raise errors.Conflict(f"inbox item {item['id']} is {item['status']} already")
    with db.write() as conn:
        requeue(conn, [item["id"]], statuses=(item["status"],))
    return get(db, str(item["id"]))


def counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        rows = conn.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status))
        found = {status: n for status, n in rows}
    return {status: found.get(status, 0) for status in STATUSES}


def public(item: dict[str, Any]) -> dict[str, Any]:
    """The API and `--json` shape of an item (without the payload)."""
    return {
        "id": item["id"],
        "connection_id": item["connection_id"],
        "event_id": item["event_id"],
        "event_type": item["event_type"],
        "event_created": item["event_created"],
        "api_version": item["api_version"],
        "livemode": bool(item["livemode"]),
        "source": item["source"],
        "status": item["status"],
        "attempts": item["attempts"],
        "last_error": item["last_error"],
        "flows": item["flows"].split(",") if item["flows"] else [],
        "records": item["records"].split(",") if item.get("records") else [],
        "received_at": iso(item["received_at"]),
        "processed_at": iso(item["processed_at"]),
    }
