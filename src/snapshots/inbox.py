"""The inbox: every event waits here, raw, until a worker has applied it.

Statuses: `pending` -> `processing` (claimed under a lease) -> `done` | `failed` (retried after
a backoff) | `dead` (gave up; replayable). `ignored` means no flow wanted the event type.
A claim whose lease ran out (its worker died) is claimable again.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from snapshots import arrivals as hourly  # `arrivals` names the events being stored here
from snapshots import causes, errors, ids, paging
from snapshots.store import db, dialect, tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

STATUSES = ("pending", "processing", "done", "ignored", "failed", "dead")
T = tables.inbox_items
P = tables.inbox_payloads
ATTEMPT_ERROR = 2000  # characters of a failed attempt's error kept
ATTEMPTS_SHOWN = 50  # an item's newest failed attempts shown
ARRIVED = "snapshots_inbox"  # the channel NOTIFYd when items become claimable (PostgreSQL)


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
    received_at: float  # when intake stored it (the flows saved before must apply it)
    run_after: float  # when it became due (a replay or a retry: the flows saved before apply it)


class Wants(Protocol):
    """Whether some flow wants an event type (`flows.Registry`, or `revisions.Live` for the flows
    in force), and the flows version that says so: an event no flow wants is stored `ignored`."""

    @property
    def version(self) -> int: ...

    def wants(self, event_type: str) -> bool: ...


@dataclass(frozen=True)
class Arrival:
    """An event to store: its connection, parsed envelope, raw bytes and source."""

    connection_id: str
    event: dict[str, Any]
    payload: bytes
    source: str
    wanted: bool
    judged_by: int | None = None  # the flows version that said `wanted` (None: final as it is)


@dataclass(frozen=True)
class Stored:
    item_id: int
    status: str
    duplicate: bool


def _lookup(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """What an item is found by besides its event id: its object's id, and the e-mail address
    it carries (a customer's, or an invoice's customer's), lower-cased."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None, None
    object_id = obj.get("id")
    email = obj.get("email") or obj.get("customer_email")
    return (
        object_id[:255] if isinstance(object_id, str) and object_id else None,
        email.strip().lower()[:512] if isinstance(email, str) and email.strip() else None,
    )


def _row(arrival: Arrival, now: float) -> dict[str, Any]:
    event = arrival.event
    object_id, email = _lookup(event)
    return {
        "connection_id": arrival.connection_id,
        "event_id": event["id"],
        "event_type": event["type"],
        "event_created": event["created"],
        "api_version": event.get("api_version"),
        "livemode": bool(event.get("livemode", False)),
        "source": arrival.source,
        "status": "pending" if arrival.wanted else "ignored",
        "run_after": now,
        "received_at": now,
        "processed_at": None if arrival.wanted else now,
        "object_id": object_id,
        "email": email,
    }


_NEWEST_VERSION = sa.select(sa.func.max(tables.flow_versions.c.version))  # built once


def flows_version(tx: Tx) -> int:
    """The flows version in force (the newest stored; 0, the prebuilt flows, when none is)."""
    found = tx.execute(_NEWEST_VERSION).scalar_one_or_none()
    return int(found or 0)


def _judged_by_flows_in_force(tx: Tx, arrivals: list[Arrival]) -> list[Arrival]:
    """The arrivals with `wanted` as the flows in force say: an event that an older flows
    version did not want stays pending (the worker, which reads the version in force, applies
    it or marks it ignored). One indexed read, only when some event is unwanted, and in the
    storing transaction: no version saved before the event arrived is missed."""
    if all(a.wanted or a.judged_by is None for a in arrivals):
        return arrivals
    version = flows_version(tx)
    return [
        dataclasses.replace(a, wanted=True)
        if not a.wanted and a.judged_by not in (None, version)
        else a
        for a in arrivals
    ]


def enqueue_many(tx: Tx, arrivals: list[Arrival]) -> list[Stored]:
    """Store events unless (connection, event id) is there already, in one statement.

    Returns, for each arrival in order, its item and whether it was a duplicate (of an item
    stored before, or of an earlier arrival in the same call). On PostgreSQL that statement
    also reports the items stored before and NOTIFYs the workers when it stored a pending one:
    on a connection in autocommit it is the whole transaction, one round trip (`GroupCommit`)."""
    arrivals = _judged_by_flows_in_force(tx, arrivals)
    now = time.time()
    first: dict[tuple[str, str], int] = {}
    for index, arrival in enumerate(arrivals):
        first.setdefault((arrival.connection_id, arrival.event["id"]), index)
    stored = _insert(tx, [arrivals[index] for index in first.values()], now)
    missing = first.keys() - stored.keys()
    if missing:  # there already (on SQLite: every redelivery; on PostgreSQL: stored meanwhile)
        stored.update(_stored_before(tx, missing))
    results = []
    for index, arrival in enumerate(arrivals):
        key = (arrival.connection_id, arrival.event["id"])
        found = stored[key]
        results.append(found if first[key] == index else Stored(found.item_id, found.status, True))
    return results


_STORED = sa.select(T.c.id, T.c.status).where(
    T.c.connection_id == sa.bindparam("connection_id"), T.c.event_id == sa.bindparam("event_id")
)


def _stored_before(tx: Tx, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    """The items of events (connection id, event id) stored before, one indexed read each. On
    SQLite, where every redelivery comes here, sqlite3 itself runs it (`db.sqlite_text`):
    SQLAlchemy's building and execution of the query cost ten times SQLite's running it."""
    sqlite = None if dialect.is_postgresql(tx) else db.sqlite_text(_STORED, tx.dialect)
    driver: Any = tx.connection.driver_connection  # (sqlite3's, in this transaction)
    found: dict[tuple[str, str], Stored] = {}
    for connection_id, event_id in keys:
        params = {"connection_id": connection_id, "event_id": event_id}
        if sqlite is None:
            item_id, status = tx.execute(_STORED, params).one()
        else:
            sql, names, _ = sqlite
            item_id, status = driver.execute(sql, [params[name] for name in names]).fetchone()
        found[(connection_id, event_id)] = Stored(item_id, status, True)
    return found


def _insert(tx: Tx, arrivals: list[Arrival], now: float) -> dict[tuple[str, str], Stored]:
    """Store arrivals (no two of one event) with their payloads, counting the new ones in
    `inbox_arrivals`; see `_insert_sqlite` and `_insert_postgresql` for which items they
    report."""
    rows, payloads = [_row(arrival, now) for arrival in arrivals], [a.payload for a in arrivals]
    if dialect.is_postgresql(tx):
        return _insert_postgresql(tx, rows, payloads, now)
    stored = _insert_sqlite(tx, rows, payloads)
    hourly.add(tx, (key[0] for key in stored), received_at=now)
    return stored


def _insert_sqlite(
    tx: Tx, rows: list[dict[str, Any]], payloads: list[bytes]
) -> dict[tuple[str, str], Stored]:
    """The new rows' items (SQLite runs in the process: a statement more costs no round trip),
    and their payloads stored. Both statements go to sqlite3 itself, their text built once per
    shape: SQLAlchemy's execution of them cost more CPU than SQLite running them."""
    columns = tuple(rows[0])
    driver: Any = tx.connection.driver_connection  # sqlite3, in this transaction
    stored: dict[tuple[str, str], Stored] = {}
    for start in range(0, len(rows), SQLITE_ROWS):
        chunk = rows[start : start + SQLITE_ROWS]
        found = driver.execute(
            _sqlite_inserting(tx.dialect, columns, len(chunk)),
            [row[column] for row in chunk for column in columns],
        )
        for item_id, connection_id, event_id, status in found:
            stored[(connection_id, event_id)] = Stored(item_id, status, False)
    if stored:
        driver.executemany(
            "INSERT INTO inbox_payloads (item_id, payload) VALUES (?, ?)",
            [
                (item.item_id, payload)
                for row, payload in zip(rows, payloads, strict=True)
                if (item := stored.get((row["connection_id"], row["event_id"]))) is not None
            ],
        )
    return stored


SQLITE_ROWS = 500  # rows a statement of `_sqlite_inserting` at most (SQLite bounds parameters)


@functools.lru_cache(maxsize=64)
def _sqlite_inserting(sql: sa.Dialect, columns: tuple[str, ...], count: int) -> str:
    """INSERT ... ON CONFLICT (connection, event id) DO NOTHING of `count` rows of `columns`,
    returning the new items, in SQLite's text."""
    names = ", ".join(sql.identifier_preparer.quote(name) for name in columns)
    values = "(" + ", ".join("?" * len(columns)) + ")"
    return (
        f"INSERT INTO inbox_items ({names}) VALUES {', '.join([values] * count)} "
        "ON CONFLICT (connection_id, event_id) DO NOTHING "
        "RETURNING id, connection_id, event_id, status"
    )


def _insert_postgresql(
    tx: Tx, rows: list[dict[str, Any]], payloads: list[bytes], now: float
) -> dict[tuple[str, str], Stored]:
    """The new rows' items, their payloads stored, and the items of the rows there before the
    statement began (the new ones counted in `inbox_arrivals` by the same statement). A row
    another transaction committed while this one ran is in neither: the caller reads it."""
    stmt = _store_new(tx.dialect, tuple(rows[0]))
    params = dialect.arrays(tx, T, rows) | {
        "payloads": dialect.binary_array(payloads),  # as text, each went as hex, regex-quoted
        "arrival_hour": hourly.hour_of(now),
        "arrival_shard": hourly.shard(),
    }
    return {
        (row.connection_id, row.event_id): Stored(row.id, row.status, row.duplicate)
        for row in tx.execute(stmt, params)
        if row.id is not None  # the NOTIFY's row
    }


@functools.cache
def _store_new(sql: sa.Dialect, columns: tuple[str, ...]) -> sa.TextClause:
    # Every part of the statement sees the same snapshot: `stored` finds the rows there before
    # it, not the ones `new` inserts. `woken` runs only because the last part reads it; `paid`
    # and `counted` (data-modifying parts) run whoever reads them. Payloads pair with rows by
    # position.
    names = ", ".join(sql.identifier_preparer.quote(name) for name in columns)
    return sa.text(
        f"WITH v AS (SELECT * FROM {dialect.unnested(sql, T, columns)}), "
        f"new AS (INSERT INTO inbox_items ({names}) SELECT {names} FROM v ORDER BY ord "
        "ON CONFLICT (connection_id, event_id) DO NOTHING "
        "RETURNING id, connection_id, event_id, status), "
        "paid AS (INSERT INTO inbox_payloads (item_id, payload) SELECT new.id, p.payload "
        "FROM new JOIN v ON new.connection_id = v.connection_id AND new.event_id = v.event_id "
        "JOIN unnest(CAST(:payloads AS BYTEA[])) WITH ORDINALITY AS p(payload, ord) "
        "ON p.ord = v.ord), "
        f"{hourly.counting_cte(sql)}, "
        f"woken AS (SELECT pg_notify('{ARRIVED}', '') FROM new WHERE status = 'pending' LIMIT 1) "
        "SELECT id, connection_id, event_id, status, false AS duplicate FROM new "
        "UNION ALL SELECT i.id, i.connection_id, i.event_id, i.status, true FROM inbox_items i "
        "JOIN v ON i.connection_id = v.connection_id AND i.event_id = v.event_id "
        "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL FROM woken"
    )


def add_new(tx: Tx, arrivals: list[Arrival]) -> int:
    """Store the events the inbox has not seen (the duplicates rule of `enqueue_many`) without
    reporting each one: returns how many were new. For bulk sources (sync)."""
    if not arrivals:
        return 0
    first: dict[tuple[str, str], Arrival] = {}
    for arrival in arrivals:
        first.setdefault((arrival.connection_id, arrival.event["id"]), arrival)
    stored = _insert(tx, list(first.values()), time.time())
    return sum(not found.duplicate for found in stored.values())


def has_claimable(tx: Tx) -> bool:
    """A cheap read: is anything claimable now? (Spares SQLite a write lock when idle.)"""
    return tx.execute(sa.select(T.c.id).where(_claimable(time.time())).limit(1)).first() is not None


UNSETTLED = ("pending", "failed", "processing")  # the rows of the claim index (tables.py)
CLAIM_ORDER = sa.cast(T.c.id, sa.BigInteger)  # the claim index's key: oldest first


def _claimable(now: float) -> sa.ColumnElement[bool]:
    # The first term is the claim index's own condition, word for word, so PostgreSQL sees
    # that the index holds every candidate and reads the index alone.
    return sa.and_(
        T.c.status.in_(UNSETTLED),
        sa.or_(
            sa.and_(T.c.status.in_(("pending", "failed")), T.c.run_after <= now),
            sa.and_(T.c.status == "processing", T.c.lease_until < now),
        ),
    )


def _claim_postgresql(tx: Tx, *, worker_id: str, limit: int, lease: float) -> list[Item]:
    # The claim need not wait for its WAL to reach the disk: lost at a crash of the server, the
    # items are as they were (unclaimed, no attempt counted) and the claimer's connection is
    # gone, so it applies nothing; the commit that applies them flushes the claim with it.
    # And it reads the claim index whatever the statistics say: they see few items due (there
    # are few, a worker keeps up), so the planner took a bitmap of a status index and sorted
    # what it found, but such an index keeps an entry for every version of every item until a
    # vacuum (2.3 ms of a 10 ms claim, growing between vacuums; the claim index, in claim
    # order and cleaned by its own scans, took 0.7 ms).
    dialect.set_local(tx, synchronous_commit="off", enable_bitmapscan="off", enable_sort="off")
    now = time.time()
    ids = (
        sa.select(T.c.id)
        .where(_claimable(now))
        .order_by(CLAIM_ORDER)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # `id = ANY(ARRAY(...))`: the ids are picked once, then each row is found by the primary
    # key. With `id IN (...)` PostgreSQL could join the picked ids to a scan of the whole
    # table, a claim costing more as the inbox grew (5 ms of 7 at 5,700 items).
    picked = T.c.id == sa.any_(sa.func.ARRAY(ids))
    return _claim_update(tx, picked, worker_id=worker_id, until=now + lease)


def _claim_sqlite(tx: Tx, *, worker_id: str, limit: int, lease: float) -> list[Item]:
    # The write transaction (BEGIN IMMEDIATE) already excludes every other claimer.
    now = time.time()
    ids = sa.text(_CLAIMABLE_SQLITE).bindparams(now=now, limit=limit).columns(T.c.id)
    picked = T.c.id.in_(ids.scalar_subquery())
    return _claim_update(tx, picked, worker_id=worker_id, until=now + lease)


# SQLite's claim names the claim index: left to choose, SQLite merged the (status, run_after)
# index's ranges of every due item and sorted them all, on every claim, a cost that grew with
# the backlog (1.2 ms a claim of 200 at 2,850 due items, 0.08 through the claim index). The
# index's condition is written as its definition says it (tables.py): a bound list would
# not show SQLite that the index holds every candidate, and INDEXED BY fails a query that
# cannot use the index, rather than scan.
_CLAIMABLE_SQLITE = (
    "SELECT id FROM inbox_items INDEXED BY ix_inbox_items_claimable"
    " WHERE status IN ('pending', 'failed', 'processing')"
    " AND (status IN ('pending', 'failed') AND run_after <= :now"
    " OR status = 'processing' AND lease_until < :now)"
    " ORDER BY CAST(id AS BIGINT) LIMIT :limit"
)


def _claim_update(
    tx: Tx, picked: sa.ColumnElement[bool], *, worker_id: str, until: float
) -> list[Item]:
    claimed = (
        T.update()
        .where(picked)
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
            T.c.received_at,
            T.c.run_after,
        )
    )
    # A claimable item has its payload (retention deletes only settled items' payloads).
    if dialect.is_postgresql(tx):  # with the claim, in its round trip
        done = claimed.cte("claimed")
        with_payloads = sa.select(done, P.c.payload).outerjoin(P, P.c.item_id == done.c.id)
        rows = tx.execute(dialect.binary_results(with_payloads)).all()
        return sorted(
            (Item(**{**r._mapping, "payload": r.payload or b""}) for r in rows),
            key=lambda item: item.id,
        )
    found = tx.execute(claimed).all()
    if not found:
        return []
    payloads = dict(tx.execute(_PAYLOADS, {"ids": [r.id for r in found]}).all())
    return sorted(
        (Item(**r._mapping, payload=payloads.get(r.id, b"")) for r in found),
        key=lambda item: item.id,
    )


_PAYLOADS = sa.select(P.c.item_id, P.c.payload).where(
    P.c.item_id.in_(sa.bindparam("ids", expanding=True))
)


def claim(tx: Tx, *, worker_id: str, limit: int, lease: float) -> list[Item]:
    """Take up to `limit` items for `lease` seconds, oldest first (ask `has_claimable` in a
    read first: an idle worker then never takes SQLite's write lock)."""
    claimer = _claim_postgresql if dialect.is_postgresql(tx) else _claim_sqlite
    return claimer(tx, worker_id=worker_id, limit=limit, lease=lease)


def still_mine(tx: Tx, ids: list[int], *, worker_id: str) -> set[int]:
    """Of these items, the ones this worker still holds, locked for the rest of the transaction
    (a worker whose lease ran out must not apply an item another worker has taken over)."""
    return set(tx.execute(_still_mine(tx.dialect), {"ids": ids, "worker": worker_id}).scalars())


@functools.cache
def _still_mine(sql: sa.Dialect) -> sa.Select[Any]:
    """`still_mine`'s statement, built once per dialect (every batch runs it)."""
    return dialect.locked(
        sql,
        sa.select(T.c.id).where(
            T.c.id.in_(sa.bindparam("ids", expanding=True)),
            T.c.locked_by == sa.bindparam("worker"),
            T.c.status == "processing",
        ),
    )


_UPDATE_ONE = T.update().where(T.c.id == sa.bindparam("b_id"))


def finish(
    tx: Tx,
    outcomes: Sequence[tuple[int, str, list[str]] | tuple[int, str, list[str], list[str]]],
    *,
    flows_version: int | None = None,
) -> None:
    """Mark items applied: (item id, `done` or `ignored`, names of the flows that ran[, ids of
    the records they wrote]), by the flows `flows_version`."""
    if not outcomes:
        return
    dialect.update_rows(
        tx,
        T,
        [
            {
                "id": item_id,
                "status": status,
                "flows": ",".join(outcome[2]) or None,
                "records": ",".join(outcome[3]) or None if len(outcome) > 3 else None,
            }
            for outcome in outcomes
            for item_id, status in [outcome[:2]]
        ],
        key="id",
        same={
            "processed_at": time.time(),
            "flows_version": flows_version,
            "lease_until": None,
            "locked_by": None,
            "last_error": None,
            "error_cause": None,
        },
    )
    # Which records each item wrote, to find the events that touched a record.
    touched = [
        {"item_id": outcome[0], "record_id": record_id}
        for outcome in outcomes
        for record_id in dict.fromkeys(outcome[3] if len(outcome) > 3 else [])
    ]
    dialect.insert_rows(tx, tables.inbox_item_records, touched, skip_existing=True)


def fail(
    tx: Tx, item_id: int, *, error: str, dead: bool, delay: float, worker: str | None = None
) -> None:
    """Record a failed attempt at applying an item: `failed` to be tried again in `delay`
    seconds, or `dead`; the attempt itself (when, the error, the worker) joins the item's
    history (`attempts_of`). Only failures write that history: a success costs nothing."""
    now = time.time()
    tx.execute(
        tables.inbox_attempts.insert().values(
            item_id=item_id, at=now, error=error[:ATTEMPT_ERROR], worker=worker
        )
    )
    tx.execute(
        _UPDATE_ONE,
        {
            "b_id": item_id,
            "status": "dead" if dead else "failed",
            "last_error": error[:4000],
            "error_cause": causes.of(error),
            "run_after": now + delay,
            "processed_at": now if dead else None,
            "lease_until": None,
            "locked_by": None,
        },
    )


class Attempt(BaseModel):
    """A failed attempt at applying an inbox item."""

    model_config = ConfigDict(frozen=True)

    at: Timestamp
    error: str
    worker: str | None


def attempts_of(tx: Tx, item_id: int, *, limit: int = ATTEMPTS_SHOWN) -> list[Attempt]:
    """An item's failed attempts, oldest first (the newest `limit` of them)."""
    rows = tx.execute(_ATTEMPTS, {"item_id": item_id, "limit": limit}).all()
    return [Attempt.model_validate(row._mapping) for row in reversed(rows)]


def _give_back(tx: Tx, item_ids: list[int], worker_id: str, **values: Any) -> int:
    if not item_ids:
        return 0
    mine = (T.c.id.in_(item_ids), T.c.locked_by == worker_id, T.c.status == "processing")
    return int(
        tx.execute(
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


def release(tx: Tx, item_ids: list[int], *, worker_id: str) -> int:
    """Give back claimed items without counting the attempt (a fault of the process, not of
    the items): pending again at once. Items this worker no longer holds are left alone."""
    released = _give_back(tx, item_ids, worker_id)
    if released:
        dialect.notify(tx, ARRIVED)
    return released


def postpone(tx: Tx, item_id: int, *, worker_id: str, reason: str, delay: float) -> None:
    """Give back one claimed item uncharged, to be tried again in `delay` seconds, with the
    reason it waits (the connection's Stripe is refused or away)."""
    _give_back(
        tx,
        [item_id],
        worker_id,
        run_after=time.time() + delay,
        last_error=reason[:4000],
        error_cause=causes.of(reason),
    )


def requeue(tx: Tx, item_ids: list[int], *, statuses: Sequence[str]) -> int:
    """Queue these items again with a fresh attempt count, those still in one of `statuses`
    and with their payload (see `retention`); returns how many."""
    dialect.notify(tx, ARRIVED)
    return int(
        tx.execute(
            T.update()
            .where(T.c.id.in_(item_ids), T.c.status.in_(statuses), T.c.pruned_at.is_(None))
            .values(
                status="pending",
                attempts=0,
                run_after=time.time(),
                last_error=None,
                error_cause=None,
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


def _names(value: Any) -> Any:
    """A comma-separated column (`flows`, `records`) as its list."""
    if isinstance(value, str):
        return value.split(",") if value else []
    return value or []


Names = Annotated[list[str], BeforeValidator(_names)]


class Event(BaseModel):
    """An inbox item as every shell shows it (without its payload)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    connection_id: str
    event_id: str
    event_type: str
    event_created: int
    api_version: str | None
    livemode: bool
    source: str
    status: str
    attempts: int
    last_error: str | None
    flows: Names
    records: Names = Field(description="The records the flows wrote, in their order")
    flows_version: int | None = Field(
        default=None, description="The flows version a worker applied it with (none before it was)"
    )
    received_at: Timestamp
    processed_at: Timestamp | None


SHOWN = list(T.c)  # an item's columns (its raw bytes are in `inbox_payloads`)


# Built once: an event's page reads them at every view (a statement of every column made
# afresh, with its cache key, cost about as much as SQLite reading the row).
_BY_ID = sa.select(*SHOWN).where(T.c.id == sa.bindparam("ref")).order_by(T.c.id)
_BY_EVENT_ID = sa.select(*SHOWN).where(T.c.event_id == sa.bindparam("ref")).order_by(T.c.id)
_PAYLOAD = sa.select(P.c.payload).where(P.c.item_id == sa.bindparam("item_id"))
_A = tables.inbox_attempts
_ATTEMPTS = (
    sa.select(_A.c.at, _A.c.error, _A.c.worker)
    .where(_A.c.item_id == sa.bindparam("item_id"))
    .order_by(_A.c.id.desc())
    .limit(sa.bindparam("limit"))
)


def _one(tx: Tx, ref: str, connections: Sequence[str] | None = None) -> Any:
    if not ids.plausible(ref):
        raise errors.NotFound(f"no inbox item {ref}")
    if connections is None:
        by_id = ref.isascii() and ref.isdigit() and int(ref) <= MAX_ITEM_ID
        rows = tx.execute(
            _BY_ID if by_id else _BY_EVENT_ID, {"ref": int(ref) if by_id else ref}
        ).all()
    else:
        mine = paging.within(T.c.connection_id, connections)
        rows = tx.execute(sa.select(*SHOWN).where(_ref_filter(ref), *mine).order_by(T.c.id)).all()
    if not rows:
        raise errors.NotFound(f"no inbox item {ref}")
    if len(rows) > 1:
        raise errors.Conflict(
            f"event {ref} arrived on {len(rows)} connections; give the item number instead"
        )
    return rows[0]


def get(tx: Tx, ref: str, *, connections: Sequence[str] | None = None) -> Event:
    """One item by its number or its Stripe event id (of `connections`, when given)."""
    return Event.model_validate(db.fields(_one(tx, ref, connections)))


def payload(tx: Tx, item_id: int) -> bytes:
    """An item's raw bytes, as they arrived (empty once retention pruned them)."""
    return bytes(tx.execute(_PAYLOAD, {"item_id": item_id}).scalar_one_or_none() or b"")


def page(
    tx: Tx,
    *,
    status: str | None = None,
    limit: int = 50,
    starting_after: int | None = None,
    connections: Sequence[str] | None = None,
    test: bool | None = None,
) -> paging.Page[Event]:
    """Newest first, without payloads (of `connections`, when given; with `test`, only test
    events (True) or only the others (False))."""
    if status is not None and status not in STATUSES:
        raise errors.BadRequest(f"unknown status {status!r}; one of: {', '.join(STATUSES)}")
    return paging.paginate(
        tx,
        T,
        "inbox item",
        lambda row: Event.model_validate(db.fields(row)),
        limit=limit,
        starting_after=starting_after,
        where=[
            *([] if status is None else [T.c.status == status]),
            *([] if test is None else [(T.c.source == "test") if test else (T.c.source != "test")]),
            *paging.within(T.c.connection_id, connections),
        ],
        key="id",
        columns=SHOWN,
    )


def replay(tx: Tx, ref: str, *, connections: Sequence[str] | None = None) -> Event:
    """Queue a `dead`, `done`, `failed` or `ignored` item again, with a fresh attempt count."""
    item = _one(tx, ref, connections)
    if item.status in ("pending", "processing"):
        raise errors.Conflict(f"inbox item {item.id} is {item.status} already")
    if item.pruned_at is not None:
        raise errors.Conflict(
            f"inbox item {item.id} cannot be replayed: its payload was pruned "
            "(SNAPSHOTS_EVENT_RETENTION); `snapshots sync --reconcile` fetches recent events again"
        )
    requeue(tx, [item.id], statuses=(item.status,))
    return get(tx, str(item.id))


def counts(tx: Tx) -> dict[str, int]:
    rows = tx.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status))
    found = {status: n for status, n in rows}
    return {status: found.get(status, 0) for status in STATUSES}


class FlowCounts(BaseModel):
    """What became of the events a flow's triggers matched, over a window."""

    matched: int = Field(description="Events of a type the flow's triggers match")
    done: int = Field(description="Events the flow ran on (its filter passed and it wrote)")
    failed: int = Field(description="Events of its types that failed or went dead")


class Triggered(Protocol):
    @property
    def name(self) -> str: ...

    def matches(self, event_type: str) -> bool: ...


def flow_counts(tx: Tx, flows: Sequence[Triggered], *, since: float) -> dict[str, FlowCounts]:
    """Per flow: the events received since `since` (unix seconds) of its trigger types, those
    it ran on, and those that failed or went dead. One grouped read: the flows that ran on an
    item are on the item (`finish`), its types matched against the flows given."""
    rows = tx.execute(
        sa.select(T.c.event_type, T.c.status, T.c.flows, sa.func.count())
        .where(T.c.received_at >= since)
        .group_by(T.c.event_type, T.c.status, T.c.flows)
    ).all()
    found = {flow.name: FlowCounts(matched=0, done=0, failed=0) for flow in flows}
    for event_type, status, ran, count in rows:
        names = set(_names(ran))
        for flow in flows:
            if not flow.matches(event_type):
                continue
            counts = found[flow.name]
            counts.matched += count
            if status == "done" and flow.name in names:
                counts.done += count
            elif status in ("failed", "dead"):
                counts.failed += count
    return found
