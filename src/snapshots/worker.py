"""The worker: claims inbox items under a lease and runs the flows on them.

A batch is claimed in one short transaction, then applied in a second one: an item's record
writes and its `done` mark commit together, so a worker that dies before the commit leaves
nothing half-applied, and its items return to the inbox when the lease runs out. Parsing,
filters and mappings run before that transaction; whole-record upserts are then applied
set-based (`records.batch`: one read per table, decided in memory, multi-row writes), other
actions item by item in their place. An item that fails rolls the batch back; it is marked on
its own and the others are applied again. Before applying, the worker re-checks that it still
holds each item (on PostgreSQL with a row lock), so an item taken over by another worker is
never applied twice.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from snapshots import (
    connections,
    errors,
    flows,
    inbox,
    metrics,
    readiness,
    refetch,
    replay,
    retention,
    retry,
    revisions,
    schedule,
    sync,
    vault,
)
from snapshots import wakeup as wakeup_
from snapshots.flows import Registry
from snapshots.onboarding import health
from snapshots.outbound import delivery, resume
from snapshots.records import batch
from snapshots.settings import Settings
from snapshots.store import dialect, lock, tables
from snapshots.store.db import Database, Tx, json_loads

log = logging.getLogger("snapshots.worker")


SETTLED_BETWEEN_ANALYZE = 10_000  # items a worker settles between two `refresh_statistics`
FIRST_ANALYZE = 1_000  # items it settles before its first
_ANALYZE_LOCK = 0x536E61704E616C79  # PostgreSQL advisory lock: one refresh at a time
# What applying events changes: the inbox (each item stored, claimed, settled) and the records.
CHURNED = (tables.inbox_items, tables.contacts, tables.invoices, tables.locations)


def refresh_statistics(tx: Tx) -> bool:
    """Refresh PostgreSQL's statistics of the tables workers churn (one worker at a time; the
    others skip); True when this call did.

    A worker settles items far faster than autovacuum looks (once a minute at best, after a
    fifth of a table changed): statistics that still say most items are unsettled make the
    planner claim by walking the primary key through every settled one (485 ms a claim at
    88,600 done), and a batch's read of contacts, planned while the table was small, read
    every contact of the connection through the index and filtered them (3.4 ms a batch at
    9,000 contacts) instead of looking each one up."""
    return dialect.analyze(tx, CHURNED, key=_ANALYZE_LOCK)


class _ItemFailed(Exception):
    """Raised inside a batch transaction to roll it back when one item fails."""

    def __init__(self, item: inbox.Item, error: Exception) -> None:
        super().__init__(str(error))
        self.item = item
        self.error = error


class _BatchFailed(Exception):
    """Raised inside a batch transaction to roll it back when applying it set-based failed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _outcome(item: inbox.Item, ran: list[tuple[str, str]]) -> tuple[int, str, list[str], list[str]]:
    return (item.id, "done" if ran else "ignored", [n for n, _ in ran], [r for _, r in ran])


@dataclass
class Stats:
    claimed: int = 0
    done: int = 0
    ignored: int = 0
    failed: int = 0
    dead: int = 0
    together: int = 0  # of the applied items, those applied set-based (`records.batch`)
    fallbacks: int = 0  # batches applied one by one after applying them set-based failed


def _permanent(exc: Exception) -> bool:
    """Errors that will happen again however often the item is tried (a value too long for its
    column is one: the same payload gives the same value)."""
    return isinstance(exc, sa.exc.DataError) or isinstance(
        exc, errors.DeadLetter | errors.Rejected | errors.ConfigError
    )


