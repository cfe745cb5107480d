"""Sync: pull from Stripe what webhooks did not deliver, through the inbox like any event.

- **Backfill** pages through a list endpoint (`limit=100`, `starting_after`) and stores every
  object as a synthetic `<object>.synced` event; the flows treat it like an update, older than
  any real event of a later second. Each page commits with the run's checkpoint (the last id),
  so a run stopped by Ctrl-C, a crash or a network error resumes after its last committed page.
  Pages stream (the next one is fetched while this one is written): memory stays flat.
- **Reconciliation** walks `GET /v1/events` since a moment and stores every event the inbox
  has not seen (the usual duplicates rule), then warns when the connection got no webhook for a
  long time while Stripe lists activity: the classic silently disabled endpoint.
- Locations have no list to backfill beyond the watcher's own poll: syncing them polls now.
- What the connection's key may not read (a restricted key, see `onboarding.capabilities`) is
  not asked for: the run is recorded `skipped` with the reason, and no job polls it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, computed_field

from snapshots import (
    connections,
    errors,
    ids,
    inbox,
    paging,
    schedule,
    stripe_api,
    times,
    watcher,
)
from snapshots.connections import Connection
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

log = logging.getLogger("snapshots.sync")
R = tables.sync_runs

# What a backfill can list: object name -> (Stripe path, synthetic event type).
LISTS = {
    "customers": ("/v1/customers", "customer.synced"),
    "invoices": ("/v1/invoices", "invoice.synced"),
}
OBJECTS = (*LISTS, "locations")  # contacts first: invoices link to them
FOR_OBJECT = {"customers": "customers", "invoices": "invoices", "locations": "terminal_locations"}
RUN_LEASE = 120.0  # seconds without a committed page after which a run counts as stopped
RECONCILE_OVERLAP = 600.0  # seconds a reconciliation looks back before the last one started
EVENTS_KEPT = 30 * 86400  # Stripe lists events of the last 30 days
UNFINISHED = ("running", "interrupted", "failed")
COMMIT_EVERY = 0.2  # seconds: pages that come faster than this are committed together
COMMIT_MAX = 1000  # objects in one commit at most


class Run(BaseModel):
    """A backfill or reconciliation, with its progress."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    connection_id: str
    kind: str = Field(description="backfill or reconcile")
    object: str = Field(description="customers, invoices, locations or events")
    since: Timestamp | None
    status: str = Field(description="running, done, failed, interrupted or skipped")
    pages: int
    objects: int = Field(description="Objects read from Stripe so far")
    enqueued: int = Field(description="New inbox items (duplicates are not counted)")
    error: str | None
    warning: str | None
    started_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None
    cursor: str | None = Field(None, exclude=True)  # the last object of the last page
    # Objects read by earlier attempts when this one resumed.
    resumed_from: int = Field(0, exclude=True)

    @computed_field(description="Objects read per second")  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float:
        end = self.finished_at or self.updated_at
        return round(self.objects / max(end - self.started_at, 1e-9), 1)


def _run(row: Any, resumed_from: int = 0) -> Run:
    return Run.model_validate({**row._mapping, "resumed_from": resumed_from})


def parse_objects(text: str | None) -> list[str]:
    if text is None:
        return list(OBJECTS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in OBJECTS]
    if unknown or not names:
        raise errors.BadRequest(
            f"--objects: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(OBJECTS)}"
        )
    return list(dict.fromkeys(names))


# Runs: started, resumed, checkpointed, finished.


