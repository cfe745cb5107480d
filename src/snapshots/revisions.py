"""Revisions of the flows in force: every version of the flows file ever put in force, kept
in the database (version 0 is the prebuilt file). The newest is in force; an import or a
rollback (an earlier version imported again) makes a new version with its audit entry, so the
history is never rewritten. `Live` gives a long-running process the flows in force, following
new versions as they appear.
"""

from __future__ import annotations

import difflib
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from snapshots import __version__, audit, connections, errors, flowfile, inbox
from snapshots.flows import Registry
from snapshots.outbound import waits
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

V = tables.flow_versions
PREBUILT = "the prebuilt flows"


class Revision(BaseModel):
    """One version of the flows file (0 is the prebuilt one)."""

    model_config = ConfigDict(frozen=True)

    version: int
    actor: str
    comment: str | None
    created_at: Timestamp | None
    text: str | None = Field(None, description="The flows file (YAML)")


def _prebuilt(with_text: bool = True) -> Revision:
    return Revision(
        version=0,
        actor="snapshots",
        comment=PREBUILT,
        created_at=None,
        text=flowfile.default_text() if with_text else None,
    )


def _revision(row: Any, with_text: bool = True) -> Revision:
    return Revision(
        version=row.version,
        actor=row.actor,
        comment=row.comment,
        created_at=row.created_at,
        text=row.text if with_text else None,
    )


def current_version(tx: Tx) -> int:
    return inbox.flows_version(tx)


_NEWEST = sa.select(V).order_by(V.c.version.desc()).limit(1)  # built once: read at every edit


def get_revision(tx: Tx, version: int | None = None) -> Revision:
    """A stored version (the one in force by default), with its text; 0 is the prebuilt one."""
    if version is None:
        row = tx.execute(_NEWEST).first()
    else:
        row = tx.execute(sa.select(V).where(V.c.version == version)).first()
    if row is None:
        if version not in (None, 0):
            raise errors.NotFound(f"no flows version {version} (see `snapshots flows versions`)")
        return _prebuilt()
    return _revision(row)


def revisions(tx: Tx, *, with_text: bool = False) -> list[Revision]:
    """Every version, newest first (the first is in force; the prebuilt one comes last)."""
    rows = tx.execute(sa.select(V).order_by(V.c.version.desc())).all()
    return [*(_revision(r, with_text) for r in rows), _prebuilt(with_text)]


def diff(tx: Tx, old: int, new: int) -> list[str]:
    """The lines of a unified diff from version `old` to version `new` of the flows file."""
    before, after = get_revision(tx, old), get_revision(tx, new)
    return list(
        difflib.unified_diff(
            (before.text or "").splitlines(),
            (after.text or "").splitlines(),
            f"version {old}",
            f"version {new}",
            lineterm="",
        )
    )


def current(tx: Tx) -> Registry:
    """The flows in force; FlowsIncompatible when they do not load with this code (a newer
    Snapshots imported them during a rolling upgrade, or today's checks refuse them)."""
    return load(get_revision(tx))


def at(tx: Tx, version: int) -> Registry:
    """The flows of a stored version (NotFound, FlowsIncompatible)."""
    return load(get_revision(tx, version))


def load(stored: Revision) -> Registry:
    where = flowfile.DEFAULTS if stored.version == 0 else f"flows version {stored.version}"
    try:
        return flowfile.parse(stored.text or "", where, version=stored.version)
    except errors.ConfigError as exc:
        back = (
            f"`snapshots flows rollback {stored.version - 1}`" if stored.version else "a rollback"
        )
        raise errors.FlowsIncompatible(
            f"the flows in force (version {stored.version}) do not load with this Snapshots "
            f"({__version__}): {exc.message[:300]}: upgrade this process, or put back flows "
            f"it can run with {back}"
        ) from exc


@dataclass(frozen=True)
class Imported:
    """What an import or rollback did: the version now in force, the one before, and how
    many flows it holds."""

    revision: Revision
    previous: int
    flows: int