class Worker:
    def __init__(
        self,
        db: Database,
        registry: Registry,
        settings: Settings,
        *,
        name: str | None = None,
        stripe: connections.Cache | None = None,
        live: revisions.Live | None = None,
        faults: readiness.Faults | None = None,
        monitor: readiness.Monitor | None = None,
        applied: Callable[[], object] = lambda: None,
        wakeup: wakeup_.Wakeup | None = None,
    ) -> None:
        self.db = db
        self._applied = applied  # told after a batch was applied (messages may be waiting)
        self.wakeup = wakeup  # tells an idle worker that work arrived (None: it polls)
        self.registry = registry
        self._live = live  # the flows in force, when they may change while it runs
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.stats = Stats()
        self.stripe = stripe  # connections and clients, for refetch mode
        self.faults = readiness.Faults() if faults is None else faults
        self.monitor = monitor  # the readiness checks made before claiming
        self._known = set(flows.known_event_types())
        self._unreleased: list[int] = []  # items a fault kept it from releasing
        self._waiting: dict[str, int] = {}  # connection -> Stripe faults in a row
        self._full = False  # the last claim took a whole batch
        # Items settled since the statistics were last refreshed: the first refresh comes
        # after `FIRST_ANALYZE` (a young inbox's statistics are the furthest off).
        self._settled = SETTLED_BETWEEN_ANALYZE - FIRST_ANALYZE

    def _refetched(self, item: inbox.Item, event: dict[str, Any]) -> dict[str, Any]:
        """The event with its object re-read from Stripe when its connection says so."""
        if self.stripe is None:
            return event
        connection = self.stripe.get(item.connection_id)
        if connection is None or connection.ordering != "refetch":
            return event
        return refetch.refetched(self.stripe.client(connection), event, self._known)

    def step(self) -> int:
        """Claim one batch and apply it; returns how many items were claimed.

        A fault of the process (see `errors.is_process_fault`) raises after the items of the
        batch that are still held are released without counting an attempt."""
        if self._unreleased:
            self._release(self._unreleased)
        if self._live is not None:
            self.registry = self._live()
        items, looked = self._claim()
        if items:
            self.stats.claimed += len(items)
            try:
                if self._live is not None and looked is not None:
                    self.registry = self._live.seen(*looked)
                with metrics.batch(len(items), self.stats):  # sizes, apply time, statuses
                    self._apply(items)
            except Exception as exc:
                if errors.is_process_fault(exc):
                    self._release([item.id for item in items])
                raise
            self._note_settled(len(items))
        return len(items)

    def _note_settled(self, count: int) -> None:
        """Every `SETTLED_BETWEEN_ANALYZE` items settled, `refresh_statistics` (SQLite needs
        none: no transaction is taken for it)."""
        if self.db.dialect != "postgresql":
            return
        self._settled += count
        if self._settled >= SETTLED_BETWEEN_ANALYZE:
            self._settled = 0
            with self.db.write() as tx:
                refresh_statistics(tx)

    def _claim(self) -> tuple[list[inbox.Item], tuple[float, int] | None]:
        """A batch, and when one of its items was received after the flows' last look, when a
        new look began and the version it read, in the claim's transaction (so an item
        received after a save is applied by the saved version, for one indexed read)."""
        if not self._full:  # an idle worker never takes SQLite's write lock
            with self.db.read() as tx:
                if not inbox.has_claimable(tx):
                    return [], None
        with self.db.write() as tx:
            items = inbox.claim(
                tx,
                worker_id=self.name,
                limit=self.settings.worker_batch,
                lease=self.settings.lease,
            )
            # A full batch says more is likely waiting: the next claim skips the look first.
            self._full = len(items) == self.settings.worker_batch
            if not items or self._live is None:
                return items, None
            if not self._live.stale(max(max(i.received_at, i.run_after) for i in items)):
                return items, None
            looked = time.time()  # before the read: it sees every save committed by then
            return items, (looked, revisions.current_version(tx))

    def _release(self, item_ids: list[int]) -> None:
        """Give items back uncharged; when the database is away, try again before the next
        claim (a lease that runs out meanwhile charges the attempt: the best that can be)."""
        try:
            with self.db.write() as tx:
                inbox.release(tx, item_ids, worker_id=self.name)
        except Exception as exc:
            if not errors.is_process_fault(exc):
                raise
            self._unreleased = sorted({*self._unreleased, *item_ids})
            return
        self._unreleased = [i for i in self._unreleased if i not in set(item_ids)]

    def _apply(self, items: list[inbox.Item]) -> None:
        """Apply a claimed batch in one transaction. When an item fails, the transaction is
        rolled back, the failure is recorded on its own, and the rest is applied again: no
        savepoint per item (they cost more than applying an item), and no half-applied item.
        Whole-record upserts are applied set-based (`records.batch`); when that fails (a value
        the database refuses, a lock it gave up on), the batch is applied item by item, so an
        item whose own data is bad fails alone."""
        work: dict[int, tuple[dict[str, Any], flows.Plan]] = {}
        todo = []
        for item in items:  # parsing, filters and mappings need no lock: done before it
            try:
                event = json_loads(item.payload)
            except ValueError as exc:
                self._failed(item, errors.DeadLetter(f"the stored payload is not JSON: {exc}"))
                continue
            try:
                event = self._refetched(item, event)
                work[item.id] = (event, self.registry.plan(event))
                todo.append(item)
            except (errors.StripeUnavailable, errors.StripeAuthError) as exc:
                self._postpone(item, exc)
            except Exception as exc:
                if errors.is_process_fault(exc):
                    raise
                self._failed(item, exc)
        together = True
        while todo:
            try:
                self._apply_all(todo, work, together=together)
                return
            except _ItemFailed as failure:
                if isinstance(failure.error, errors.StripeUnavailable | errors.StripeAuthError):
                    self._postpone(failure.item, failure.error)
                else:
                    self._failed(failure.item, failure.error)
                todo = [item for item in todo if item is not failure.item]
            except _BatchFailed as failure:
                log.info(
                    "a batch of %d items applied together failed (%s); one by one now",
                    len(todo),
                    errors.describe(failure.error),
                )
                together = False
                self.stats.fallbacks += 1

    def _apply_all(
        self,
        items: list[inbox.Item],
        work: dict[int, tuple[dict[str, Any], flows.Plan]],
        *,
        together: bool,
    ) -> None:
        done = ignored = dead = 0
        finished: list[tuple[int, str, list[str], list[str]]] = []
        with self.db.write() as tx:
            mine = inbox.still_mine(tx, [item.id for item in items], worker_id=self.name)
            pending: list[tuple[inbox.Item, flows.Plan, list[batch.Upsert]]] = []
            alone: set[int] = set()
            for item in items:
                if item.id not in mine:
                    continue
                if item.attempts > self.settings.max_attempts:
                    # Its earlier holders died while applying it: stop feeding it to workers.
                    error = f"gave up: the worker applying it stopped {item.attempts - 1} times"
                    inbox.fail(tx, item.id, error=error, dead=True, delay=0, worker=self.name)
                    dead += 1
                    continue
                event, plan = work[item.id]
                test = item.source == "test"
                upserts = (
                    self.registry.upserts(
                        plan, connection_id=item.connection_id, event=event, test=test
                    )
                    if together
                    else None
                )
                if upserts is not None:
                    pending.append((item, plan, upserts))
                    continue
                finished += self._together(tx, pending)  # what came before it, first
                pending = []
                try:
                    ran = self.registry.execute(
                        tx, plan, connection_id=item.connection_id, event=event, test=test
                    )
                except Exception as exc:
                    if errors.is_process_fault(exc):
                        raise
                    raise _ItemFailed(item, exc) from exc
                finished.append(_outcome(item, ran))
                alone.add(item.id)
            finished += self._together(tx, pending)
            inbox.finish(tx, finished, flows_version=self.registry.version)
            grouped = len(finished) - sum(1 for f in finished if f[0] in alone)
        for _, status, _, _ in finished:
            if status == "done":
                done += 1
            else:
                ignored += 1
        if done:
            self._applied()
        self.stats.done += done
        self.stats.ignored += ignored
        self.stats.dead += dead
        self.stats.together += grouped
        self._waiting.clear()

    def _together(
        self, tx: Tx, pending: list[tuple[inbox.Item, flows.Plan, list[batch.Upsert]]]
    ) -> list[tuple[int, str, list[str], list[str]]]:
        """Apply the upserts of consecutive items set-based; their outcomes."""
        if not pending:
            return []
        try:
            writes = batch.Batch(tx)
            written = writes.apply([upserts for _, _, upserts in pending])
            writes.flush()
        except Exception as exc:
            if errors.is_process_fault(exc):
                raise
            raise _BatchFailed(exc) from exc
        return [
            _outcome(
                item, [(flow.name, record) for (flow, _), record in zip(plan, records, strict=True)]
            )
            for (item, plan, _), records in zip(pending, written, strict=True)
        ]

    def _postpone(self, item: inbox.Item, exc: errors.StripeError) -> None:
        """Stripe refused the connection's key or could not be reached (refetch mode): not the
        item's fault, so it waits uncharged, later each time while the fault lasts."""
        streak = self._waiting.get(item.connection_id, 0) + 1
        self._waiting[item.connection_id] = streak
        delay = min(retry.backoff(streak), CONNECTION_WAIT_CAP)
        message = f"waiting for Stripe: {errors.describe(exc)}"
        with self.db.write() as tx:
            inbox.postpone(tx, item.id, worker_id=self.name, reason=message, delay=delay)
        if streak == 1:
            log.warning(
                "connection %s: %s (its items wait, uncharged)", item.connection_id, message
            )

    def _failed(self, item: inbox.Item, exc: Exception) -> None:
        """Record that applying `item` failed: retry later, or `dead`."""
        decision = retry.decide(
            attempts=item.attempts,
            max_attempts=self.settings.max_attempts,
            permanent=_permanent(exc),
        )
        message = errors.describe(exc)
        with self.db.write() as tx:
            if item.id not in inbox.still_mine(tx, [item.id], worker_id=self.name):
                return
            inbox.fail(
                tx,
                item.id,
                error=message,
                dead=decision.dead,
                delay=decision.delay,
                worker=self.name,
            )
        if decision.dead:
            self.stats.dead += 1
            log.warning("inbox item %s (%s) is dead: %s", item.id, item.event_id, message)
        else:
            self.stats.failed += 1
            log.info("inbox item %s failed, retry in %.0fs: %s", item.id, decision.delay, message)

    def ready(self) -> bool:
        """Run the readiness checks when they are due; False while the process has a fault."""
        if self.monitor is not None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + readiness.CHECK_EVERY
            self.monitor.check_now()
        return not self.faults

    _next_check = 0.0

    def run(self, stop: threading.Event, *, parent: int | None = None) -> None:
        """Work until `stop` is set (or, given `parent`, until that process is gone). An empty
        inbox is polled every `worker_idle` seconds, or with a wake-up waited on (see `wakeup`). While the process has a fault it claims
        nothing and looks again after a growing pause (`FAULT_WAIT` doubling, capped)."""
        log.info("worker %s started", self.name)
        faulty = 0
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("worker %s: the serve process that started it is gone", self.name)
                break
            try:
                claimed = self.step() if self.ready() else -1
            except Exception as exc:
                if not errors.is_process_fault(exc):
                    log.exception("worker %s: a batch failed; trying again shortly", self.name)
                    stop.wait(1.0)
                    continue
                self.faults.report(exc)
                claimed = -1
            if claimed < 0:  # not ready: check again before the next claim
                faulty += 1
                self._next_check = 0.0
                stop.wait(min(FAULT_WAIT * 2 ** min(faulty - 1, 10), FAULT_WAIT_CAP))
                continue
            if faulty:
                faulty = 0
                self.faults.clear()
            if claimed < self.settings.worker_batch:
                if self.wakeup is None:
                    stop.wait(self.settings.worker_idle)
                elif self.wakeup.wait(stop, wakeup_.LOOK_EVERY) and claimed:
                    # Events keep arriving and this worker keeps up: woken at once, it would
                    # claim a few items at a time, and a batch's fixed cost (two transactions,
                    # a read per table) would outweigh its items (0.36 ms an item in batches
                    # of 30 on SQLite, 0.23 in batches of 200), taking the CPU intake needs.
                    # A short wait fills the batch; an event arriving after a quiet spell
                    # (claimed == 0) is claimed at once.
                    stop.wait(self.settings.worker_gather)
        log.info("worker %s stopped", self.name)


