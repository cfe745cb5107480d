"""Periodic jobs shared by every process: the location watcher and reconciliation.

Each job has a row in `schedules` (`watcher:conn_...`). A process runs a job only after it
claims that row in one conditional UPDATE: the job is due and nobody else holds a live lease. So
with many `serve` and `worker` processes on PostgreSQL, a connection is polled by one of them at
a time, at the interval, and a holder that dies frees the job when its lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from snapshots import errors, metrics
from snapshots.store import tables
from snapshots.store.db import Database

log = logging.getLogger("snapshots.schedule")
T = tables.schedules
LEASE = 600.0  # seconds a job may run before another process may take it over
AUTH_PAUSE = 3600.0  # a job whose Stripe key was refused waits at least this long


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(holder: str) -> bool:
    """False when `holder` (see `holder_name`) is a process of this host that is gone (a
    crash): its lease need not run out. A holder on another host may be alive."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def claim(db: Database, name: str, *, holder: str, force: bool = False) -> bool:
    """Take the job `name` if it is due (or `force`) and nobody else holds it."""
    now = time.time()
    if not force:  # a read first: most ticks find nothing due, and take no write lock
        with db.read() as tx:
            row = tx.execute(sa.select(T.c.next_run_at).where(T.c.name == name)).first()
        if row is not None and row.next_run_at > now:
            return False
    with db.write() as tx:
        insert = postgresql.insert(T) if tx.dialect.name == "postgresql" else sqlite.insert(T)
        tx.execute(insert.values(name=name, next_run_at=now).on_conflict_do_nothing())
        free = sa.or_(T.c.lease_until.is_(None), T.c.lease_until < now, T.c.holder == holder)
        due = sa.true() if force else T.c.next_run_at <= now
        claimed = tx.execute(
            T.update()
            .where(T.c.name == name, free, due)
            .values(holder=holder, lease_until=now + LEASE)
        )
        return claimed.rowcount == 1


def release(
    db: Database, name: str, *, holder: str, next_run_at: float | None, error: str | None = None
) -> None:
    """Let go of a job; it is due again at `next_run_at` (None: when it was due anyway)."""
    values: dict[str, object] = {
        "holder": None,
        "lease_until": None,
        "last_run_at": time.time(),
        "last_error": error,
    }
    if next_run_at is not None:
        values["next_run_at"] = next_run_at
    with db.write() as tx:
        tx.execute(T.update().where(T.c.name == name, T.c.holder == holder).values(**values))


@dataclass(frozen=True)
class Job:
    name: str
    interval: float
    run: Callable[[], object]


def run_job(db: Database, job: Job, *, holder: str, force: bool = False) -> bool:
    """Run `job` if this process may (see `claim`); True when it ran. Its errors are logged
    and kept on the schedule row; a refused Stripe key pauses it for `AUTH_PAUSE`."""
    if not claim(db, job.name, holder=holder, force=force):
        return False
    error = None
    delay = job.interval
    try:
        job.run()
    except errors.SnapshotsError as exc:
        error = errors.describe(exc)
        if isinstance(exc, errors.StripeAuthError):
            delay = max(delay, AUTH_PAUSE)
        log.warning("%s failed: %s", job.name, error)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.exception("%s failed", job.name)
    finally:
        release(db, job.name, holder=holder, next_run_at=time.time() + delay, error=error)
        metrics.job(job.name, "ok" if error is None else "failed")
    return True


class Scheduler:
    """Runs the periodic jobs of every connection, on a thread of a `serve` or `worker` process.

    `jobs` is asked for the current jobs at every tick (connections come and go)."""

    TICK = 1.0  # seconds between looks at what is due

    def __init__(
        self,
        db: Database,
        jobs: Callable[[], list[Job]],
        *,
        holder: str,
        ready: Callable[[], bool] = lambda: True,
        tasks: tuple[Callable[[], object], ...] = (),
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._holder = holder
        self._ready = ready  # False while the process has a fault: no job would succeed
        self._tasks = tasks  # run every tick; each looks cheaply whether it has work

    def tick(self) -> int:
        if not self._ready():
            return 0
        for task in self._tasks:
            task()
        ran = 0
        for job in self._jobs():
            ran += run_job(self._db, job, holder=self._holder)
        return ran

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.TICK):
            try:
                self.tick()
            except Exception:  # the database may be away for a moment: try again later
                log.exception("the scheduler could not look at its jobs")
                stop.wait(10 * self.TICK)