def _start(
    db: Database, *, connection_id: str, kind: str, obj: str, since: int | None, holder: str
) -> Run:
    """Resume the unfinished run of this kind, object and `since`, or start a new one. A run
    another live process holds is refused."""
    now = time.time()
    with db.write() as tx:
        row = tx.execute(
            sa.select(R)
            .where(
                R.c.connection_id == connection_id,
                R.c.kind == kind,
                R.c.object == obj,
                R.c.status.in_(UNFINISHED),
                R.c.since.is_(None) if since is None else R.c.since == since,
            )
            .order_by(R.c.seq.desc())
            .limit(1)
        ).first()
        if row is not None:
            live = row.status == "running" and (row.lease_until or 0) > now
            if live and row.holder != holder and schedule.holder_alive(row.holder):
                raise errors.Conflict(
                    f"a {kind} of {obj} for {connection_id} is running in {row.holder} "
                    f"({row.objects} objects so far); wait for it, or stop that process "
                    f"(it counts as stopped {int(row.lease_until - now)} s after its last page)"
                )
            tx.execute(
                R.update()
                .where(R.c.id == row.id)
                .values(
                    status="running",
                    holder=holder,
                    lease_until=now + RUN_LEASE,
                    error=None,
                    updated_at=now,
                )
            )
            fresh = tx.execute(sa.select(R).where(R.c.id == row.id)).one()
            return _run(fresh, resumed_from=row.objects)
        values = {
            "id": ids.ordered("sync_"),  # its events' ids sort after an earlier run's
            "connection_id": connection_id,
            "kind": kind,
            "object": obj,
            "since": since,
            "status": "running",
            "holder": holder,
            "lease_until": now + RUN_LEASE,
            "started_at": now,
            "updated_at": now,
        }
        tx.execute(R.insert().values(**values))
        return _run(tx.execute(sa.select(R).where(R.c.id == values["id"])).one())


def _checkpoint(
    tx: Tx, run: Run, *, cursor: str | None, pages: int, objects: int, enqueued: int
) -> Run:
    now = time.time()
    values = {
        "cursor": cursor,
        "pages": run.pages + pages,
        "objects": run.objects + objects,
        "enqueued": run.enqueued + enqueued,
        "lease_until": now + RUN_LEASE,
        "updated_at": now,
    }
    tx.execute(R.update().where(R.c.id == run.id).values(**values))
    return run.model_copy(
        update={
            "cursor": cursor,
            "pages": run.pages + pages,
            "objects": run.objects + objects,
            "enqueued": run.enqueued + enqueued,
            "updated_at": now,
        }
    )


def _end(db: Database, run: Run, status: str, *, error: str | None = None) -> Run:
    now = time.time()
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "holder": None,
        "lease_until": None,
        "updated_at": now,
    }
    if status == "done":
        values["finished_at"] = now
    with db.write() as tx:
        tx.execute(R.update().where(R.c.id == run.id).values(**values))
        return _run(tx.execute(sa.select(R).where(R.c.id == run.id)).one(), run.resumed_from)


def _skipped(
    db: Database, connection: Connection, *, kind: str, obj: str, since: int | None, reason: str
) -> Run:
    """A run that did not ask Stripe: the key may not read `obj` (`reason` says so)."""
    now = time.time()
    values = {
        "id": ids.ordered("sync_"),
        "connection_id": connection.id,
        "kind": kind,
        "object": obj,
        "since": since,
        "status": "skipped",
        "warning": reason,
        "started_at": now,
        "updated_at": now,
        "finished_at": now,
    }
    with db.write() as tx:
        tx.execute(R.insert().values(**values))
        return _run(tx.execute(sa.select(R).where(R.c.id == values["id"])).one())


def _set_warning(db: Database, run: Run, warning: str) -> None:
    with db.write() as tx:
        tx.execute(R.update().where(R.c.id == run.id).values(warning=warning))