FAULT_WAIT = 0.5  # seconds before a process with a fault looks again (doubling)
FAULT_WAIT_CAP = 15.0  # seconds between two looks at most
CONNECTION_WAIT_CAP = 300.0  # seconds an item of a connection whose Stripe fails waits at most


def _jobs(
    *sources: Callable[[], list[schedule.Job]],
) -> Callable[[], list[schedule.Job]]:
    return lambda: [job for source in sources for job in source()]


def main(
    settings: Settings,
    *,
    parent: int | None = None,
    report: Callable[[list[readiness.Fault]], object] | None = None,
    arrived: Any = None,
) -> None:
    """A worker process: runs until SIGTERM or SIGINT (and, given `parent`, until it dies).

    `snapshots worker` runs this after `readiness.startup` passed; `snapshots serve` starts it
    as its embedded worker, a child process, so applying events never competes with intake for
    one interpreter, hears its faults through `report` and raises `arrived` (a
    `multiprocessing.Event`) when it stored new items. On PostgreSQL the worker LISTENs. With `worker_health_port` set, it
    answers `/healthz` and `/readyz` on that port."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    woken: wakeup_.Wakeup | None = None
    held = lock.shared(settings.sqlite_path)  # `restore` refuses while this worker runs
    database = Database(settings.database_url)
    if arrived is not None:
        woken = wakeup_.Flag(arrived)
    elif database.dialect == "postgresql":
        woken = wakeup_.Listener(database.engine.url)
    faults = readiness.Faults(on_change=report)
    secrets = vault.load(settings)
    live = revisions.Live(database)
    monitor = readiness.Monitor(database, secrets, settings, faults, live=live)
    stripe = connections.Cache(
        database,
        secrets,
        rps=settings.stripe_rps,
        retries=settings.stripe_retries,
        sleep=stop.wait,  # a retry's wait ends when the process stops
    )
    holder = schedule.holder_name()
    # Flows waiting (`wait: 3d`) resume on the scheduler's tick, once each whoever claims them.
    resumer = resume.Resumer(database, live, name=f"{holder}:waits", lease=settings.lease)
    scheduler = threading.Thread(
        target=schedule.Scheduler(
            database,
            _with_retention(
                _jobs(
                    sync.scheduled_jobs(database, stripe, live, settings),
                    health.scheduled_jobs(database, secrets, stripe, live, settings),
                ),
                database,
                settings,
            ),
            holder=holder,
            ready=lambda: not faults,
            tasks=(lambda: replay.run_due(database, holder=holder), resumer.run_due),
        ).run,
        args=(stop,),
        name="scheduler",
        daemon=True,
    )
    scheduler.start()
    # Outbound deliveries go out on threads of their own: a slow endpoint never holds up events.
    dispatcher = delivery.Dispatcher(
        database, secrets, settings, name=f"{holder}:outbound", ready=lambda: not faults
    )
    outbound = threading.Thread(target=dispatcher.run, args=(stop,), name="outbound", daemon=True)
    outbound.start()
    health_server = None
    if settings.worker_health_port is not None:
        health_server = readiness.serve_health(
            settings.host, settings.worker_health_port, faults, database
        )
    # What start-up made (modules, tables, flows) lasts as long as the process: left out of the
    # garbage collector's full collections, which walk every tracked object, as `serve` does.
    gc.collect()
    gc.freeze()
    try:
        Worker(
            database,
            flows.Registry([]),
            settings,
            stripe=stripe,
            live=live,
            faults=faults,
            monitor=monitor,
            applied=dispatcher.wake.set,
            wakeup=woken,
        ).run(stop, parent=parent)
    finally:
        stop.set()
        if isinstance(woken, wakeup_.Listener):
            woken.close()
        if health_server is not None:
            health_server.shutdown()
        scheduler.join(10.0)
        outbound.join(settings.outbound_timeout + 5.0)
        database.dispose()
        held.release()


def _with_retention(
    jobs: Callable[[], list[schedule.Job]], database: Database, settings: Settings
) -> Callable[[], list[schedule.Job]]:
    """The connections' jobs, and pruning old payloads (run by one worker at a time)."""
    pruning = retention.job(database, settings)
    return lambda: [*jobs(), pruning]


