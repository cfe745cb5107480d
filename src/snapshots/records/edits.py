"""Writes through the API. An API write has an ordering key like an event's
(`ordering.api_write`), stamped in `field_versions` on each field, JSON key (`metadata.tier`)
and tag it sets: an event Stripe made later overwrites the edit, an older one (late, retried,
replayed) does not. Fields Stripe owns are read-only and the refusal says why (`Kind.read_only`).
Every function works inside the caller's transaction and returns the record's public model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from snapshots import errors, ids, paging
from snapshots.records import lookup, models, values
from snapshots.records.kinds import CONTACT, LOCATION, MERGED, Kind, M
from snapshots.records.ordering import Key
from snapshots.store import dialect
from snapshots.store.db import Tx


def refuse_read_only(kind: Kind[Any], body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field of `body` that the API may not change, and why."""
    for name in body:
        reason = kind.read_only.get(name)
        if reason is not None:
            raise errors.BadRequest(f"{name} {reason}", code="read_only_field")


def _apply(
    tx: Tx,
    kind: Kind[Any],
    row: Any,
    changes: dict[str, Any],
    key: Key,
    *,
    unstamped: dict[str, Any] | None = None,
) -> Any:
    """Write an API write's `changes` to `row`; returns the row as stored.

    `metadata` and `custom` merge key by key (None removes a key) and `tags` replaces the list;
    every field, key and tag set is stamped with `key` (kinds without `field_versions` only keep
    whole-record ordering). `updated_at` moves only when a value changes."""
    current = row._mapping
    stamps = dict(current["field_versions"] or {}) if kind.stamped else {}
    stamp = key.stamp
    written: dict[str, Any] = dict(unstamped or {})
    for name, value in changes.items():
        if name in MERGED:
            merged = values.copy(current[name])
            for inner_key, inner in value.items():
                stamps[f"{name}.{inner_key}"] = stamp
                if inner is None:
                    merged.pop(inner_key, None)
                else:
                    merged[inner_key] = inner
            written[name] = merged
        elif name == "tags":
            for tag in {*(current["tags"] or []), *value}:
                stamps[f"tag:{tag}"] = stamp
            written[name] = list(value)
        else:
            stamps[name] = stamp
            written[name] = value
    changed = any(
        (current[name] or {} if name in MERGED else current[name]) != value
        for name, value in written.items()
    )
    if not written:
        return row
    if kind.stamped:
        written["field_versions"] = stamps
    tx.execute(
        lookup.update_by_seq(kind),
        written
        | {"updated_at": time.time() if changed else current["updated_at"], "b_seq": row.seq},
    )
    return tx.execute(sa.select(kind.table).where(kind.table.c.seq == row.seq)).one()


def owner(connections: Sequence[str] | None, connection_id: str | None) -> str | None:
    """The connection a record made through the API belongs to: the one named (which a key
    limited to connections must be allowed), else a limited key's only connection, else none
    (until the first event about its Stripe object claims it)."""
    if connection_id is not None:
        if connections is not None and connection_id not in connections:
            raise errors.NotFound(f"no connection {connection_id}")
        return connection_id
    if connections is None:
        return None
    if len(connections) == 1:
        return connections[0]
    raise errors.BadRequest(
        "this API key is limited to several connections: give connection_id",
        code="connection_required",
    )


def _insert_bare(
    tx: Tx, kind: Kind[Any], fields: dict[str, Any], connection_id: str | None = None
) -> Any:
    now = time.time()
    record_id = ids.new(kind.prefix)
    tx.execute(
        kind.table.insert().values(
            kind.defaults
            | fields
            | {
                "id": record_id,
                "connection_id": connection_id,
                "created_at": now,
                "updated_at": now,
            }
        )
    )
    return tx.execute(sa.select(kind.table).where(kind.table.c.id == record_id)).one()