Progress = Callable[[Run], None]
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _prefetched(pages: Iterator[stripe_api.Page]) -> Iterator[stripe_api.Page]:
    """The same pages, the next one fetched on a thread while the caller stores this one
    (at most two pages in memory). A fetch error is raised where the page would have been."""
    box: queue.Queue[tuple[stripe_api.Page | None, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        box.put((page, None), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((None, None))
        except BaseException as exc:
            box.put((None, exc))

    thread = threading.Thread(target=fetch, name="sync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            page, error = box.get()
            if error is not None:
                raise error
            if page is None:
                return
            yield page
    finally:
        stop.set()


def _run_pages(
    db: Database,
    run: Run,
    pages: Iterator[stripe_api.Page],
    to_arrivals: Callable[[stripe_api.Page], list[inbox.Arrival]],
    progress: Progress | None,
) -> Run:
    """Store the pages' arrivals with the run's checkpoint, one transaction per page, or per
    few pages when they come faster than `COMMIT_EVERY` (a local server)."""
    batch: list[inbox.Arrival] = []
    objects = pages_read = 0
    cursor = run.cursor
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal run, batch, objects, pages_read, last_commit
        with db.write() as tx:
            new = inbox.add_new(tx, batch)
            run = _checkpoint(
                tx, run, cursor=cursor, pages=pages_read, objects=objects, enqueued=new
            )
        batch, objects, pages_read, last_commit = [], 0, 0, time.monotonic()
        if progress is not None:
            progress(run)

    try:
        for page in _prefetched(pages):
            if not page.data:
                continue
            batch.extend(to_arrivals(page))
            objects += len(page.data)
            pages_read += 1
            cursor = page.data[-1]["id"]
            if objects >= COMMIT_MAX or time.monotonic() - last_commit >= COMMIT_EVERY:
                commit()
        if pages_read:
            commit()
    except BaseException as exc:
        if pages_read:  # keep the pages read so far: a resumed run starts after them
            with contextlib.suppress(Exception):
                commit()
        if isinstance(exc, KeyboardInterrupt):
            _end(db, run, "interrupted", error="interrupted (Ctrl-C); run sync again to resume")
        elif isinstance(exc, errors.SnapshotsError):
            _end(db, run, "failed", error=errors.describe(exc))
        else:
            _end(db, run, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return _end(db, run, "done")


def backfill(
    db: Database,
    client: stripe_api.Stripe,
    connection: Connection,
    registry: inbox.Wants,
    *,
    obj: str,
    since: int | None = None,
    holder: str | None = None,
    progress: Progress | None = None,
) -> Run:
    """Backfill one object type (see the module docstring); returns the finished run."""
    reason = connection.off(FOR_OBJECT[obj])
    if reason:
        return _skipped(db, connection, kind="backfill", obj=obj, since=since, reason=reason)
    if obj == "locations":
        return _poll_locations(db, client, connection, registry, holder=holder, progress=progress)
    path, event_type = LISTS[obj]
    run = _start(
        db,
        connection_id=connection.id,
        kind="backfill",
        obj=obj,
        since=since,
        holder=holder or schedule.holder_name(),
    )
    wanted = registry.wants(event_type)
    prefix = f"evt_snp_{run.id.removeprefix('sync_')}_"
    params: dict[str, Any] = {} if since is None else {"created": {"gte": since}}

    def to_arrivals(page: stripe_api.Page) -> list[inbox.Arrival]:
        read_at = int(time.time())
        arrivals = []
        for obj_, text in zip(page.data, page.raw, strict=True):
            event = {
                "id": prefix + obj_["id"],
                "object": "event",
                "api_version": connection.api_version,
                "created": read_at,
                "livemode": bool(obj_.get("livemode", connection.livemode)),
                "pending_webhooks": 0,
                "request": {"id": None, "idempotency_key": None},
                "type": event_type,
            }
            # The object's text exactly as Stripe sent it, inside a Stripe-shaped envelope.
            payload = f'{_encode(event)[:-1]},"data":{{"object":{text}}}}}'.encode()
            arrivals.append(inbox.Arrival(connection.id, event, payload, "sync", wanted))
        return arrivals

    pages = client.pages(f"listing {obj}", path, starting_after=run.cursor, **params)
    return _run_pages(db, run, pages, to_arrivals, progress)


def _poll_locations(
    db: Database,
    client: stripe_api.Stripe,
    connection: Connection,
    registry: inbox.Wants,
    *,
    holder: str | None,
    progress: Progress | None,
) -> Run:
    """`sync --objects locations`: a watcher poll now, under the watcher's own schedule lease
    (waiting while another process polls), recorded as a run."""
    holder = holder or schedule.holder_name()
    name = watcher_job_name(connection.id)
    deadline = time.monotonic() + schedule.LEASE
    while not schedule.claim(db, name, holder=holder, force=True):
        if time.monotonic() > deadline:
            raise errors.Conflict(f"another process has been polling {connection.id}'s locations")
        time.sleep(0.5)
    error = None
    try:
        run = _start(
            db,
            connection_id=connection.id,
            kind="backfill",
            obj="locations",
            since=None,
            holder=holder,
        )
        try:
            result = watcher.poll(db, client, connection, registry)
            with db.write() as tx:
                run = _checkpoint(
                    tx, run, cursor=None, pages=1, objects=result.seen, enqueued=result.changes
                )
        except BaseException as exc:
            error = errors.describe(exc) if isinstance(exc, Exception) else "interrupted"
            status = "failed" if isinstance(exc, Exception) else "interrupted"
            _end(db, run, status, error=error)
            raise
        if progress is not None:
            progress(run)
        return _end(db, run, "done")
    finally:  # the scheduled polls keep their own rhythm
        schedule.release(db, name, holder=holder, next_run_at=None, error=error)


def watcher_job_name(connection_id: str) -> str:
    return f"watcher:{connection_id}"


def reconcile_job_name(connection_id: str) -> str:
    return f"reconcile:{connection_id}"


def default_since(db: Database, connection_id: str, settings: Settings) -> int:
    """Where a reconciliation starts: a little before the last finished one started, or
    `reconcile_window` back on the first; never beyond the 30 days Stripe keeps."""
    now = time.time()
    with db.read() as tx:
        last = tx.execute(
            sa.select(sa.func.max(R.c.started_at)).where(
                R.c.connection_id == connection_id, R.c.kind == "reconcile", R.c.status == "done"
            )
        ).scalar_one_or_none()
    start = now - settings.reconcile_window if last is None else last - RECONCILE_OVERLAP
    return int(max(start, now - EVENTS_KEPT))


def last_webhook_at(db: Database, connection_id: str) -> float | None:
    t = tables.inbox_items
    with db.read() as tx:
        found = tx.execute(
            sa.select(t.c.received_at)
            .where(t.c.connection_id == connection_id, t.c.source == "webhook")
            .order_by(t.c.received_at.desc())
            .limit(1)
        ).scalar_one_or_none()
    return None if found is None else float(found)


def reconcile(
    db: Database,
    client: stripe_api.Stripe,
    connection: Connection,
    registry: inbox.Wants,
    settings: Settings,
    *,
    since: int | None = None,
    holder: str | None = None,
    progress: Progress | None = None,
) -> Run:
    """Store every event Stripe lists since `since` that the inbox has not seen."""
    since = default_since(db, connection.id, settings) if since is None else since
    since = max(since, int(time.time()) - EVENTS_KEPT)
    reason = connection.off("events")
    if reason:
        return _skipped(db, connection, kind="reconcile", obj="events", since=since, reason=reason)
    run = _start(
        db,
        connection_id=connection.id,
        kind="reconcile",
        obj="events",
        since=since,
        holder=holder or schedule.holder_name(),
    )
    newest = [0]

    def to_arrivals(page: stripe_api.Page) -> list[inbox.Arrival]:
        arrivals = []
        for event, text in zip(page.data, page.raw, strict=True):
            created = int(event.get("created") or 0)
            if created < since:  # a server that ignores `created[gte]` (localstripe)
                continue
            newest[0] = max(newest[0], created)
            wanted = registry.wants(str(event.get("type")))
            arrivals.append(inbox.Arrival(connection.id, event, text.encode(), "reconcile", wanted))
        return arrivals

    pages = client.pages(
        "listing events", "/v1/events", starting_after=run.cursor, created={"gte": since}
    )
    run = _run_pages(db, run, pages, to_arrivals, progress)
    warning = silence_warning(
        last_webhook_at(db, connection.id),
        newest[0] or None,
        missed=run.enqueued,
        threshold=settings.webhook_silence,
        connection_id=connection.id,
    )
    if warning:
        _set_warning(db, run, warning)
        run = run.model_copy(update={"warning": warning})
    return run


def silence_warning(
    last_webhook: float | None,
    newest_event: int | None,
    *,
    missed: int,
    threshold: float,
    connection_id: str,
    now: float | None = None,
) -> str | None:
    """A warning when Stripe lists events that never came as webhooks while the endpoint has
    been silent for longer than `threshold`: it is probably disabled or unreachable."""
    now = time.time() if now is None else now
    if not missed or newest_event is None:
        return None
    if last_webhook is not None and now - last_webhook <= threshold:
        return None
    if last_webhook is not None and newest_event <= last_webhook:
        return None
    when = "ever" if last_webhook is None else f"since {times.iso(last_webhook)}"
    return (
        f"{connection_id}: no webhook received {when}, but Stripe lists {missed} events that "
        f"never arrived (newest {times.iso(newest_event)}); check that the webhook endpoint is "
        "enabled in the Stripe dashboard and reaches this server"
    )


def last_backfill(tx: Tx, connection_id: str) -> Run | None:
    """The newest finished backfill of a connection, if one ran (`init` offers the first)."""
    row = tx.execute(
        sa.select(R)
        .where(R.c.connection_id == connection_id, R.c.kind == "backfill", R.c.status == "done")
        .order_by(R.c.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else _run(row)


def get_run(tx: Tx, run_id: str, *, connections: Sequence[str] | None = None) -> Run:
    row = None
    if ids.plausible(run_id):
        mine = paging.within(R.c.connection_id, connections)
        row = tx.execute(sa.select(R).where(R.c.id == run_id, *mine)).one_or_none()
    if row is None:
        raise errors.NotFound(f"no sync run {run_id}")
    return _run(row)


def page_runs(
    tx: Tx,
    *,
    limit: int = 20,
    starting_after: str | None = None,
    connections: Sequence[str] | None = None,
) -> paging.Page[Run]:
    return paging.paginate(
        tx,
        R,
        "sync run",
        _run,
        limit=limit,
        starting_after=starting_after,
        where=paging.within(R.c.connection_id, connections),
    )


def scheduled_jobs(
    db: Database, stripe: connections.Cache, registry: inbox.Wants, settings: Settings
) -> Callable[[], list[schedule.Job]]:
    """The periodic jobs of every connection: its location watcher and its reconciliation,
    each unless the connection's key may not read what it needs; and the runs asked for in the
    console (`sync_requests`)."""
    from snapshots import sync_requests  # it builds on this module

    holder = schedule.holder_name()

    def requested() -> object:
        return sync_requests.run_next(db, stripe, registry, settings, holder=holder)

    def jobs() -> list[schedule.Job]:
        found = []
        if sync_requests.waiting(db):  # a read; the job (and its schedule row) only then
            found.append(schedule.Job(sync_requests.JOB, sync_requests.EVERY, requested))
        for connection in stripe.all():

            def poll(c: Connection = connection) -> object:
                return watcher.poll(db, stripe.client(c), c, registry)

            def catch_up(c: Connection = connection) -> object:
                run = reconcile(db, stripe.client(c), c, registry, settings)
                if run.warning:
                    log.warning(run.warning)
                return run

            if not connection.off("terminal_locations"):
                found.append(
                    schedule.Job(
                        watcher_job_name(connection.id), settings.location_poll_interval, poll
                    )
                )
            if not connection.off("events"):
                found.append(
                    schedule.Job(
                        reconcile_job_name(connection.id), settings.reconcile_interval, catch_up
                    )
                )
        return found

    return jobs