def import_text(
    db: Database,
    text: str,
    *,
    where: str,
    actor: str,
    comment: str | None = None,
    action: str = "flows.imported",
) -> Imported:
    """Check `text` once, holding no transaction (a check evaluates sample events), then make
    it the flows in force as a new version with its audit entry (the old and the new version)
    in one short transaction. A file with a problem changes nothing: `flowfile.Invalid` lists them."""
    checked = flowfile.check(text, where)
    if checked.registry is None:
        raise flowfile.Invalid(checked.problems)
    comment = None if comment is None else comment[:500]
    now = time.time()
    with db.write() as tx:
        old = current_version(tx)
        new = old + 1
        # Waits of flows the new version no longer has will never resume: cancelled now.
        waits.cancel_missing(tx, {flow.name for flow in checked.registry.flows if flow.steps})
        tx.execute(
            V.insert().values(version=new, text=text, actor=actor, comment=comment, created_at=now)
        )
        audit.record(
            tx,
            actor=actor,
            action=action,
            target=f"flows:{new}",
            details={"old_version": old, "new_version": new, "comment": comment},
        )
        # The managed webhook endpoints must now listen to the new flows' event types: marked
        # in this transaction, so no crash can forget it (onboarding.endpoint sends the lists).
        connections.set_endpoint_pending(tx, None, True)
    revision = Revision(version=new, actor=actor, comment=comment, created_at=now, text=text)
    return Imported(revision, old, len(checked.registry.flows))


def rollback(db: Database, version: int, *, actor: str) -> Imported:
    """Put an earlier version back in force, as a new version (history is never rewritten);
    `flowfile.Invalid` when that version no longer passes today's checks."""
    with db.read() as tx:
        earlier = get_revision(tx, version)
    return import_text(
        db,
        earlier.text or "",
        where=f"flows version {version}",
        actor=actor,
        comment=f"rollback to version {version}",
        action="flows.rolled_back",
    )


class Live:
    """The flows in force for a long-running process: re-read when a new version appears,
    looked for at most every `ttl` seconds (a cheap read), and at once for events received
    after the last look (`stale`): a worker reads the version in its claim's transaction and
    hands it to `seen`, so an event received after a save is applied by the saved version.

    When the version in force does not load with this code, calling it raises
    FlowsIncompatible (a worker claims nothing until it loads or is rolled back), while
    `wants` says yes to every event type, so intake keeps every event pending for a worker
    that can run the flows, instead of marking one `ignored` by the flows of the past.

    With `follow=False` only `refresh()` reads a new version (a check evaluates sample
    events: seconds for a big file), so a server calls it from a thread and its event loop,
    which asks `wants` for every webhook, never waits for a load."""

    def __init__(self, db: Database, *, ttl: float = 2.0, follow: bool = True) -> None:
        self._db = db
        self._ttl = ttl
        self._follow = follow
        self._lock = threading.Lock()
        self._registry: Registry | None = None
        self.fault: errors.FlowsIncompatible | None = None
        self._looked = time.time()  # when the last look began (wall clock: events' arrivals)
        self._version = self._current_version()  # the version in force, loaded or not
        self._load()
        self._next = time.monotonic() + ttl

    def __call__(self) -> Registry:
        if self._follow and time.monotonic() >= self._next:
            self.refresh()
        if self.fault is not None or self._registry is None:
            raise self.fault or errors.FlowsIncompatible("no flows loaded")
        return self._registry

    @property
    def version(self) -> int:
        """The version of the flows `wants` answers by (the one loaded)."""
        registry = self._registry
        return self._version if registry is None else registry.version

    def stale(self, moment: float) -> bool:
        """Did the last look begin before wall-clock `moment` (an event received then may
        follow a save this process has not seen)?"""
        return self._looked <= moment

    def seen(self, looked: float, version: int) -> Registry:
        """The flows in force, given the `version` a look that began at `looked` read (in a
        transaction of the caller's: `current_version`); loads it when it is new."""
        with self._lock:
            self._seen(looked, version)
        return self()

    def refresh(self) -> None:
        """Load the version in force if it changed (looked for at most every `ttl` seconds)."""
        with self._lock:
            if time.monotonic() < self._next:
                return
            looked = time.time()  # before the read: it sees every save committed by then
            self._seen(looked, self._current_version())

    def _seen(self, looked: float, version: int) -> None:
        self._next = time.monotonic() + self._ttl
        self._looked = max(self._looked, looked)
        if version != self._version:
            self._version = version
            self._load()

    def _current_version(self) -> int:
        with self._db.read() as tx:
            return current_version(tx)

    def _load(self) -> None:
        try:
            with self._db.read() as tx:
                self._registry = current(tx)
            self.fault = None
        except errors.FlowsIncompatible as exc:
            self.fault = exc

    def wants(self, event_type: str) -> bool:
        try:
            return self().wants(event_type)
        except errors.FlowsIncompatible:
            return True
