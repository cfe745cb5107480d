"""Finding events in the inbox, for every shell: a search (status, type with `*` wildcards,
connection, source, time range, and one box for a Stripe object id, an event id, an item number
or an e-mail address), failures grouped by cause, and one event in full (what to do about its
error first, its payload, the flows that ran and the records they wrote).

The object id and e-mail are stored with each item when it arrives, and the cause of its
error when it fails (`causes.of`), each indexed, so none of these reads the payloads. On
SQLite, how many items of a connection are failed or dead with each cause is kept in
`inbox_failures` (see tables.py): a search by status, connection and cause alone is counted
from there (`failing`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from snapshots import audit, causes, errors, ids, inbox, paging, revisions
from snapshots.records import kinds
from snapshots.store import db, dialect, tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

T = tables.inbox_items
F = tables.inbox_failures
SOURCES = ("webhook", "test", "sync", "reconcile", "watcher")
FAILING = ("failed", "dead")  # the statuses whose errors are grouped by cause
CAUSES = 20  # causes shown at most
WINDOW = 2_000  # the newest failing items of each status whose causes are grouped
COUNT_CAP = 1_000  # a cause's items counted at most; more show as "1,000+"


def _like(text: str) -> str:
    """`text` with LIKE's own wildcards escaped (`*` is ours, made `%` by the caller)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


SearchKey = tuple[Any, ...]  # a search's class name, then (field, value) pairs


class Search(BaseModel):
    """Which inbox items: each condition given narrows the set. `type` takes `*` wildcards
    (`invoice.*`); `error` is a piece of the last error (any case); `cause` is one exactly (a
    group of `causes`); `q` is an item number, a Stripe event id, the id of the event's
    object (`cus_...`, `in_...`) or an e-mail address; `since` and `until` bound when the
    items arrived (unix seconds); `connections` keeps to those connections (an API key
    limited to them)."""

    model_config = ConfigDict(frozen=True)

    status: str | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None
    type: str | None = None
    error: str | None = None
    cause: str | None = None
    connection_id: str | None = None
    source: str | None = None
    test: bool | None = None
    q: str | None = None
    connections: list[str] | None = None

    def model_post_init(self, _: Any) -> None:
        if self.status is not None and self.status not in inbox.STATUSES:
            raise errors.BadRequest(
                f"status: one of {', '.join(inbox.STATUSES)}, not {self.status!r}",
                code="parameter_invalid",
            )
        if self.type is not None and not (0 < len(self.type) <= 255 and self.type.isprintable()):
            raise errors.BadRequest("type: 1 to 255 printable characters", code="parameter_invalid")
        if self.error is not None and not (0 < len(self.error) <= 500):
            raise errors.BadRequest("error: 1 to 500 characters", code="parameter_invalid")
        if self.cause is not None and not (0 < len(self.cause) <= causes.LENGTH):
            raise errors.BadRequest(
                f"cause: 1 to {causes.LENGTH} characters", code="parameter_invalid"
            )
        if self.connection_id is not None and not ids.plausible(self.connection_id):
            raise errors.BadRequest(
                f"no connection {self.connection_id!r}", code="parameter_invalid"
            )
        if self.source is not None and self.source not in SOURCES:
            raise errors.BadRequest(
                f"source: one of {', '.join(SOURCES)}, not {self.source!r}",
                code="parameter_invalid",
            )
        if self.q is not None and not (0 < len(self.q) <= 512 and self.q.isprintable()):
            raise errors.BadRequest(
                "search: 1 to 512 printable characters", code="parameter_invalid"
            )
        if self.since is not None and self.until is not None and self.until < self.since:
            raise errors.BadRequest("until is before since", code="parameter_invalid")

    def key(self) -> SearchKey:
        """The search as a hashable value (the statements built from it are kept by it)."""
        fields = self.model_dump().items()
        return (
            type(self).__name__,
            *((name, tuple(value) if isinstance(value, list) else value) for name, value in fields),
        )

    @classmethod
    def of_key(cls, key: SearchKey) -> Search:
        """The search `key` stands for (of this class: a `key` names its own)."""
        assert key[0] == cls.__name__, (key[0], cls.__name__)
        fields: dict[str, Any] = {n: list(v) if isinstance(v, tuple) else v for n, v in key[1:]}
        return cls.model_validate(fields)

    def where(self) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if self.status is not None:
            found.append(T.c.status == self.status)
        if self.since is not None:
            found.append(T.c.received_at >= self.since)
        if self.until is not None:
            found.append(T.c.received_at < self.until)
        if self.type is not None:
            if "*" in self.type:
                pattern = _like(self.type).replace("*", "%")
                found.append(T.c.event_type.like(pattern, escape="\\"))
            else:
                found.append(T.c.event_type == self.type)
        if self.error is not None:
            found.append(
                sa.func.lower(T.c.last_error).like(f"%{_like(self.error.lower())}%", escape="\\")
            )
        if self.cause is not None:
            found.append(T.c.error_cause == self.cause)
        if self.connection_id is not None:
            found.append(T.c.connection_id == self.connection_id)
        if self.source is not None:
            found.append(T.c.source == self.source)
        if self.test is not None:
            found.append(T.c.source == "test" if self.test else T.c.source != "test")
        if self.q is not None:
            found.append(_matching(self.q.strip()))
        found += paging.within(T.c.connection_id, self.connections)
        return found


