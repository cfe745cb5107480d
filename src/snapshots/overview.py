"""The overview: each connection at a glance (what arrives, what waits, what failed, what is
syncing, whether Stripe's webhooks went silent), and the bursts of refusals in the audit log.

Counts come from the inbox by `received_at` (what arrived in the last hour and 24 hours, and
24 hourly bars); the silence warning is the newest reconciliation's, while no webhook has come
since it; a burst is `BURST_MIN` or more refusals of one kind within `BURST_WINDOW`.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, computed_field

from snapshots import audit, connections, sync
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
    failed: int
    dead: int
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


def _bars(tx: Tx, connection_id: str, now: float) -> tuple[list[Bar], int]:
    """One count per hour: each a range of the (connection, received_at) index, which SQLite
    counts several times faster than one GROUP BY computing every row's hour; and the events
    of the last 24 hours: the bars plus the part of the hour before the first bar that is
    within them (each index entry of the day is counted once, not twice)."""
    start = (int(now) // HOUR - (BARS - 1)) * HOUR
    edges = [start + i * HOUR for i in range(BARS)]
    bars = [Bar(start=e, count=_count(tx, connection_id, e, e + HOUR)) for e in edges]
    day = _count(tx, connection_id, now - BARS * HOUR, start) + sum(b.count for b in bars)
    return bars, day


# Built once: the overview runs it 26 times per connection every refresh.
_COUNT = sa.select(sa.func.count()).where(
    INBOX.c.connection_id == sa.bindparam("connection_id"),
    INBOX.c.received_at >= sa.bindparam("since"),
    INBOX.c.received_at < sa.bindparam("until"),
)


def _count(tx: Tx, connection_id: str, since: float, until: float = float("inf")) -> int:
    found = tx.execute(_COUNT, {"connection_id": connection_id, "since": since, "until": until})
    return int(found.scalar_one())


def _last_webhook(tx: Tx, connection_id: str) -> float | None:
    found = tx.execute(
        sa.select(INBOX.c.received_at)
        .where(INBOX.c.connection_id == connection_id, INBOX.c.source == "webhook")
        .order_by(INBOX.c.received_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if found is None else float(found)


def _statuses(tx: Tx) -> dict[tuple[str, str], tuple[int, float | None]]:
    """Per (connection, status): how many items and the oldest's arrival. Grouped in the order
    of the (status, error_cause, connection_id, received_at) index, so the database reads that
    index alone without sorting; the few groups (one per cause) are summed here."""
    rows = tx.execute(
        sa.select(
            INBOX.c.status,
            INBOX.c.error_cause,
            INBOX.c.connection_id,
            sa.func.count(),
            sa.func.min(INBOX.c.received_at),
        )
        .where(INBOX.c.status.in_([*WAITING, "failed", "dead"]))
        .group_by(INBOX.c.status, INBOX.c.error_cause, INBOX.c.connection_id)
    )
    found: dict[tuple[str, str], tuple[int, float | None]] = {}
    for status, _, connection_id, n, oldest in rows:
        count, first = found.get((connection_id, status), (0, None))
        first = oldest if first is None else first if oldest is None else min(first, oldest)
        found[(connection_id, status)] = (count + int(n), first)
    return found


def _silence(tx: Tx, connection_id: str, last_webhook: float | None) -> str | None:
    row = tx.execute(
        sa.select(R.c.warning, R.c.finished_at)
        .where(R.c.connection_id == connection_id, R.c.kind == "reconcile", R.c.status == "done")
        .order_by(R.c.seq.desc())
        .limit(1)
    ).one_or_none()
    if row is None or not row.warning:
        return None
    if last_webhook is not None and row.finished_at is not None and last_webhook > row.finished_at:
        return None  # a webhook came since: the endpoint works again
    return str(row.warning)


def _running(tx: Tx, now: float) -> dict[str, list[sync.Run]]:
    """Runs in progress (a run whose holder stopped renewing its lease is interrupted)."""
    found: dict[str, list[sync.Run]] = {}
    live = sa.select(R).where(R.c.status == "running", R.c.lease_until > now).order_by(R.c.seq)
    for row in tx.execute(live):
        run = sync.Run.model_validate(row._mapping)
        found.setdefault(run.connection_id, []).append(run)
    return found


def bursts(tx: Tx, *, now: float | None = None) -> list[Burst]:
    """Kinds of refusal seen `BURST_MIN` times or more in the last `BURST_WINDOW`."""
    now = time.time() if now is None else now
    rows = tx.execute(
        sa.select(
            A.c.action,
            sa.func.count(),
            sa.func.count(sa.distinct(A.c.ip)),
            sa.func.min(A.c.at),
            sa.func.max(A.c.at),
        )
        .where(A.c.action.in_(list(REFUSALS)), A.c.at >= now - BURST_WINDOW)
        .group_by(A.c.action)
    )
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
    statuses = _statuses(tx)
    running = _running(tx, now)
    found = []
    for connection in connections.list_all(tx, vault):
        waiting = [statuses.get((connection.id, s), (0, None)) for s in WAITING]
        oldest = min((at for _, at in waiting if at is not None), default=None)
        last_webhook = _last_webhook(tx, connection.id)
        bars, day = _bars(tx, connection.id, now)
        found.append(
            ConnectionOverview(
                connection=connection,
                last_webhook_at=last_webhook,
                events_hour=_count(tx, connection.id, now - HOUR),
                events_day=day,
                bars=bars,
                pending=sum(n for n, _ in waiting),
                oldest_pending_at=oldest,
                lag=None if oldest is None else max(now - oldest, 0.0),
                failed=statuses.get((connection.id, "failed"), (0, None))[0],
                dead=statuses.get((connection.id, "dead"), (0, None))[0],
                running=running.get(connection.id, []),
                silence=_silence(tx, connection.id, last_webhook),
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
