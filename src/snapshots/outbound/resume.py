"""Resuming flows after a wait: due waits are claimed under a lease (any worker may), and the
rest of each flow's steps runs in one transaction with the wait's outcome, so a wait fires
once however many workers race for it.

The steps come from the flows version the wait was made under; a wait whose flow is no longer
in the flows in force is cancelled instead. The clock is injectable, so a test can let three
days pass in a moment.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from snapshots import errors, flows, retry, revisions
from snapshots.outbound import waits
from snapshots.store import tables
from snapshots.store.db import Database, Tx

log = logging.getLogger("snapshots.outbound")
BATCH = 20  # waits claimed at once
MAX_ATTEMPTS = 10  # a wait whose steps keep failing is `failed` after this many tries


class Resumer:
    def __init__(
        self,
        db: Database,
        live: Callable[[], flows.Registry],
        *,
        name: str,
        lease: float = 60.0,
        clock: waits.Clock = time.time,
    ) -> None:
        self.db = db
        self._live = live
        self.name = name
        self._lease = lease
        self._clock = clock
        self._versions: dict[int, flows.Registry] = {}

    def run_due(self) -> int:
        """Resume every wait due now; returns how many were claimed."""
        now = self._clock()
        with self.db.read() as tx:  # an idle tick takes no write lock
            if not waits.has_due(tx, now):
                return 0
        with self.db.write() as tx:
            claimed = waits.claim(tx, worker_id=self.name, limit=BATCH, lease=self._lease, now=now)
        for wait in claimed:
            self._resume(wait)
        return len(claimed)

    def _flow(self, tx: Tx, wait: waits.Wait) -> flows.Flow | None:
        """The wait's flow as of its version, if the flows in force still have it."""
        current = self._live()
        if not any(f.name == wait.flow and f.steps for f in current.flows):
            return None
        registry = current
        if wait.flow_version != current.version:
            registry = self._versions.get(wait.flow_version) or self._version(tx, wait)
        found = next((f for f in registry.flows if f.name == wait.flow and f.steps), None)
        return found or next(f for f in current.flows if f.name == wait.flow)

    def _version(self, tx: Tx, wait: waits.Wait) -> flows.Registry:
        try:
            registry = revisions.load(revisions.get_revision(tx, wait.flow_version))
        except (errors.NotFound, errors.FlowsIncompatible):
            return self._live()
        if len(self._versions) > 20:
            self._versions.clear()
        self._versions[wait.flow_version] = registry
        return registry

    def _resume(self, wait: waits.Wait) -> None:
        try:
            with self.db.write() as tx:
                if not waits.still_mine(tx, wait.id, worker_id=self.name):
                    return  # its lease ran out and another worker took it over
                flow = self._flow(tx, wait)
                if flow is None:
                    waits.finish(tx, wait.id, status="cancelled", reason="its flow was removed")
                    return
                status, reason = flow.resume(tx, wait, _event(tx, wait), now=self._clock())
                waits.finish(tx, wait.id, status=status, reason=reason)
        except Exception as exc:
            if errors.is_process_fault(exc):
                with self.db.write() as tx:
                    waits.release(tx, wait.id, worker_id=self.name)
                raise
            decision = retry.decide(
                attempts=wait.attempts,
                max_attempts=MAX_ATTEMPTS,
                permanent=isinstance(exc, errors.DeadLetter | errors.Rejected),
            )
            message = errors.describe(exc)
            with self.db.write() as tx:
                waits.retry(tx, wait.id, reason=message, delay=decision.delay, dead=decision.dead)
            log.warning("wait %s (flow %s) failed: %s", wait.id, wait.flow, message)


def _event(tx: Tx, wait: waits.Wait) -> dict[str, Any]:
    t, p = tables.inbox_items, tables.inbox_payloads
    payload = tx.execute(
        sa.select(p.c.payload)
        .join(t, t.c.id == p.c.item_id)
        .where(t.c.connection_id == wait.connection_id, t.c.event_id == wait.event_id)
    ).scalar_one_or_none()
    if payload is None:
        raise errors.DeadLetter(f"its source event {wait.event_id} is no longer in the inbox")
    event: dict[str, Any] = json.loads(payload)
    return event
