"""Bulk replay: queue again every `dead` (or `failed`) inbox item a filter matches.

A replay is a job (a row of `replay_jobs`) made in one transaction with its audit entry: the
filter, how many items matched and their most common errors. It re-queues at most `CAP` items
(the oldest first; the rest wait for another run) and never an item that arrived after it was
made, in batches that each commit with the job's cursor, so a job cut short (Ctrl-C, a crash)
resumes where it stopped: the CLI runs its job at once; a job made through the API is run by
a worker's scheduler (or by any process once the holder's lease ran out).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, computed_field

from snapshots import audit, errors, events, ids, inbox, revisions
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

log = logging.getLogger("snapshots.replay")
T = tables.inbox_items
J = tables.replay_jobs
STATUSES = ("dead", "failed")  # what a bulk replay takes
CAP = 50_000  # items one run re-queues at most
BATCH = 500  # items re-queued per commit
LEASE = 60.0  # seconds a running job is held without progress before another may take it
TOP_ERRORS = 5
ERROR_TEXT = 300  # characters of an error that are grouped on


class Filter(events.Search):
    """Which items (an `events.Search`) whose status is `dead` (the default) or `failed`."""

    status: str = "dead"

    def model_post_init(self, context: Any) -> None:
        if self.status not in STATUSES:
            raise errors.BadRequest(
                f"a bulk replay takes items whose status is {' or '.join(STATUSES)}, not "
                f"{self.status!r}",
                code="parameter_invalid",
            )
        super().model_post_init(context)


class ErrorCount(BaseModel):
    error: str
    count: int


class Preview(BaseModel):
    """What a bulk replay would take (a dry run)."""

    filter: Filter
    matched: int = Field(description="Items the filter matches now")
    quota: int = Field(description="How many a run would queue again (at most 50,000)")
    top_errors: list[ErrorCount]
    flows_version: int = Field(description="The flows version the worker applies them with")
    dry_run: bool = True

    @computed_field  # type: ignore[prop-decorator]
    @property
    def capped(self) -> bool:
        return self.matched > self.quota


def _counting(where: list[sa.ColumnElement[bool]], limit: int | None) -> sa.Select[Any]:
    """How many items `where` finds (up to `limit`, when given)."""
    matching = sa.select(sa.literal(1)).where(*where)
    if limit is not None:
        matching = matching.limit(limit)
    return sa.select(sa.func.count()).select_from(matching.subquery())


@functools.lru_cache(maxsize=64)
def _counting_of(key: events.SearchKey, limit: int) -> sa.Select[Any]:
    """`_counting` of the filter `key` stands for, built once per filter and limit (a
    function of them alone; building it again cost as much as counting)."""
    return _counting(Filter.of_key(key).where(), limit)


def preview(tx: Tx, flt: Filter, *, cap: int = CAP, top_errors: bool = True) -> Preview:
    """How many items `flt` matches now, and their most common errors. With `top_errors`
    False (the console's look at a list), it neither reads every matching item's error nor
    counts past `cap + 1`: `matched` above `cap` then means "more than `cap`". Nothing
    changes."""
    rows: Sequence[Any] = []
    if top_errors:
        where = flt.where()
        matched = int(tx.execute(_counting(where, None)).scalar_one())
        error = sa.func.substr(sa.func.coalesce(T.c.last_error, ""), 1, ERROR_TEXT).label("error")
        rows = tx.execute(
            sa.select(error, sa.func.count().label("n"))
            .where(*where)
            .group_by(error)
            .order_by(sa.desc("n"), error)
            .limit(TOP_ERRORS)
        ).all()
    else:  # the console's look at a list: the kept counts, or the same statement each time
        kept = events.failing(tx, flt)
        matched = (
            int(tx.execute(_counting_of(flt.key(), cap + 1)).scalar_one()) if kept is None else kept
        )
    return Preview(
        filter=flt,
        matched=matched,
        quota=min(matched, cap),
        top_errors=[ErrorCount(error=str(r.error), count=int(r.n)) for r in rows],
        flows_version=revisions.current_version(tx),
    )


class Job(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    object: Literal["replay_job"] = "replay_job"
    status: str = Field(description="queued, running, done or failed")
    filter: Filter
    matched: int = Field(description="Items the filter matched when the job was made")
    quota: int = Field(description="How many it queues again (the oldest, at most 50,000)")
    requeued: int = Field(description="Queued again so far")
    top_errors: list[ErrorCount]
    actor: str
    error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None

    @computed_field(description="More matched than one run queues: run it again")  # type: ignore[prop-decorator]
    @property
    def capped(self) -> bool:
        return self.matched > self.quota


def _job(row: Any) -> Job:
    return Job.model_validate(
        {
            **row._mapping,
            "top_errors": [{"error": e, "count": n} for e, n in row.top_errors],
        }
    )


def start(tx: Tx, flt: Filter, *, actor: str, cap: int = CAP) -> Job:
    """Make a job for the items `flt` matches now, with its audit entry (the filter and the
    count); a worker or `run` does the re-queueing."""
    found = preview(tx, flt, cap=cap)
    newest = tx.execute(sa.select(sa.func.max(T.c.id)).where(*flt.where())).scalar_one()
    now = time.time()
    row = {
        "id": ids.new("rpl_", 16),
        "filter": flt.model_dump(),  # the time in unix seconds
        "status": "queued" if found.quota else "done",
        "matched": found.matched,
        "quota": found.quota,
        "requeued": 0,
        "last_item_id": 0,
        "max_item_id": int(newest or 0),
        "top_errors": [[e.error, e.count] for e in found.top_errors],
        "actor": actor,
        "created_at": now,
        "updated_at": now,
        "finished_at": None if found.quota else now,
    }
    tx.execute(J.insert().values(**row))
    audit.record(
        tx,
        actor=actor,
        action="events.replayed",
        target=str(row["id"]),
        details={
            "filter": flt.model_dump(mode="json"),
            "matched": found.matched,
            "count": found.quota,
        },
    )
    return get(tx, str(row["id"]))


def get(tx: Tx, job_id: str, *, connections: Sequence[str] | None = None) -> Job:
    """A job; with `connections` (an API key limited to them), only a job that took items of
    those connections alone."""
    row = None
    if ids.plausible(job_id):
        row = tx.execute(sa.select(J).where(J.c.id == job_id)).first()
    job = None if row is None else _job(row)
    if job is not None and connections is not None:
        took = job.filter.connections
        if took is None or not set(took) <= set(connections):
            job = None
    if job is None:
        raise errors.NotFound(f"no replay job {job_id}")
    return job


def _claim(tx: Tx, job_id: str, *, holder: str, now: float) -> bool:
    free = sa.or_(
        J.c.status == "queued",
        sa.and_(J.c.status == "running", sa.or_(J.c.lease_until < now, J.c.holder == holder)),
    )
    taken = tx.execute(
        J.update()
        .where(J.c.id == job_id, free)
        .values(status="running", holder=holder, lease_until=now + LEASE, updated_at=now)
    )
    return taken.rowcount == 1


def run(
    db: Database,
    job_id: str,
    *,
    holder: str,
    progress: Callable[[Job], object] | None = None,
) -> Job:
    """Re-queue the job's items batch by batch (each commits with the job's cursor); returns
    the job as it ended. A job another live process holds is left to it (and returned)."""
    with db.write() as tx:
        if not _claim(tx, job_id, holder=holder, now=time.time()):
            return get(tx, job_id)
    while True:
        with db.write() as tx:
            row = tx.execute(sa.select(J).where(J.c.id == job_id)).one()
            if row.holder != holder:
                return _job(row)  # taken over after our lease ran out
            job = _job(row)
            left = row.quota - row.requeued
            batch = (
                tx.execute(
                    sa.select(T.c.id)
                    .where(
                        *job.filter.where(),
                        T.c.id > row.last_item_id,
                        T.c.id <= row.max_item_id,
                    )
                    .order_by(T.c.id)
                    .limit(min(BATCH, left))
                )
                .scalars()
                .all()
                if left > 0
                else []
            )
            now = time.time()
            if not batch:
                tx.execute(
                    J.update()
                    .where(J.c.id == job_id)
                    .values(
                        status="done",
                        holder=None,
                        lease_until=None,
                        updated_at=now,
                        finished_at=now,
                    )
                )
                job = get(tx, job_id)
            else:
                count = inbox.requeue(tx, list(batch), statuses=(job.filter.status,))
                tx.execute(
                    J.update()
                    .where(J.c.id == job_id)
                    .values(
                        requeued=J.c.requeued + count,
                        last_item_id=batch[-1],
                        lease_until=now + LEASE,
                        updated_at=now,
                    )
                )
                job = get(tx, job_id)
        if progress is not None:
            progress(job)
        if job.status == "done":
            log.info("replay %s: %d item(s) queued again", job.id, job.requeued)
            return job


def run_due(db: Database, *, holder: str) -> Job | None:
    """Run the oldest job waiting for a runner (queued, or whose holder's lease ran out), if
    any; a cheap read first, as a scheduler calls this every tick."""
    now = time.time()
    with db.read() as tx:
        job_id = tx.execute(
            sa.select(J.c.id)
            .where(
                sa.or_(
                    J.c.status == "queued", sa.and_(J.c.status == "running", J.c.lease_until < now)
                )
            )
            .order_by(J.c.seq)
            .limit(1)
        ).scalar_one_or_none()
    if job_id is None:
        return None
    return run(db, job_id, holder=holder)