def _matching(text: str) -> sa.ColumnElement[bool]:
    if "@" in text:
        return T.c.email == text.lower()
    if text.isascii() and text.isdigit():
        number = int(text)
        return T.c.id == number if number <= inbox.MAX_ITEM_ID else sa.false()
    return sa.or_(T.c.event_id == text, T.c.object_id == text)


def page(
    tx: Tx,
    search: Search,
    *,
    limit: int = 50,
    starting_after: int | None = None,
    ending_before: int | None = None,
) -> paging.Page[inbox.Event]:
    """The items `search` finds, newest first, without payloads (the page after or before a
    cursor: `paging.paginate`)."""
    return paging.paginate(
        tx,
        T,
        "inbox item",
        lambda row: inbox.Event.model_validate(db.fields(row)),
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        where=paging.Where(search.key(), search.where()),
        key="id",
        columns=_SHOWN,
    )


# Built once (see `paging.Where`), of the columns an event shows alone: the item's others
# (lease, object id, e-mail, cause...) cost a third of reading a page of fifty for nothing.
_SHOWN = sa.select(*(T.c[name] for name in inbox.Event.model_fields))


def count(tx: Tx, search: Search) -> int:
    return int(
        tx.execute(sa.select(sa.func.count()).select_from(T).where(*search.where())).scalar_one()
    )


class Cause(BaseModel):
    """Failed or dead items that failed the same way, and how many."""

    status: str
    cause: str
    count: int  # counted up to COUNT_CAP + 1: more than COUNT_CAP means "COUNT_CAP+"
    example: str = Field(description="The last error of the newest of them, as it was")


def _groups(where: list[sa.ColumnElement[bool]], status: str) -> sa.Select[Any]:
    """The causes of the newest `WINDOW` items `where` finds with `status` (a read of the
    (status, id, error_cause) index), the `CAUSES` biggest there, each with how many items
    have it, counted up to `COUNT_CAP + 1` (a range of the (status, error_cause, ...) index,
    at most that long), and the last error of its newest item: one statement."""
    window = (
        sa.select(T.c.id, T.c.error_cause)
        .where(*where, T.c.status == status, T.c.error_cause.is_not(None))
        .order_by(T.c.id.desc())
        .limit(WINDOW)
        .subquery("window")
    )
    groups = (
        sa.select(
            window.c.error_cause.label("cause"),
            sa.func.count().label("seen"),
            sa.func.max(window.c.id).label("newest"),
        )
        .group_by(window.c.error_cause)
        .order_by(sa.desc("seen"), window.c.error_cause)
        .limit(CAUSES)
        .subquery("groups")
    )
    some = (
        sa.select(sa.literal(1))
        .where(*where, T.c.status == status, T.c.error_cause == groups.c.cause)
        .correlate(groups)
        .limit(COUNT_CAP + 1)
        .subquery("some")
    )
    return sa.select(
        groups.c.cause,
        groups.c.seen,
        sa.select(sa.func.count()).select_from(some).scalar_subquery().label("total"),
        sa.select(T.c.last_error)
        .where(T.c.id == groups.c.newest)
        .scalar_subquery()
        .label("example"),
    )


@functools.lru_cache(maxsize=64)
def _groups_of(key: SearchKey, status: str) -> sa.Select[Any]:
    """`_groups` of the search `key` stands for, built once per search and status: the
    statement is a function of them alone (its values bound inside), and building it again,
    with its cache key, cost more than SQLite running it (a list of failures refreshed, or
    opened again, is the same search)."""
    return _groups(Search.of_key(key).where(), status)


