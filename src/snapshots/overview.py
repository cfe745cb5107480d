"""The overview: each connection at a glance (what arrives, what waits, what failed, what is
syncing, whether Stripe's webhooks went silent), and the bursts of refusals in the audit log.

Counts of what arrived (in the last hour and 24 hours, and 24 hourly bars) come from the hourly
counts of `inbox_arrivals` (arrivals.py) and, for the parts of hours the last hour and day cut,
from the inbox by `received_at`; failed and dead items are counted up to `COUNT_CAP` per
connection (a count above it shows as "1,000+", linking to the list: thousands of failures read
one by one say nothing more, and counting them all cost milliseconds per refresh); the silence
warning is the
newest reconciliation's, while no webhook has come since it; a burst is `BURST_MIN` or more
refusals of one kind within `BURST_WINDOW`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, computed_field

from snapshots import arrivals, audit, connections, sync
from snapshots.store import tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp
from snapshots.vault import Vault

INBOX = tables.inbox_items
R = tables.sync_runs
A = tables.audit_entries
HOUR = 3600
BARS = 24  # hourly bars in the chart
WAITING = ("pending", "processing")
COUNT_CAP = 1000  # failed or dead items counted per connection; more show as "1,000+"
BURST_WINDOW = 3600  # seconds
BURST_MIN = 5  # refusals of one kind within the window that make a burst
# Refusals worth summarising, and how the overview names them.
REFUSALS = {
    "auth.bad_key": "refused API keys",
    "auth.scope_denied": "API requests refused for a missing scope",
    "console.sign_in_failed": "failed console sign-ins",
    "console.sign_in_limited": "console sign-ins refused for too many failures",
}


class Bar(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: Timestamp
    count: int


class ConnectionOverview(BaseModel):
    model_config = ConfigDict(frozen=True)

    connection: connections.Connection
    last_webhook_at: Timestamp | None
    events_hour: int
    events_day: int
    bars: list[Bar]  # the last 24 hours, oldest first
    pending: int  # waiting for the worker (pending or being processed)
    oldest_pending_at: Timestamp | None
    lag: float | None  # seconds the oldest waiting item has waited
    failed: int  # counted up to COUNT_CAP + 1: more than COUNT_CAP means "COUNT_CAP+"
    dead: int  # likewise
    running: list[sync.Run]
    silence: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tallest(self) -> int:
        """The most events in one hour of `bars` (the chart's scale)."""
        return max((bar.count for bar in self.bars), default=0)


class Burst(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: str
    label: str
    count: int
    addresses: int
    first_at: Timestamp
    last_at: Timestamp


class Overview(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: Timestamp
    connections: list[ConnectionOverview]
    bursts: list[Burst]


def _arrivals(name: str) -> sa.ScalarSelect[int]:
    """How many items of a connection arrived in [`{name}_since`, `{name}_until`): a range of
    the (connection, received_at) index."""
    return (
        sa.select(sa.func.count())
        .where(
            INBOX.c.connection_id == sa.bindparam("connection_id"),
            INBOX.c.received_at >= sa.bindparam(f"{name}_since"),
            INBOX.c.received_at < sa.bindparam(f"{name}_until"),
        )
        .scalar_subquery()
    )


def _capped(status: str) -> sa.ScalarSelect[int]:
    """How many items of a connection have `status`, counted up to `COUNT_CAP + 1` (at most
    that many entries of the (status, error_cause, connection_id, received_at) index read,
    whatever the number of failures)."""
    some = (
        sa.select(sa.literal(1))
        .where(INBOX.c.status == status, INBOX.c.connection_id == sa.bindparam("connection_id"))
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    return sa.select(sa.func.count()).select_from(some).scalar_subquery()


def _hour(name: str) -> sa.ScalarSelect[int]:
    """How many items of a connection arrived in the hour starting at `{name}_hour`: rows of
    `inbox_arrivals`, not index entries."""
    return arrivals.in_hour(sa.bindparam(f"{name}_hour"), sa.bindparam("connection_id"))


# Built once, run once per connection every refresh (one statement, so one snapshot): the
# hourly bars and the hour before the first (from `inbox_arrivals`), the parts of hours the
# last hour and the last 24 hours cut (from the index: at most half an hour each, see
# `_counts`), what arrived after the last bar (a clock ahead in another process), the capped
# failed and dead counts, the last webhook.
_COUNTS = sa.select(
    *[_hour(f"bar{i}").label(f"bar{i}") for i in range(BARS)],
    _hour("first").label("first"),
    _arrivals("day_part").label("day_part"),
    _arrivals("hour_part").label("hour_part"),
    _arrivals("later").label("later"),
    _capped("failed").label("failed"),
    _capped("dead").label("dead"),
    sa.select(INBOX.c.received_at)
    .where(INBOX.c.connection_id == sa.bindparam("connection_id"), INBOX.c.source == "webhook")
    .order_by(INBOX.c.received_at.desc())
    .limit(1)
    .scalar_subquery()
    .label("last_webhook"),
)


def _edges(now: float) -> list[int]:
    """Where the hourly bars start, oldest first; the last holds `now`."""
    start = (int(now) // HOUR - (BARS - 1)) * HOUR
    return [start + i * HOUR for i in range(BARS)]


@dataclass(frozen=True)
class _Counts:
    bars: list[int]  # items that arrived in each hour of `_edges`
    day: int  # in the last 24 hours
    hour: int  # in the last hour (and after: a clock ahead)
    failed: int
    dead: int
    last_webhook: float | None


def _counts(tx: Tx, connection_id: str, now: float) -> _Counts:
    """The last 24 hours cut the hour before the first bar, and the last hour cuts the bar
    before the last, at the same point: `into` seconds into the hour. Each count takes the
    shorter side of its cut from the index (so at most half an hour of entries each), the
    whole hours from `inbox_arrivals`."""
    edges = _edges(now)
    first = edges[0] - HOUR
    into = now - edges[-1]
    day_since, hour_since = now - BARS * HOUR, now - HOUR  # first + into, edges[-2] + into
    day_part: tuple[float, float]
    hour_part: tuple[float, float]
    if into < HOUR / 2:  # the part before the cut, taken from its hour
        day_part, hour_part = (first, day_since), (edges[-2], hour_since)
    else:  # the part after the cut, up to the next edge
        day_part, hour_part = (day_since, edges[0]), (hour_since, edges[-1])
    ranges = {"day_part": day_part, "hour_part": hour_part, "later": (edges[-1] + HOUR, math.inf)}
    values: dict[str, Any] = {"connection_id": connection_id, "first_hour": first}
    values.update({f"bar{i}_hour": since for i, since in enumerate(edges)})
    for name, (since, until) in ranges.items():
        values.update({f"{name}_since": since, f"{name}_until": until})
    row = tx.execute(_COUNTS, values).one()._mapping
    bars = [int(row[f"bar{i}"]) for i in range(BARS)]
    if into < HOUR / 2:
        day = int(row["first"]) - row["day_part"] + sum(bars)
        hour = bars[-2] - row["hour_part"] + bars[-1]
    else:
        day = row["day_part"] + sum(bars)
        hour = row["hour_part"] + bars[-1]
    last_webhook = row["last_webhook"]
    return _Counts(
        bars=bars,
        day=day,
        hour=hour + row["later"],
        failed=row["failed"],
        dead=row["dead"],
        last_webhook=None if last_webhook is None else float(last_webhook),
    )


def _waiting(tx: Tx) -> dict[str, tuple[int, float | None]]:
    """Per connection: how many items wait (pending or being processed) and the oldest's
    arrival. Grouped in the order of the (status, error_cause, connection_id, received_at)
    index, so the database reads that index alone without sorting; the few groups are summed
    here. A worker that keeps up leaves few to read."""
    found: dict[str, tuple[int, float | None]] = {}
    rows = tx.execute(_WAITING)
    for _, connection_id, n, oldest in rows:
        count, first = found.get(connection_id, (0, None))
        first = oldest if first is None else first if oldest is None else min(first, oldest)
        found[connection_id] = (count + int(n), first)
    return found


# The statements of every refresh, built once (building one again, and its cache key, cost
# about as much as SQLite running it).
_WAITING = (
    sa.select(
        INBOX.c.error_cause,
        INBOX.c.connection_id,
        sa.func.count(),
        sa.func.min(INBOX.c.received_at),
    )
    .where(INBOX.c.status.in_(WAITING))
    .group_by(INBOX.c.status, INBOX.c.error_cause, INBOX.c.connection_id)
)
_LAST_RECONCILE = (
    sa.select(R.c.warning, R.c.finished_at)
    .where(
        R.c.connection_id == sa.bindparam("connection_id"),
        R.c.kind == "reconcile",
        R.c.status == "done",
    )
    .order_by(R.c.seq.desc())
    .limit(1)
)
_LIVE_RUNS = (
    sa.select(R)
    .where(R.c.status == "running", R.c.lease_until > sa.bindparam("now"))
    .order_by(R.c.seq)
)
_REFUSALS = (
    sa.select(
        A.c.action,
        sa.func.count(),
        sa.func.count(sa.distinct(A.c.ip)),
        sa.func.min(A.c.at),
        sa.func.max(A.c.at),
    )
    .where(A.c.action.in_(list(REFUSALS)), A.c.at >= sa.bindparam("since"))
    .group_by(A.c.action)
)


def _silence(tx: Tx, connection_id: str, last_webhook: float | None) -> str | None:
    row = tx.execute(_LAST_RECONCILE, {"connection_id": connection_id}).one_or_none()
    if row is None or not row.warning:
        return None
    if last_webhook is not None and row.finished_at is not None and last_webhook > row.finished_at:
        return None  # a webhook came since: the endpoint works again
    return str(row.warning)


def _running(tx: Tx, now: float) -> dict[str, list[sync.Run]]:
    """Runs in progress (a run whose holder stopped renewing its lease is interrupted)."""
    found: dict[str, list[sync.Run]] = {}
    for row in tx.execute(_LIVE_RUNS, {"now": now}):
        run = sync.Run.model_validate(row._mapping)
        found.setdefault(run.connection_id, []).append(run)
    return found


def bursts(tx: Tx, *, now: float | None = None) -> list[Burst]:
    """Kinds of refusal seen `BURST_MIN` times or more in the last `BURST_WINDOW`."""
    now = time.time() if now is None else now
    rows = tx.execute(_REFUSALS, {"since": now - BURST_WINDOW})
    found = [
        Burst(
            action=r[0],
            label=REFUSALS[r[0]],
            count=r[1],
            addresses=r[2],
            first_at=r[3],
            last_at=r[4],
        )
        for r in rows
        if r[1] >= BURST_MIN
    ]
    return sorted(found, key=lambda b: -b.count)


def build(tx: Tx, vault: Vault, *, now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    waiting = _waiting(tx)
    running = _running(tx, now)
    found = []
    for connection in connections.list_all(tx, vault):
        pending, oldest = waiting.get(connection.id, (0, None))
        counts = _counts(tx, connection.id, now)
        found.append(
            ConnectionOverview(
                connection=connection,
                last_webhook_at=counts.last_webhook,
                events_hour=counts.hour,
                events_day=counts.day,
                bars=[
                    Bar(start=since, count=n)
                    for since, n in zip(_edges(now), counts.bars, strict=True)
                ],
                pending=pending,
                oldest_pending_at=oldest,
                lag=None if oldest is None else max(now - oldest, 0.0),
                failed=counts.failed,
                dead=counts.dead,
                running=running.get(connection.id, []),
                silence=_silence(tx, connection.id, counts.last_webhook),
            )
        )
    return Overview(at=now, connections=found, bursts=bursts(tx, now=now))


class TimelineEntry(BaseModel):
    """One line of a connection's timeline: a sync run or an audit entry, with who did it."""

    model_config = ConfigDict(frozen=True)

    at: Timestamp
    kind: str  # "sync" or "audit"
    actor: str | None  # the audit entry's actor (a sync run's asker is in its own entry)
    what: str
    outcome: str
    detail: str | None = None


def timeline(tx: Tx, connection_id: str, *, limit: int = 50) -> list[TimelineEntry]:
    """The latest sync runs and audit entries about one connection, newest first."""
    runs = sync.page_runs(tx, limit=limit, connections=[connection_id]).data
    entries = audit.page(tx, target=connection_id, limit=limit).data
    mixed = [
        TimelineEntry(
            at=run.started_at,
            kind="sync",
            actor=None,
            what=f"{run.kind} of {run.object}: {run.objects} read, {run.enqueued} new",
            outcome=run.status,
            detail=run.error or run.warning,
        )
        for run in runs
    ] + [
        TimelineEntry(
            at=entry.at or 0.0,
            kind="audit",
            actor=entry.actor,
            what=entry.action,
            outcome=entry.outcome,
            detail=", ".join(f"{k}: {v}" for k, v in sorted(entry.details.items())) or None,
        )
        for entry in entries
    ]
    mixed.sort(key=lambda e: e.at, reverse=True)
    return mixed[:limit]
