"""Reading records, for every shell: one by id, or a page with the API's filters."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from snapshots import errors, ids, paging
from snapshots.records.kinds import KINDS, Kind, M
from snapshots.store import dialect
from snapshots.store.db import Tx


def get(tx: Tx, kind: Kind[M], record_id: str, *, connections: Sequence[str] | None = None) -> M:
    """One record; 404 when unknown, or of a connection outside `connections` (when given)."""
    row = one_row(tx, kind, record_id, connections=connections)
    if row is None:
        raise errors.NotFound(f"no {kind.name} {record_id}")
    return kind.public(row)


def one_row(
    tx: Tx, kind: Kind[Any], record_id: str, *, connections: Sequence[str] | None = None
) -> Any:
    """A record's row, or None (unknown, or of a connection outside `connections`)."""
    if not ids.plausible(record_id):
        return None
    if connections is None:
        return tx.execute(_by_id(kind), {"record_id": record_id}).one_or_none()
    t = kind.table
    stmt = sa.select(t).where(t.c.id == record_id, *paging.within(t.c.connection_id, connections))
    return tx.execute(stmt).one_or_none()


@functools.cache
def _by_id(kind: Kind[Any]) -> sa.Select[Any]:
    """A record by id, built once per kind: a statement of every column of a record made
    afresh (its cache key walks them all) cost about as much as SQLite reading the row."""
    return sa.select(kind.table).where(kind.table.c.id == sa.bindparam("record_id"))


def _matching(tx: Tx, kind: Kind[Any], text: str) -> sa.ColumnElement[bool]:
    """A record's id or Stripe id (exact), or the start of one of its searched columns (any
    case): each a lookup in an index, never a scan."""
    if len(text) > 512 or not text.isprintable():
        raise errors.BadRequest(
            "search: at most 512 printable characters", code="parameter_invalid"
        )
    t = kind.table
    if text.startswith(kind.prefix):
        return t.c.id == text
    if kind.stripe_prefix and text.startswith(kind.stripe_prefix):
        return t.c[kind.stripe_id] == text
    lowered = text.lower()
    return sa.or_(
        *(dialect.starts_with(tx, sa.func.lower(t.c[name]), lowered) for name in kind.searched)
    )


def _where(
    tx: Tx,
    kind: Kind[Any],
    filters: dict[str, Any] | None,
    updated_since: float | None,
    connections: Sequence[str] | None,
    search: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The conditions of a page of records (see `page`)."""
    t = kind.table
    where = [t.c[name] == value for name, value in (filters or {}).items() if value is not None]
    if search is not None and search.strip():
        where.append(_matching(tx, kind, search.strip()))
    where += paging.within(t.c.connection_id, connections)
    if updated_since is not None:
        where.append(t.c.updated_at >= updated_since)
    return where


def page(
    tx: Tx,
    kind: Kind[M],
    *,
    limit: int = 20,
    starting_after: str | None = None,
    order: paging.Order = "desc",
    filters: dict[str, Any] | None = None,
    updated_since: float | None = None,
    connections: Sequence[str] | None = None,
    search: str | None = None,
) -> paging.Page[M]:
    """A page of records in creation order (newest first unless `order` is "asc"), only those
    whose columns equal `filters` (None values are ignored) and, with `updated_since` (unix
    seconds), updated at or after it; `starting_after` is the id of the last record of the
    previous page. With `connections`, only records of those connections. With `search`, only
    those whose id or Stripe id it is, or whose searched columns (a contact's name and e-mail)
    start with it, in any case."""
    t = kind.table
    where = _where(tx, kind, filters, updated_since, connections, search)
    return paging.paginate(
        tx,
        t,
        kind.name,
        kind.public,
        limit=limit,
        starting_after=starting_after,
        where=where,
        order=order,
        columns=[*kind.shown, t.c.seq],
    )


# The record an event is about: the invoice of `invoice.*`, the contact of `customer.*`
# (a subscription's or a source's customer too), the location of `terminal.location.*`.
SUBJECTS = (("terminal.location.", "location"), ("invoice.", "invoice"), ("customer.", "contact"))
OBJECTS = {"contact": "customer", "invoice": "invoice", "location": "terminal.location"}


def subject_kind(event_type: str) -> str | None:
    """The kind of record an event type is about, or None (`charge.refunded`)."""
    for prefix, kind in SUBJECTS:
        if event_type.startswith(prefix):
            return kind
    return None


def subject(tx: Tx, connection_id: str, event: dict[str, Any]) -> tuple[str, Any] | None:
    """(kind, record as the API shows it) of the record `event` is about, when it exists."""
    name = subject_kind(str(event.get("type", "")))
    if name is None:
        return None
    obj = event.get("data", {}).get("object", {})
    stripe_id = obj.get("id") if obj.get("object") == OBJECTS[name] else obj.get("customer")
    if not isinstance(stripe_id, str):
        return None
    kind = KINDS[name]
    t = kind.table
    row = tx.execute(
        sa.select(*kind.shown).where(
            t.c.connection_id == connection_id, t.c[kind.stripe_id] == stripe_id
        )
    ).first()
    return None if row is None else (name, kind.public(row))


def current(tx: Tx, kind_name: str, record_id: str) -> Any:
    """A record as the API shows it now, or None when it is gone."""
    kind = KINDS[kind_name]
    row = tx.execute(sa.select(*kind.shown).where(kind.table.c.id == record_id)).first()
    return None if row is None else kind.public(row)


def page_json(
    tx: Tx,
    kind: Kind[M],
    *,
    limit: int = 20,
    starting_after: str | None = None,
    order: paging.Order = "desc",
    filters: dict[str, Any] | None = None,
    updated_since: float | None = None,
    connections: Sequence[str] | None = None,
) -> bytes:
    """`page` as the API answers it, JSON text: each row turned straight into what its public
    model would dump (`Kind.row_json`) and encoded once (orjson), no model in between."""
    t = kind.table
    where = _where(tx, kind, filters, updated_since, connections)
    found = paging.paginate(
        tx,
        t,
        kind.name,
        kind.row_json,
        limit=limit,
        starting_after=starting_after,
        where=where,
        order=order,
        columns=kind.json_select,
    )
    try:
        return orjson.dumps(
            {"data": found.data, "has_more": found.has_more}, option=orjson.OPT_UTC_Z
        )
    except orjson.JSONEncodeError:  # an integer over 64 bits: the models' encoder takes it
        slow = page(
            tx,
            kind,
            limit=limit,
            starting_after=starting_after,
            order=order,
            filters=filters,
            updated_since=updated_since,
            connections=connections,
        )
        return slow.model_dump_json().encode()