def failures(tx: Tx, search: Search | None = None) -> list[Cause]:
    """The failed and dead items `search` finds (all of them by default), grouped by status
    and cause, the biggest groups first (at most `CAUSES`), each counted up to `COUNT_CAP +
    1` (a count above `COUNT_CAP` means "more than that"). From the kept counts when they
    answer the search (`failing`); else the causes are those of the newest `WINDOW` items of
    each status, so the work is bounded however many failed: one statement a status
    (`_groups`)."""
    search = search or Search()
    statuses = [s for s in ([search.status] if search.status else FAILING) if s in FAILING]
    if not statuses:
        return []
    if _tallied(tx, search):
        return [
            Cause(
                status=row.status,
                cause=row.cause,
                count=min(int(row.total), COUNT_CAP + 1),
                example=row.example or row.cause,
            )
            for row in tx.execute(_tallied_groups(search.key(), tuple(statuses)))
        ]
    seen: dict[tuple[str, str], int] = {}
    found: dict[tuple[str, str], Cause] = {}
    for status in statuses:
        for row in tx.execute(_groups_of(search.key(), status)):
            seen[(status, row.cause)] = int(row.seen)
            found[(status, row.cause)] = Cause(
                status=status,
                cause=row.cause,
                count=int(row.total),
                example=row.example or row.cause,
            )
    top = sorted(seen, key=lambda key: (-seen[key], key))[:CAUSES]
    return sorted((found[key] for key in top), key=lambda c: (-c.count, c.status, c.cause))


def failing(tx: Tx, search: Search) -> int | None:
    """Exactly how many items `search` finds, when the kept counts answer it (SQLite, a
    search of a failing status by connection and cause alone); None otherwise."""
    if search.status not in FAILING or not _tallied(tx, search):
        return None
    connections = None if search.connections is None else tuple(search.connections)
    stmt = _tallied_count(search.status, search.connection_id, search.cause, connections)
    return int(tx.execute(stmt).scalar_one())


def _tallied(tx: Tx, search: Search) -> bool:
    """Whether `inbox_failures` answers `search`: on SQLite (its triggers keep it), for a
    search by status, connection and cause alone."""
    return not dialect.is_postgresql(tx) and not any(
        value is not None
        for name, value in search
        if name not in ("status", "connection_id", "cause", "connections")
    )


def _tally_where(
    connection_id: str | None, cause: str | None, connections: Sequence[str] | None
) -> list[sa.ColumnElement[bool]]:
    found: list[sa.ColumnElement[bool]] = []
    if connection_id is not None:
        found.append(F.c.connection_id == connection_id)
    if cause is not None:
        found.append(F.c.cause == cause)
    return found + paging.within(F.c.connection_id, connections)


@functools.lru_cache(maxsize=64)
def _tallied_groups(key: SearchKey, statuses: tuple[str, ...]) -> sa.Select[Any]:
    """The biggest causes of `statuses` the search `key` finds, from the kept counts, each
    with the last error of its newest item of the connection read last (one range of the
    (status, error_cause, connection_id, received_at) index, read backwards), built once."""
    search = Search.of_key(key)
    total = sa.func.sum(F.c["count"]).label("total")
    groups = (
        sa.select(F.c.status, F.c.cause, total)
        .where(
            F.c.status.in_(statuses),
            F.c.cause != "",
            *_tally_where(search.connection_id, search.cause, search.connections),
        )
        .group_by(F.c.status, F.c.cause)
        .order_by(sa.desc("total"), F.c.status, F.c.cause)
        .limit(CAUSES)
        .subquery("groups")
    )
    example = (
        sa.select(T.c.last_error)
        .where(
            *search.where(),
            T.c.status == groups.c.status,
            T.c.error_cause == groups.c.cause,
        )
        .order_by(T.c.connection_id.desc(), T.c.received_at.desc())
        .limit(1)
        .correlate(groups)
        .scalar_subquery()
    )
    return sa.select(groups, example.label("example")).order_by(
        groups.c.total.desc(), groups.c.status, groups.c.cause
    )


@functools.lru_cache(maxsize=64)
def _tallied_count(
    status: str, connection_id: str | None, cause: str | None, connections: tuple[str, ...] | None
) -> sa.Select[Any]:
    """How many items of `status` the kept counts hold for these conditions (built once)."""
    return sa.select(sa.func.coalesce(sa.func.sum(F.c["count"]), 0)).where(
        F.c.status == status, *_tally_where(connection_id, cause, connections)
    )


class RecordRef(BaseModel):
    """A record named where another thing points at it: its kind and a label to show."""

    id: str
    kind: str | None = Field(description="contact, invoice or location (None: unknown)")
    label: str | None = Field(description="Its name, e-mail or number")
    exists: bool


def _label(kind: kinds.Kind[Any]) -> list[sa.ColumnElement[Any]]:
    table = kind.table
    if kind is kinds.INVOICE:
        return [table.c.number, table.c.stripe_invoice_id]
    if kind is kinds.CONTACT:
        return [table.c.name, table.c.email, table.c.stripe_customer_id]
    return [table.c.name, table.c.stripe_location_id]


