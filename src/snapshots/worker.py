"""The worker: claims inbox items under a lease and runs the flows on them.

A batch is claimed in one short transaction, then applied in a second one in which each item
has its own savepoint: an item's record writes and its `done` mark commit together, so a worker
that dies before the commit leaves nothing half-applied, and its items return to the inbox when
the lease runs out. Before applying, the worker re-checks that it still holds each item (on
PostgreSQL with a row lock), so an item taken over by another worker is never applied twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from snapshots import errors, inbox, retry
from snapshots.flows import Registry
from snapshots.settings import Settings
from snapshots.store.db import Database

log = logging.getLogger("snapshots.worker")


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
        self, db: Database, registry: Registry, settings: Settings, *, name: str | None = None
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.stats = Stats()
        self.wake = threading.Event()

    def step(self) -> int:
        """Claim one batch and apply it; returns how many items were claimed."""
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
        with self.db.write() as conn:
            mine = inbox.still_mine(conn, [item.id for item in items], worker_id=self.name)
            for item in items:
                if item.id not in mine:
                    continue
                if item.attempts > self.settings.max_attempts:
                    # Its earlier holders died while applying it: stop feeding it to workers.
                    inbox.fail(
                        conn,
                        item.id,
                        error=f"gave up: the worker applying it stopped {item.attempts - 1} times",
                        dead=True,
                        delay=0,
                    )
                    self.stats.dead += 1
                    continue
                try:
                    with conn.begin_nested():
                        event = json.loads(item.payload)
                        ran = self.registry.apply(
                            conn,
                            connection_id=item.connection_id,
                            event=event,
                            test=item.source == "test",
                        )
                        status = "done" if ran else "ignored"
                        inbox.finish(conn, item.id, status=status, flows=[name for name, _ in ran])
                    if ran:
                        self.stats.done += 1
                    else:
                        self.stats.ignored += 1
                except Exception as exc:
                    decision = retry.decide(
                        attempts=item.attempts,
                        max_attempts=self.settings.max_attempts,
                        permanent=_permanent(exc),
                    )
                    message = errors.describe(exc)
                    inbox.fail(
                        conn, item.id, error=message, dead=decision.dead, delay=decision.delay
                    )
                    if decision.dead:
                        self.stats.dead += 1
                        log.warning(
                            "inbox item %s (%s) is dead: %s", item.id, item.event_id, message
                        )
                    else:
                        self.stats.failed += 1
                        log.info(
                            "inbox item %s failed, retry in %.0fs: %s",
                            item.id,
                            decision.delay,
                            message,
                        )

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set. An empty inbox is polled every `worker_idle` seconds, or
        sooner when intake in this process sets `wake`."""
        log.info("worker %s started", self.name)
        while not stop.is_set():
            try:
                claimed = self.step()
            except Exception:
                log.exception("worker %s: claiming failed; trying again shortly", self.name)
                claimed = 0
                stop.wait(1.0)
            if claimed < self.settings.worker_batch:
                self.wake.wait(self.settings.worker_idle)
                self.wake.clear()
        log.info("worker %s stopped", self.name)


def drain(worker: Worker, *, timeout: float = 30.0) -> None:
    """Apply everything claimable now (for tests and `send-test-event`)."""
    deadline = time.monotonic() + timeout
    while worker.step() and time.monotonic() < deadline:
        pass
