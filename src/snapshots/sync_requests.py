"""Sync runs asked for from the console: a backfill (objects, since) or a reconciliation, or
the resumption of an interrupted run. The console only writes the request; a worker (the
scheduler of `snapshots worker`, or of `serve`'s embedded worker) claims the oldest one in one
conditional UPDATE and runs it with the same functions as `snapshots sync`, so the console
process never talks to Stripe and a request survives a restart of whatever serves the page.
Resuming needs nothing special: a backfill of the same kind, object and `since` resumes the
unfinished run (`sync._start`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, computed_field

from snapshots import audit, connections, errors, ids, inbox, schedule, sync
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

log = logging.getLogger("snapshots.sync")
T = tables.sync_requests
KINDS = ("backfill", "reconcile")
OPEN = ("requested", "running")
JOB = "sync-requests"  # the scheduler's job that runs them
EVERY = 2.0  # seconds between looks for a request


class SyncRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    connection_id: str
    kind: str
    objects: list[str]
    since: Timestamp | None
    status: str
    actor: str
    error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


def _model(row: Any) -> SyncRequest:
    return SyncRequest.model_validate(row._mapping)


def ask(
    tx: Tx,
    *,
    connection_id: str,
    kind: str,
    objects: list[str] | None = None,
    since: int | None = None,
    actor: str,
) -> SyncRequest:
    """Ask for a run; the next worker tick starts it. A reconciliation takes no objects."""
    if kind not in KINDS:
        raise errors.BadRequest(f"unknown kind {kind!r}: backfill or reconcile")
    found = tx.execute(
        sa.select(tables.connections.c.id).where(tables.connections.c.id == connection_id)
    ).first()
    if found is None:
        raise errors.BadRequest(f"no connection {connection_id}", code="unknown_connection")
    chosen: list[str] = []
    if kind == "backfill":
        chosen = sync.parse_objects(",".join(objects)) if objects else list(sync.OBJECTS)
    if since is not None and since > time.time():
        raise errors.BadRequest("`since` is in the future")
    waiting = tx.execute(
        sa.select(T.c.id).where(
            T.c.connection_id == connection_id, T.c.kind == kind, T.c.status.in_(OPEN)
        )
    ).first()
    if waiting is not None:
        raise errors.Conflict(
            f"a {kind} of {connection_id} is already asked for or running ({waiting.id})"
        )
    request_id = ids.ordered("sreq_")
    tx.execute(
        T.insert().values(
            id=request_id,
            connection_id=connection_id,
            kind=kind,
            objects=chosen,
            since=since,
            status="requested",
            actor=actor[:200],
            created_at=time.time(),
        )
    )
    audit.record(
        tx,
        actor=actor,
        action=f"sync.{kind}_requested",
        target=connection_id,
        details={"objects": chosen, "since": since, "request": request_id},
    )
    return _model(tx.execute(sa.select(T).where(T.c.id == request_id)).one())


def resume(tx: Tx, run_id: str, *, actor: str) -> SyncRequest:
    """Ask for an interrupted or failed run to go on where it stopped."""
    run = sync.get_run(tx, run_id)
    lease = tx.execute(
        sa.select(tables.sync_runs.c.lease_until).where(tables.sync_runs.c.id == run.id)
    ).scalar_one()
    state = _state(run.status, lease, time.time())
    if state not in ("interrupted", "failed"):
        raise errors.Conflict(f"sync run {run_id} is {state}: only a stopped run resumes")
    since = None if run.since is None else int(run.since)
    objects = [run.object] if run.kind == "backfill" else None
    return ask(
        tx,
        connection_id=run.connection_id,
        kind=run.kind,
        objects=objects,
        since=since,
        actor=actor,
    )


def open_requests(tx: Tx) -> list[SyncRequest]:
    """Requests waiting or running, oldest first."""
    rows = tx.execute(sa.select(T).where(T.c.status.in_(OPEN)).order_by(T.c.seq))
    return [_model(r) for r in rows]


def waiting(db: Database) -> bool:
    """Is a request waiting, or running in a process that may have died?"""
    with db.read() as tx:
        return (
            tx.execute(sa.select(T.c.id).where(T.c.status.in_(OPEN)).limit(1)).first() is not None
        )


def _claim(db: Database, holder: str) -> SyncRequest | None:
    with db.read() as tx:  # most looks find nothing, and take no write lock
        oldest = tx.execute(
            sa.select(T.c.id).where(T.c.status == "requested").order_by(T.c.seq).limit(1)
        ).first()
        running = tx.execute(sa.select(T.c.id, T.c.holder).where(T.c.status == "running")).all()
    orphans = [r.id for r in running if r.holder and not schedule.holder_alive(r.holder)]
    if orphans:  # their process is gone (a crash): run them again, the runs resume
        with db.write() as tx:
            tx.execute(
                T.update()
                .where(T.c.id.in_(orphans), T.c.status == "running")
                .values(status="requested", holder=None)
            )
        return _claim(db, holder)
    if oldest is None:
        return None
    with db.write() as tx:
        taken = tx.execute(
            T.update()
            .where(T.c.id == oldest.id, T.c.status == "requested")
            .values(status="running", holder=holder, started_at=time.time())
        )
        if taken.rowcount != 1:
            return None  # another process took it
        return _model(tx.execute(sa.select(T).where(T.c.id == oldest.id)).one())


def _finish(db: Database, request: SyncRequest, error: str | None) -> None:
    with db.write() as tx:
        tx.execute(
            T.update()
            .where(T.c.id == request.id)
            .values(
                status="failed" if error else "done",
                error=error,
                finished_at=time.time(),
            )
        )


def run_next(
    db: Database,
    stripe: connections.Cache,
    registry: inbox.Wants,
    settings: Settings,
    *,
    holder: str,
) -> bool:
    """Run the oldest request, if any (True when one ran, whatever its outcome)."""
    request = _claim(db, holder)
    if request is None:
        return False
    connection = stripe.get(request.connection_id)
    error = None
    try:
        if connection is None:
            raise errors.BadRequest(f"connection {request.connection_id} was removed")
        client = stripe.client(connection)
        since = None if request.since is None else int(request.since)
        if request.kind == "reconcile":
            run = sync.reconcile(
                db, client, connection, registry, settings, since=since, holder=holder
            )
            if run.warning:
                log.warning(run.warning)
        for obj in request.objects:
            run = sync.backfill(
                db, client, connection, registry, obj=obj, since=since, holder=holder
            )
            if run.status != "done":
                raise errors.RetryLater(run.error or f"the backfill of {obj} is {run.status}")
    except errors.SnapshotsError as exc:
        error = errors.describe(exc)
        log.warning("sync request %s failed: %s", request.id, error)
    except Exception as exc:  # recorded on the request; the scheduler goes on
        error = f"{type(exc).__name__}: {exc}"
        log.exception("sync request %s failed", request.id)
    _finish(db, request, error)
    return True


class Progress(BaseModel):
    """A run as the sync screen shows it: its state, and how far it may have to go."""

    model_config = ConfigDict(frozen=True)

    run: sync.Run
    state: str  # the run's status, or `interrupted` when its holder stopped renewing the lease
    expected: int | None  # objects the last finished run of the same kind read (an estimate)
    eta: float | None  # seconds left at the current rate, when `expected` says

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resumable(self) -> bool:
        return self.state in ("interrupted", "failed")


def progress(tx: Tx, *, limit: int = 30, now: float | None = None) -> list[Progress]:
    """The newest runs. Stripe's lists do not say how many objects there are: the estimate of
    what is left is the size of the last finished run of the same connection, kind and object."""
    now = time.time() if now is None else now
    R = tables.sync_runs
    rows = tx.execute(sa.select(R).order_by(R.c.seq.desc()).limit(limit)).all()
    sizes = {
        (r.connection_id, r.kind, r.object): int(r.objects)
        for r in tx.execute(
            sa.select(R.c.connection_id, R.c.kind, R.c.object, R.c.objects)
            .where(R.c.status == "done")
            .order_by(R.c.seq)
        )
    }
    found = []
    for row in rows:
        run = sync.Run.model_validate(row._mapping)
        state = _state(run.status, row.lease_until, now)
        expected = sizes.get((run.connection_id, run.kind, run.object))
        eta = None
        if state == "running" and expected and expected > run.objects and run.rate > 0:
            eta = (expected - run.objects) / run.rate
        found.append(Progress(run=run, state=state, expected=expected, eta=eta))
    return found


def _state(status: str, lease_until: float | None, now: float) -> str:
    """A run's status, `interrupted` when it says running but its holder stopped renewing."""
    return "interrupted" if status == "running" and (lease_until or 0) <= now else status