def upsert_contact(
    tx: Tx,
    *,
    fields: dict[str, Any],
    key: Key,
    connections: Sequence[str] | None = None,
    connection_id: str | None = None,
) -> tuple[bool, models.ContactPublic]:
    """`POST /v1/customers/upsert`: the contact of `stripe_customer_id` (any connection), else
    the oldest unarchived contact with `email` (one not linked to a Stripe customer when a
    customer id is given, which then links it), updated with `fields`; or a new contact, not
    tied to a connection until the first event about its customer claims it. With
    `connections`, only their contacts match, and a new one belongs to one of them (`owner`).

    Returns (created, the contact)."""
    t = CONTACT.table
    mine = paging.within(t.c.connection_id, connections)
    customer_id = fields.get("stripe_customer_id")
    email = fields.get("email")
    if not customer_id and not email:
        raise errors.BadRequest("give stripe_customer_id or email to match a contact on")
    # Two upserts of one new contact must not both create it.
    dialect.lock_names(tx, customer_id and f"contact:{customer_id}", email and f"email:{email}")
    row = None
    if customer_id:
        stmt = sa.select(t).where(t.c.stripe_customer_id == customer_id, *mine)
        row = tx.execute(dialect.locked(tx, stmt.order_by(t.c.seq).limit(1))).first()
    if row is None and email:
        stmt = sa.select(t).where(t.c.email == email, t.c.archived.is_(False), *mine)
        if customer_id:
            stmt = stmt.where(t.c.stripe_customer_id.is_(None))
        row = tx.execute(dialect.locked(tx, stmt.order_by(t.c.seq).limit(1))).first()
    changes = {k: v for k, v in fields.items() if k != "stripe_customer_id"}
    link: dict[str, Any] = {}
    created = row is None
    if row is None:
        made_for = owner(connections, connection_id)
        row = _insert_bare(tx, CONTACT, {"stripe_customer_id": customer_id}, made_for)
    elif customer_id and row.stripe_customer_id is None:
        link = {"stripe_customer_id": customer_id}
    row = _apply(tx, CONTACT, row, changes, key, unstamped=link)
    return created, models.ContactPublic.model_validate(row._mapping)


def create_location(
    tx: Tx,
    *,
    fields: dict[str, Any],
    key: Key,
    connections: Sequence[str] | None = None,
    connection_id: str | None = None,
) -> models.LocationPublic:
    """`POST /v1/locations`: a location of Snapshots' own, not linked to Stripe. Its country
    defaults to its address's; its connection is given by `owner`."""
    address = fields.get("address")
    country = address.get("country") if isinstance(address, dict) else None
    if (
        fields.get("country") is None
        and isinstance(country, str)
        and len(country) == 2
        and country.isalpha()
    ):
        fields = fields | {"country": country.upper()}
    row = _insert_bare(
        tx, LOCATION, {"name": fields.get("name")}, owner(connections, connection_id)
    )
    return LOCATION.public(_apply(tx, LOCATION, row, fields, key))


def edit(
    tx: Tx,
    kind: Kind[M],
    record_id: str,
    *,
    changes: dict[str, Any],
    key: Key,
    connections: Sequence[str] | None = None,
) -> M:
    """`PATCH`: change some fields of a record (see `_apply`); 404 when it is unknown, or of a
    connection outside `connections`."""
    row = lookup.fetch(tx, kind, record_id, connections=connections)
    return kind.public(_apply(tx, kind, row, changes, key))


def archive(
    tx: Tx,
    kind: Kind[M],
    record_id: str,
    *,
    key: Key,
    connections: Sequence[str] | None = None,
) -> M:
    """`DELETE`: archive a record (archiving an archived record changes nothing). A later
    event about its Stripe object that says it exists brings it back, as for any field."""
    row = lookup.fetch(tx, kind, record_id, connections=connections)
    if not row.archived:
        row = _apply(tx, kind, row, {"archived": True}, key)
    return kind.public(row)
