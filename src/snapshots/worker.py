"""The worker: claims inbox items under a lease and runs the flows on them.

A batch is claimed in one short transaction, then applied in a second one: an item's record
writes and its `done` mark commit together, so a worker that dies before the commit leaves
nothing half-applied, and its items return to the inbox when the lease runs out. An item that
fails rolls the batch back; it is marked on its own and the others are applied again. Before applying, the worker re-checks that it still holds each item (on
PostgreSQL with a row lock), so an item taken over by another worker is never applied twice.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from snapshots import connections, errors, flows, inbox, refetch, retry, schedule, sync, vault
from snapshots.flows import Registry
from snapshots.settings import Settings
from snapshots.store import lock
from snapshots.store.db import Database

log = logging.getLogger("snapshots.worker")


class _ItemFailed(Exception):
    """Raised inside a batch transaction to roll it back when one item fails."""

    def __init__(self, item: inbox.Item, error: Exception) -> None:
        super().__init__(str(error))
        self.item = item
        self.error = error


@dataclass
class Stats:
    claimed: int = 0
    done: int = 0
    ignored: int = 0
    failed: int = 0
    dead: int = 0


def _permanent(exc: Exception) -> bool:
    """Errors that will happen again however often the item is tried (a value too long for its
    column is one: the same payload gives the same value)."""
    return isinstance(exc, sa.exc.DataError) or isinstance(
        exc, errors.DeadLetter | errors.Rejected | errors.ConfigError | errors.StripeAuthError
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
        live: Callable[[], Registry] | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self._live = live  # the flows in force, when they may change while it runs
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.stats = Stats()
        self.stripe = stripe  # connections and clients, for refetch mode
        self._known = set(flows.known_event_types())

    def _refetched(self, item: inbox.Item, event: dict[str, Any]) -> dict[str, Any]:
        """The event with its object re-read from Stripe when its connection says so."""
        if self.stripe is None:
            return event
        connection = self.stripe.get(item.connection_id)
        if connection is None or connection.ordering != "refetch":
            return event
        return refetch.refetched(self.stripe.client(connection), event, self._known)

    def step(self) -> int:
        """Claim one batch and apply it; returns how many items were claimed."""
        if self._live is not None:
            self.registry = self._live()
        items = inbox.claim(
            self.db,
            worker_id=self.name,
            limit=self.settings.worker_batch,
            lease=self.settings.lease,
        )
        if items:
            self.stats.claimed += len(items)
            self._apply(items)
        return len(items)

    def _apply(self, items: list[inbox.Item]) -> None:
        """Apply a claimed batch in one transaction. When an item fails, the transaction is
        rolled back, the failure is recorded on its own, and the rest is applied again: no
        savepoint per item (they cost more than applying an item), and no half-applied item."""
        work: dict[int, tuple[dict[str, Any], flows.Plan]] = {}
        todo = []
        for item in items:  # parsing, filters and mappings need no lock: done before it
            try:
                event = json.loads(item.payload)
            except ValueError as exc:
                self._failed(item, errors.DeadLetter(f"the stored payload is not JSON: {exc}"))
                continue
            try:
                event = self._refetched(item, event)
                work[item.id] = (event, self.registry.plan(event))
                todo.append(item)
            except Exception as exc:
                self._failed(item, exc)
        while todo:
            try:
                self._apply_all(todo, work)
                return
            except _ItemFailed as failure:
                self._failed(failure.item, failure.error)
                todo = [item for item in todo if item is not failure.item]

    def _apply_all(
        self, items: list[inbox.Item], work: dict[int, tuple[dict[str, Any], flows.Plan]]
    ) -> None:
        done = ignored = dead = 0
        finished: list[tuple[int, str, list[str], list[str]]] = []
        with self.db.write() as conn:
            mine = inbox.still_mine(conn, [item.id for item in items], worker_id=self.name)
            for item in items:
                if item.id not in mine:
                    continue
                if item.attempts > self.settings.max_attempts:
                    # Its earlier holders died while applying it: stop feeding it to workers.
                    error = f"gave up: the worker applying it stopped {item.attempts - 1} times"
                    inbox.fail(conn, item.id, error=error, dead=True, delay=0)
                    dead += 1
                    continue
                event, plan = work[item.id]
                try:
                    ran = self.registry.execute(
                        conn,
                        plan,
                        connection_id=item.connection_id,
                        event=event,
                        test=item.source == "test",
                    )
                except Exception as exc:
                    raise _ItemFailed(item, exc) from exc
                finished.append(
                    (
                        item.id,
                        "done" if ran else "ignored",
                        [n for n, _ in ran],
                        [r for _, r in ran],
                    )
                )
                if ran:
                    done += 1
                else:
                    ignored += 1
            inbox.finish(conn, finished)
        self.stats.done += done
        self.stats.ignored += ignored
        self.stats.dead += dead

    def _failed(self, item: inbox.Item, exc: Exception) -> None:
        """Record that applying `item` failed: retry later, or `dead`."""
        decision = retry.decide(
            attempts=item.attempts,
            max_attempts=self.settings.max_attempts,
            permanent=_permanent(exc),
        )
        message = errors.describe(exc)
        with self.db.write() as conn:
            if item.id not in inbox.still_mine(conn, [item.id], worker_id=self.name):
                return
            inbox.fail(conn, item.id, error=message, dead=decision.dead, delay=decision.delay)
        if decision.dead:
            self.stats.dead += 1
            log.warning("inbox item %s (%s) is dead: %s", item.id, item.event_id, message)
        else:
            self.stats.failed += 1
            log.info("inbox item %s failed, retry in %.0fs: %s", item.id, decision.delay, message)

    def run(self, stop: threading.Event, *, parent: int | None = None) -> None:
        """Work until `stop` is set (or, given `parent`, until that process is gone). An empty
        inbox is polled every `worker_idle` seconds."""
        log.info("worker %s started", self.name)
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("worker %s: the serve process that started it is gone", self.name)
                break
            try:
                claimed = self.step()
            except Exception:
                log.exception("worker %s: a batch failed; trying again shortly", self.name)
                claimed = 0
                stop.wait(1.0)
            if claimed < self.settings.worker_batch:
                stop.wait(self.settings.worker_idle)
        log.info("worker %s stopped", self.name)


def main(settings: Settings, *, parent: int | None = None) -> None:
    """A worker process: runs until SIGTERM or SIGINT (and, given `parent`, until it dies).

    `snapshots worker` runs this; `snapshots serve` starts it as its embedded worker, a
    child process, so applying events never competes with intake for one interpreter."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    held = lock.shared(settings.sqlite_path)  # `restore` refuses while this worker runs
    database = Database(settings.database_url)
    live = flows.Live(database)
    stripe = None
    try:
        stripe = connections.Cache(
            database,
            vault.load(settings),
            rps=settings.stripe_rps,
            retries=settings.stripe_retries,
            sleep=stop.wait,  # a retry's wait ends when the process stops
        )
    except errors.ConfigError as exc:
        log.warning("pulling from Stripe is off: %s", exc)
    scheduler = None
    if stripe is not None:
        scheduler = threading.Thread(
            target=schedule.Scheduler(
                database,
                sync.scheduled_jobs(database, stripe, live, settings),
                holder=schedule.holder_name(),
            ).run,
            args=(stop,),
            name="scheduler",
            daemon=True,
        )
        scheduler.start()
    try:
        Worker(database, live(), settings, stripe=stripe, live=live).run(stop, parent=parent)
    finally:
        stop.set()
        if scheduler is not None:
            scheduler.join(10.0)
        database.dispose()
        held.release()


def _child(settings: Settings, parent: int) -> None:
    # Below the serve process in CPU priority: acknowledging webhooks is what Stripe times,
    # applying them can wait for a spare moment (the inbox absorbs bursts).
    os.nice(EMBEDDED_NICENESS)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    main(settings, parent=parent)


EMBEDDED_NICENESS = 19  # added to the embedded worker's nice value


class Embedded:
    """The worker `serve` runs beside the app: a child process, restarted if it dies."""

    RESTART_DELAY = 1.0  # seconds

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="worker-watch", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        self._process = self._context.Process(
            target=_child, args=(self._settings, os.getpid()), name="snapshots-worker", daemon=True
        )
        self._process.start()

    def _supervise(self) -> None:
        while not self._stop.wait(self.RESTART_DELAY):
            process = self._process
            if process is not None and not process.is_alive():
                log.error(
                    "the embedded worker exited (code %s); starting another", process.exitcode
                )
                self._spawn()

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


def drain(worker: Worker, *, timeout: float = 30.0) -> None:
    """Apply everything claimable now (for tests and `send-test-event`)."""
    deadline = time.monotonic() + timeout
    while worker.step() and time.monotonic() < deadline:
        pass
