"""Finding records: by their own id, by their Stripe object, a contact by email, and the bare
record a partial writer needs when none exists yet. Lookups made while writing lock the row on
PostgreSQL until the transaction ends; hot-path statements are built once, with bound
parameters (building a statement with literal values costs more than running it)."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from snapshots import errors, ids
from snapshots.records.kinds import CONTACT, Kind
from snapshots.store import dialect
from snapshots.store.db import Tx


@functools.cache
def _lookup(kind: Kind[Any], columns: tuple[str, ...], lock: bool) -> sa.Select[Any]:
    t = kind.table
    stmt = sa.select(t).where(*(t.c[name] == sa.bindparam(f"b_{name}") for name in columns))
    return stmt.with_for_update() if lock else stmt


@functools.cache
def update_by_seq(kind: Kind[Any]) -> sa.Update:
    """UPDATE of one record by its `seq` (bound as `b_seq`)."""
    return kind.table.update().where(kind.table.c.seq == sa.bindparam("b_seq"))


def find(tx: Tx, kind: Kind[Any], **criteria: Any) -> Any:
    """The row matching `criteria` (column=value), locked on PostgreSQL until commit."""
    stmt = _lookup(kind, tuple(criteria), dialect.is_postgresql(tx))
    return tx.execute(stmt, {f"b_{k}": v for k, v in criteria.items()}).one_or_none()


def fetch(
    tx: Tx, kind: Kind[Any], record_id: str, *, connections: Sequence[str] | None = None
) -> Any:
    """The record `record_id`, locked on PostgreSQL until commit; 404 when unknown, or of a
    connection outside `connections` (when given)."""
    row = find(tx, kind, id=record_id) if ids.plausible(record_id) else None
    if row is None or (connections is not None and row.connection_id not in connections):
        raise errors.NotFound(f"no {kind.name} {record_id}")
    return row


@functools.cache
def _unlinked_by_email(lock: bool) -> sa.Select[Any]:
    t = CONTACT.table
    stmt = (
        sa.select(t)
        .where(
            t.c.email == sa.bindparam("b_email"),
            t.c.stripe_customer_id.is_(None),
            t.c.archived.is_(False),
            sa.or_(
                t.c.connection_id == sa.bindparam("b_connection_id"), t.c.connection_id.is_(None)
            ),
        )
        .order_by(t.c.seq)
        .limit(1)
    )
    return stmt.with_for_update() if lock else stmt


def unlinked_by_email(tx: Tx, email: str, connection_id: str) -> Any:
    """The oldest unarchived contact with `email` not linked to a Stripe customer yet, of this
    connection or of none."""
    stmt = _unlinked_by_email(dialect.is_postgresql(tx))
    return tx.execute(stmt, {"b_email": email, "b_connection_id": connection_id}).first()


@functools.cache
def _unclaimed_by_customer(lock: bool) -> sa.Select[Any]:
    t = CONTACT.table
    stmt = (
        sa.select(t)
        .where(t.c.stripe_customer_id == sa.bindparam("b_customer"), t.c.connection_id.is_(None))
        .order_by(t.c.seq)
        .limit(1)
    )
    return stmt.with_for_update() if lock else stmt


def unclaimed(tx: Tx, customer_id: str) -> Any:
    """A contact the API made for a Stripe customer (no connection yet): the first event about
    that customer, on whichever connection, claims it."""
    stmt = _unclaimed_by_customer(dialect.is_postgresql(tx))
    return tx.execute(stmt, {"b_customer": customer_id}).first()


def contact_of(
    tx: Tx,
    *,
    connection_id: str,
    customer_id: str,
    email: Any,
    match_on: tuple[str, ...],
) -> Any:
    """The contact of a Stripe customer: by its id, then (if `email` is in `match_on`) the
    unarchived contact with that email not linked to any Stripe customer yet."""
    row = None
    if "stripe_customer_id" in match_on:
        row = find(tx, CONTACT, connection_id=connection_id, stripe_customer_id=customer_id)
        if row is None:
            row = unclaimed(tx, customer_id)
    if row is None and "email" in match_on and isinstance(email, str) and email:
        row = unlinked_by_email(tx, email, connection_id)
    return row


def target(
    tx: Tx, kind: Kind[Any], *, connection_id: str, match: dict[str, Any], test: bool
) -> Any:
    """The contact or location that `match` names (created bare when missing, so a tag, a field
    or an activity is never lost; a later event about the object itself fills it in)."""
    t = kind.table
    stripe_id = match.get(kind.stripe_id)
    email = match.get("email") if kind.by_email else None
    row = None
    if stripe_id:
        row = find(tx, kind, connection_id=connection_id, **{kind.stripe_id: stripe_id})
        if row is None and kind.by_email:
            row = unclaimed(tx, stripe_id)
    if row is None and isinstance(email, str) and email:
        row = unlinked_by_email(tx, email, connection_id)
        if row is None and not stripe_id:
            row = tx.execute(
                sa.select(t)
                .where(t.c.email == email, t.c.connection_id == connection_id)
                .order_by(t.c.seq)
                .limit(1)
            ).first()
    if row is not None:
        return row
    if not stripe_id and not email:
        what = "a Stripe customer id or an email" if kind.by_email else "a Stripe location id"
        raise errors.DeadLetter(f"the event names no {kind.name}: map {what}", code="no_id")
    now = time.time()
    values: dict[str, Any] = kind.defaults | {
        "id": ids.new(kind.prefix),
        "connection_id": connection_id,
        kind.stripe_id: stripe_id or None,
        "test": test,
        "created_at": now,
        "updated_at": now,
    }
    if kind.by_email:
        values["email"] = email or None
    tx.execute(t.insert().values(**values))
    return find(tx, kind, connection_id=connection_id, id=values["id"])
