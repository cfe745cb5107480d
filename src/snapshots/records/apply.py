"""Applying events to records: whole-record upserts (a contact, an invoice, a location from
its Stripe object), and the partial writes of `set_fields` and tags, each field settling by
its own ordering key (see `ordering`). Every function writes inside the caller's transaction
and returns the id of the record it wrote."""

from __future__ import annotations

import time
from typing import Any

from snapshots import errors, ids
from snapshots.records import lookup, ordering, values
from snapshots.records.kinds import CONTACT, INVOICE, LOCATION, Kind
from snapshots.records.ordering import Key
from snapshots.store.db import Tx


def _write(
    tx: Tx,
    kind: Kind[Any],
    row: Any,
    fields: dict[str, Any],
    key: Key,
    *,
    connection_id: str,
    test: bool,
) -> str:
    now = time.time()
    if row is None:
        record_id = ids.new(kind.prefix)
        tx.execute(
            kind.table.insert(),
            kind.defaults
            | values.merge(fields, None)
            | key.columns()
            | {
                "id": record_id,
                "connection_id": connection_id,
                "test": test,
                "created_at": now,
                "updated_at": now,
            },
        )
        return record_id
    if key.beats(row):
        current = row._mapping
        fields = values.keep_newer_fields(fields, current, key.stamp)
        changed = current["connection_id"] != connection_id or any(
            current[name] != value for name, value in fields.items()
        )
        # A newer event that changes nothing (a re-sync) moves the key, not `updated_at`.
        tx.execute(
            lookup.update_by_seq(kind),
            fields
            | key.columns()
            | {
                "connection_id": connection_id,
                "updated_at": now if changed else current["updated_at"],
                "b_seq": row.seq,
            },
        )
    return str(row.id)


def upsert_contact(
    tx: Tx,
    *,
    connection_id: str,
    fields: dict[str, Any],
    key: Key,
    archived: bool = False,
    match_on: tuple[str, ...] = ("stripe_customer_id", "email"),
    test: bool = False,
) -> str:
    """Create or update the contact of a Stripe customer; returns the contact id."""
    cleaned = values.clean(fields, CONTACT.fields) | {"archived": archived}
    customer_id = cleaned.get("stripe_customer_id")
    if not customer_id:
        raise errors.DeadLetter("the customer has no id to match a contact on", code="no_id")
    row = lookup.contact_of(
        tx,
        connection_id=connection_id,
        customer_id=customer_id,
        email=cleaned.get("email"),
        match_on=match_on,
    )
    return _write(tx, CONTACT, row, cleaned, key, connection_id=connection_id, test=test)


def upsert_invoice(
    tx: Tx,
    *,
    connection_id: str,
    fields: dict[str, Any],
    key: Key,
    archived: bool = False,
    test: bool = False,
) -> str:
    """Log an invoice (create or update) and link it to its customer's contact."""
    cleaned = values.clean(fields, INVOICE.fields) | {"archived": archived}
    invoice_id = cleaned.get("stripe_invoice_id")
    if not invoice_id:
        raise errors.DeadLetter("the invoice has no id", code="no_id")
    customer = cleaned.get("stripe_customer_id")
    if customer:
        # The invoice's customer fields make or refresh the contact until an event about the
        # customer itself arrives (BORROWED loses to OWN whatever the times).
        cleaned["customer_id"] = upsert_contact(
            tx,
            connection_id=connection_id,
            key=key.borrowed(),
            fields={
                "stripe_customer_id": customer,
                "email": fields.get("customer_email"),
                "name": fields.get("customer_name"),
                "phone": fields.get("customer_phone"),
                "address": fields.get("customer_address"),
                "livemode": fields.get("livemode"),
            },
            test=test,
        )
    row = lookup.find(tx, INVOICE, connection_id=connection_id, stripe_invoice_id=invoice_id)
    return _write(tx, INVOICE, row, cleaned, key, connection_id=connection_id, test=test)


def upsert_location(
    tx: Tx,
    *,
    connection_id: str,
    fields: dict[str, Any],
    key: Key,
    archived: bool = False,
    test: bool = False,
) -> str:
    cleaned = values.clean(fields, LOCATION.fields) | {"archived": archived}
    location_id = cleaned.get("stripe_location_id")
    if not location_id:
        raise errors.DeadLetter("the location has no id", code="no_id")
    row = lookup.find(tx, LOCATION, connection_id=connection_id, stripe_location_id=location_id)
    return _write(tx, LOCATION, row, cleaned, key, connection_id=connection_id, test=test)


def set_fields(
    tx: Tx,
    kind: Kind[Any],
    *,
    connection_id: str,
    match: dict[str, Any],
    fields: dict[str, Any],
    key: Key,
    test: bool = False,
) -> str:
    """Set some fields of a contact or location. Each field keeps the key of the event that
    set it last, so out-of-order events settle per field, whatever else writes the record."""
    row = lookup.target(tx, kind, connection_id=connection_id, match=match, test=test)
    stamps = dict(row.field_versions or {})
    changed = {}
    for name, value in values.clean(fields, kind.fields).items():
        if name == kind.stripe_id and name in match:
            continue
        if ordering.take(stamps, name, key.stamp):
            changed[name] = value
    if changed:
        tx.execute(
            lookup.update_by_seq(kind),
            values.merge(changed, row._mapping)
            | {"field_versions": stamps, "updated_at": time.time(), "b_seq": row.seq},
        )
    return str(row.id)


def change_tags(
    tx: Tx,
    *,
    connection_id: str,
    match: dict[str, Any],
    tags: list[str],
    present: bool,
    key: Key,
    test: bool = False,
) -> str:
    """Add (`present`) or remove tags on a contact, each tag settling by its own key."""
    row = lookup.target(tx, CONTACT, connection_id=connection_id, match=match, test=test)
    stamps = dict(row.field_versions or {})
    current = list(row.tags or [])
    for tag in tags:
        if not ordering.take(stamps, f"tag:{tag}", key.stamp):
            continue
        if present and tag not in current:
            current.append(tag)
        elif not present and tag in current:
            current.remove(tag)
    tx.execute(
        lookup.update_by_seq(CONTACT),
        {
            "tags": current,
            "field_versions": stamps,
            "updated_at": time.time() if current != list(row.tags or []) else row.updated_at,
            "b_seq": row.seq,
        },
    )
    return str(row.id)