def _child(settings: Settings, parent: int, reports: Any, arrived: Any) -> None:
    # Below the serve process in CPU priority: acknowledging webhooks is what Stripe times,
    # applying them can wait for a spare moment (the inbox absorbs bursts).
    os.nice(EMBEDDED_NICENESS)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    main(
        settings.model_copy(update={"worker_health_port": None}),
        parent=parent,
        report=reports.put,
        arrived=arrived,
    )


EMBEDDED_NICENESS = 19  # added to the embedded worker's nice value


class Embedded:
    """The worker `serve` runs beside the app: a child process, restarted if it dies. Its
    faults come back through a queue, for `serve`'s `/readyz`."""

    RESTART_DELAY = 1.0  # seconds

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._reports = self._context.Queue()
        self._faults: list[readiness.Fault] = []
        # Raised by intake when it stored new items (SQLite: on PostgreSQL the worker LISTENs).
        self._arrived = self._context.Event() if settings.sqlite_path is not None else None

    def arrived(self) -> None:
        """Tell the worker that new items are waiting."""
        if self._arrived is not None:
            self._arrived.set()

    def start(self) -> None:
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="worker-watch", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        self._faults = []
        self._process = self._context.Process(
            target=_child,
            args=(self._settings, os.getpid(), self._reports, self._arrived),
            name="snapshots-worker",
            daemon=True,
        )
        self._process.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._faults = self._reports.get(timeout=self.RESTART_DELAY)
            except queue.Empty:
                pass
            process = self._process
            if process is not None and not process.is_alive() and not self._stop.is_set():
                log.error(
                    "the embedded worker exited (code %s); starting another", process.exitcode
                )
                self._spawn()

    def faults(self) -> list[readiness.Fault]:
        """The embedded worker's faults, as its own (a dead worker is one)."""
        process = self._process
        if process is None or not process.is_alive():
            return [readiness.Fault("worker", "the embedded worker is not running", time.time())]
        return [readiness.Fault("worker", f"{f.kind}: {f.message}", f.since) for f in self._faults]

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout)
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()  # SIGTERM: finish the batch in hand, then exit
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        self._reports.close()