def refs(tx: Tx, record_ids: Sequence[str]) -> dict[str, RecordRef]:
    """Each record id with its kind and label (unknown ids: `exists` False)."""
    found: dict[str, RecordRef] = {}
    for kind in kinds.KINDS.values():
        wanted = [r for r in record_ids if r.startswith(kind.prefix)]
        if not wanted:
            continue
        table = kind.table
        rows = tx.execute(sa.select(table.c.id, *_label(kind)).where(table.c.id.in_(wanted)))
        for row in rows:
            label = next((v for v in row[1:] if v), None)
            found[row.id] = RecordRef(id=row.id, kind=kind.name, label=label, exists=True)
    for record_id in record_ids:
        if record_id not in found:
            kind_name = next(
                (k.name for k in kinds.KINDS.values() if record_id.startswith(k.prefix)), None
            )
            found[record_id] = RecordRef(id=record_id, kind=kind_name, label=None, exists=False)
    return found


class Run(BaseModel):
    """A flow that ran on the event and the record it wrote."""

    flow: str
    record: RecordRef | None


class Advice(BaseModel):
    headline: str
    action: str
    flow: str | None = Field(description="The flow to open when the fix is there")


class Detail(BaseModel):
    """One event in full, as the console shows it: what to do about its error first."""

    event: inbox.Event
    advice: Advice | None
    payload: Any = Field(description="The event as it arrived (parsed JSON)")
    raw: str | None = Field(description="The bytes as text when they are not JSON")
    runs: list[Run]
    attempts: list[inbox.Attempt] = Field(description="Its failed attempts, oldest first")
    replayable: bool
    flows_version: int = Field(description="The flows version a replay would apply now")


def detail(tx: Tx, ref: str, *, connections: Sequence[str] | None = None) -> Detail:
    """One item by its number or Stripe event id, in full (404 when unknown)."""
    event = inbox.get(tx, ref, connections=connections)
    raw_bytes = inbox.payload(tx, event.id)
    payload: Any = None
    raw: str | None = None
    try:
        payload = json.loads(raw_bytes)
    except ValueError:
        raw = raw_bytes.decode("utf-8", errors="replace")
    found = refs(tx, event.records)
    runs = [
        Run(
            flow=flow,
            record=found[event.records[n]] if n < len(event.records) else None,
        )
        for n, flow in enumerate(event.flows)
    ]
    advice = causes.advise(event.last_error, event.status)
    return Detail(
        event=event,
        advice=None
        if advice is None
        else Advice(headline=advice.headline, action=advice.action, flow=advice.flow),
        payload=payload,
        raw=raw,
        runs=runs,
        attempts=inbox.attempts_of(tx, event.id),
        replayable=event.status not in ("pending", "processing"),
        flows_version=revisions.current_version(tx),
    )


def touching(
    tx: Tx,
    record_id: str,
    stripe_id: str | None,
    *,
    limit: int = 20,
    invoices_of: str | None = None,
) -> list[inbox.Event]:
    """The newest events that wrote a record (its flows' outcome) or are about its Stripe
    object (those that failed, too); with `invoices_of` (a contact), those of the contact's
    invoices too. Each condition is a range of an index: the invoices by contact, the links by
    record, the items by object id."""
    stmt = _touching(stripe=bool(stripe_id), invoices=invoices_of is not None)
    values = {"record_id": record_id, "stripe_id": stripe_id, "contact_id": invoices_of}
    rows = tx.execute(stmt, {**values, "limit": limit}).all()
    return [inbox.Event.model_validate(db.fields(r)) for r in rows]


@functools.cache
def _touching(*, stripe: bool, invoices: bool) -> sa.Select[Any]:
    """`touching`'s statement of each shape, built once (a record's page reads it at every
    view; building it again, with its cache key, cost about as much as running it)."""
    links = tables.inbox_item_records
    wrote = sa.select(links.c.item_id).where(links.c.record_id == sa.bindparam("record_id"))
    about: list[sa.ColumnElement[bool]] = [T.c.id.in_(wrote)]
    if stripe:
        about.append(T.c.object_id == sa.bindparam("stripe_id"))
    if invoices:
        invoices_ = tables.invoices
        theirs = invoices_.c.customer_id == sa.bindparam("contact_id")
        about.append(
            T.c.id.in_(
                sa.select(links.c.item_id).where(
                    links.c.record_id.in_(sa.select(invoices_.c.id).where(theirs))
                )
            )
        )
        about.append(T.c.object_id.in_(sa.select(invoices_.c.stripe_invoice_id).where(theirs)))
    return (
        sa.select(*inbox.SHOWN)
        .where(sa.or_(*about))
        .order_by(T.c.id.desc())
        .limit(sa.bindparam("limit"))
    )


def replay_one(
    tx: Tx, ref: str, *, actor: str, connections: Sequence[str] | None = None
) -> inbox.Event:
    """Queue one item again (see `inbox.replay`), with an audit entry naming who did."""
    event = inbox.replay(tx, ref, connections=connections)
    audit.record(
        tx,
        actor=actor,
        action="event.replayed",
        target=str(event.id),
        details={"event_id": event.event_id, "type": event.event_type},
    )
    return event
