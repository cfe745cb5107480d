"""Records: the locations, contacts and invoices Snapshots keeps, and the ordering rule.

Every record remembers the version of the newest event applied to it,
`(authority, event created second, rank, event id)`. An event applies only when its version is
at least the stored one, so an older event never overwrites newer state. `rank` settles
same-second ties by the object's own state order (an invoice never goes from `paid` back to
`open`), then by event type; the event id makes the order total, so any arrival order of the
same events ends in the same records. `authority` is 1 for an event about the record's own
Stripe object and 0 for fields borrowed from another object (a contact made from an invoice's
customer fields), so any event about the customer itself beats every invoice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from snapshots import errors, ids
from snapshots.store import tables
from snapshots.store.db import Database


@dataclass(frozen=True, order=True)
class Version:
    authority: int  # OWN or BORROWED
    created: int
    rank: int
    event_id: str


OWN = 1  # the event is about the record's own Stripe object
BORROWED = 0  # the fields come from another object (a contact from an invoice)


CONTACT_FIELDS = frozenset(
    {
        "custom",
        "stripe_customer_id",
        "email",
        "name",
        "phone",
        "address",
        "metadata",
        "livemode",
        "stripe_created",
    }
)
INVOICE_FIELDS = frozenset(
    {
        "custom",
        "stripe_invoice_id",
        "stripe_customer_id",
        "number",
        "amount_due",
        "amount_paid",
        "amount_remaining",
        "total",
        "currency",
        "status",
        "payment_status",
        "customer_email",
        "customer_name",
        "hosted_invoice_url",
        "due_date",
        "paid_at",
        "metadata",
        "livemode",
        "stripe_created",
    }
)
LOCATION_FIELDS = frozenset(
    {
        "stripe_location_id",
        "name",
        "address",
        "country",
        "currency",
        "metadata",
        "custom",
        "livemode",
    }
)
# JSON fields a flow may write into by path (`address.city`, `metadata.tier`, `custom.plan`).
NESTED = frozenset({"address", "metadata", "custom"})
# Fields of an invoice used only to make a missing contact.
INVOICE_CONTACT_FIELDS = frozenset({"customer_phone", "customer_address"})

KINDS: dict[str, sa.Table] = {
    "contact": tables.contacts,
    "invoice": tables.invoices,
    "location": tables.locations,
}
PREFIXES = {"contact": "con_", "invoice": "inv_", "location": "loc_"}


def _is_newer(version: Version, row: Any) -> bool:
    if row.applied_created is None:
        return True
    stored = Version(
        row.applied_authority, row.applied_created, row.applied_rank, row.applied_event_id
    )
    return version >= stored


def _version_values(version: Version) -> dict[str, Any]:
    return {
        "applied_authority": version.authority,
        "applied_created": version.created,
        "applied_rank": version.rank,
        "applied_event_id": version.event_id,
    }


# Hot-path statements are built once, with bound parameters: building a statement with
# literal values costs more than running it.


@functools.cache
def _lookup(table: str, columns: tuple[str, ...], lock: bool) -> sa.Select[Any]:
    t = tables.metadata.tables[table]
    stmt = sa.select(t).where(*(t.c[name] == sa.bindparam(f"b_{name}") for name in columns))
    return stmt.with_for_update() if lock else stmt


@functools.cache
def _unlinked_by_email(lock: bool) -> sa.Select[Any]:
    t = tables.contacts
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


@functools.cache
def _update_by_seq(table: str) -> sa.Update:
    t = tables.metadata.tables[table]
    return t.update().where(t.c.seq == sa.bindparam("b_seq"))


def _find(conn: Connection, table: sa.Table, **criteria: Any) -> Any:
    """The row matching `criteria` (column=value), locked on PostgreSQL until commit."""
    stmt = _lookup(table.name, tuple(criteria), conn.dialect.name == "postgresql")
    return conn.execute(stmt, {f"b_{k}": v for k, v in criteria.items()}).one_or_none()


def _clean(fields: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The fields a record kind has; a dotted target (`address.city`) stays as it is, to be
    merged into its JSON field by `_merge`."""
    values = {k: v for k, v in fields.items() if k in allowed or k.split(".", 1)[0] in allowed}
    for name in ("metadata", "custom"):
        if name in values and not isinstance(values[name], dict):
            values[name] = {} if name == "metadata" else None
    return values


def _merge(values: dict[str, Any], stored: Any) -> dict[str, Any]:
    """Fold dotted targets into their JSON field: over the field's mapped value when the flow
    maps it whole, else over what the record holds (a flow may set `metadata.tier` alone)."""
    dotted = [k for k in values if "." in k]
    if not dotted:
        return values
    merged = {k: v for k, v in values.items() if "." not in k}
    for key in dotted:
        column, *path = key.split(".")
        base = (
            merged.get(column) if column in merged else (None if stored is None else stored[column])
        )
        target = merged[column] = _copy(base)
        for part in path[:-1]:
            inner = target.get(part)
            target[part] = inner = dict(inner) if isinstance(inner, dict) else {}
            target = inner
        target[path[-1]] = values[key]
    return merged


def _copy(value: Any) -> dict[str, Any]:
    return (
        {k: (_copy(v) if isinstance(v, dict) else v) for k, v in value.items()}
        if isinstance(value, dict)
        else {}
    )


def _write(
    conn: Connection,
    table: sa.Table,
    kind: str,
    row: Any,
    values: dict[str, Any],
    version: Version,
    *,
    connection_id: str,
    test: bool,
) -> str:
    now = time.time()
    if row is None:
        values = _merge(values, None)
        record_id = ids.new(PREFIXES[kind])
        defaults: dict[str, Any] = {"metadata": {}}
        if kind == "contact":
            defaults["tags"] = []
        conn.execute(
            table.insert(),
            defaults
            | values
            | _version_values(version)
            | {
                "id": record_id,
                "connection_id": connection_id,
                "test": test,
                "created_at": now,
                "updated_at": now,
            },
        )
        return record_id
    if _is_newer(version, row):
        current = row._mapping
        values = _keep_newer_fields(values, current, _stamp(version))
        changed = current["connection_id"] != connection_id or any(
            current[name] != value for name, value in values.items()
        )
        # A newer event that changes nothing (a re-sync) moves the version, not `updated_at`.
        conn.execute(
            _update_by_seq(table.name),
            values
            | _version_values(version)
            | {
                "connection_id": connection_id,
                "updated_at": now if changed else current["updated_at"],
                "b_seq": row.seq,
            },
        )
    return str(row.id)


def _keep_newer_fields(values: dict[str, Any], current: Any, stamp: list[Any]) -> dict[str, Any]:
    """`values` (merged into their JSON fields) without what a newer `set_fields` wrote: its
    fields and its paths inside JSON fields (`custom.plan`) stay as it left them."""
    stamps = current.get("field_versions")
    if not stamps:
        return _merge(values, current)
    newer = {key for key, set_by in stamps.items() if not key.startswith("tag:") and set_by > stamp}
    merged = _merge({k: v for k, v in values.items() if k not in newer}, current)
    for key in newer:
        column, dot, path = key.partition(".")
        if not dot or column not in merged or not isinstance(merged[column], dict):
            continue
        stored: Any = current[column]
        target = merged[column]
        parts = path.split(".")
        for part in parts[:-1]:
            stored = stored.get(part) if isinstance(stored, dict) else None
            inner = target.get(part)
            target[part] = inner = dict(inner) if isinstance(inner, dict) else {}
            target = inner
        if isinstance(stored, dict) and parts[-1] in stored:
            target[parts[-1]] = stored[parts[-1]]
        else:
            target.pop(parts[-1], None)
    return merged


def _find_contact(
    conn: Connection,
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
        row = _find(
            conn, tables.contacts, connection_id=connection_id, stripe_customer_id=customer_id
        )
    if row is None and "stripe_customer_id" in match_on:
        row = _unclaimed_contact(conn, customer_id)
    if row is None and "email" in match_on and isinstance(email, str) and email:
        stmt = _unlinked_by_email(conn.dialect.name == "postgresql")
        row = conn.execute(stmt, {"b_email": email, "b_connection_id": connection_id}).one_or_none()
    return row


@functools.cache
def _unclaimed_by_customer(lock: bool) -> sa.Select[Any]:
    t = tables.contacts
    stmt = (
        sa.select(t)
        .where(t.c.stripe_customer_id == sa.bindparam("b_customer"), t.c.connection_id.is_(None))
        .order_by(t.c.seq)
        .limit(1)
    )
    return stmt.with_for_update() if lock else stmt


def _unclaimed_contact(conn: Connection, customer_id: str) -> Any:
    """A contact the API made for a Stripe customer (no connection yet): the first event about
    that customer, on whichever connection, claims it."""
    stmt = _unclaimed_by_customer(conn.dialect.name == "postgresql")
    return conn.execute(stmt, {"b_customer": customer_id}).first()


def upsert_contact(
    conn: Connection,
    *,
    connection_id: str,
    fields: dict[str, Any],
    version: Version,
    archived: bool = False,
    match_on: tuple[str, ...] = ("stripe_customer_id", "email"),
    test: bool = False,
) -> str:
    """Create or update the contact of a Stripe customer; returns the contact id."""
    values = _clean(fields, CONTACT_FIELDS) | {"archived": archived}
    customer_id = values.get("stripe_customer_id")
    if not customer_id:
        raise errors.DeadLetter("the customer has no id to match a contact on", code="no_id")
    row = _find_contact(
        conn,
        connection_id=connection_id,
        customer_id=customer_id,
        email=values.get("email"),
        match_on=match_on,
    )
    return _write(
        conn,
        tables.contacts,
        "contact",
        row,
        values,
        version,
        connection_id=connection_id,
        test=test,
    )


def upsert_invoice(
    conn: Connection,
    *,
    connection_id: str,
    fields: dict[str, Any],
    version: Version,
    archived: bool = False,
    test: bool = False,
) -> str:
    """Log an invoice (create or update) and link it to its customer's contact."""
    t = tables.invoices
    values = _clean(fields, INVOICE_FIELDS) | {"archived": archived}
    invoice_id = values.get("stripe_invoice_id")
    if not invoice_id:
        raise errors.DeadLetter("the invoice has no id", code="no_id")
    customer = values.get("stripe_customer_id")
    if customer:
        # The invoice's customer fields make or refresh the contact until an event about the
        # customer itself arrives (BORROWED loses to OWN whatever the times).
        values["customer_id"] = upsert_contact(
            conn,
            connection_id=connection_id,
            version=Version(BORROWED, version.created, 0, version.event_id),
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
    row = _find(conn, t, connection_id=connection_id, stripe_invoice_id=invoice_id)
    return _write(conn, t, "invoice", row, values, version, connection_id=connection_id, test=test)


def upsert_location(
    conn: Connection,
    *,
    connection_id: str,
    fields: dict[str, Any],
    version: Version,
    archived: bool = False,
    test: bool = False,
) -> str:
    t = tables.locations
    values = _clean(fields, LOCATION_FIELDS) | {"archived": archived}
    location_id = values.get("stripe_location_id")
    if not location_id:
        raise errors.DeadLetter("the location has no id", code="no_id")
    row = _find(conn, t, connection_id=connection_id, stripe_location_id=location_id)
    return _write(conn, t, "location", row, values, version, connection_id=connection_id, test=test)


def _stamp(version: Version) -> list[Any]:
    return [version.authority, version.created, version.rank, version.event_id]


def _take(stamps: dict[str, Any], key: str, stamp: list[Any]) -> bool:
    """Stamp `key` as written by `stamp`, unless a newer write holds it (then False)."""
    if key in stamps and stamps[key] > stamp:
        return False
    stamps[key] = stamp
    return True


def _target(
    conn: Connection, kind: str, *, connection_id: str, match: dict[str, Any], test: bool
) -> Any:
    """The contact or location that `match` names (created bare when missing, so a tag, a field
    or an activity is never lost; a later event about the object itself fills it in)."""
    t = KINDS[kind]
    key = "stripe_customer_id" if kind == "contact" else "stripe_location_id"
    stripe_id = match.get(key)
    row = None
    if stripe_id:
        row = _find(conn, t, connection_id=connection_id, **{key: stripe_id})
        if row is None and kind == "contact":
            row = _unclaimed_contact(conn, stripe_id)
    email = match.get("email")
    if row is None and kind == "contact" and isinstance(email, str) and email:
        stmt = _unlinked_by_email(conn.dialect.name == "postgresql")
        row = conn.execute(stmt, {"b_email": email, "b_connection_id": connection_id}).first()
        if row is None and not stripe_id:
            row = conn.execute(
                sa.select(t)
                .where(t.c.email == email, t.c.connection_id == connection_id)
                .order_by(t.c.seq)
                .limit(1)
            ).first()
    if row is not None:
        return row
    if not stripe_id and not (kind == "contact" and email):
        what = "a Stripe customer id or an email" if kind == "contact" else "a Stripe location id"
        raise errors.DeadLetter(f"the event names no {kind}: map {what}", code="no_id")
    now = time.time()
    values: dict[str, Any] = {
        "id": ids.new(PREFIXES[kind]),
        "connection_id": connection_id,
        key: stripe_id or None,
        "metadata": {},
        "test": test,
        "created_at": now,
        "updated_at": now,
    }
    if kind == "contact":
        values |= {"email": email or None, "tags": []}
    conn.execute(t.insert().values(**values))
    return _find(conn, t, connection_id=connection_id, id=values["id"])


def set_fields(
    conn: Connection,
    kind: str,
    *,
    connection_id: str,
    match: dict[str, Any],
    fields: dict[str, Any],
    version: Version,
    test: bool = False,
) -> str:
    """Set some fields of a contact or location. Each field keeps the version of the event that
    set it last, so out-of-order events settle per field, whatever else writes the record."""
    allowed = CONTACT_FIELDS if kind == "contact" else LOCATION_FIELDS
    row = _target(conn, kind, connection_id=connection_id, match=match, test=test)
    stamps = dict(row.field_versions or {})
    stamp = _stamp(version)
    changed = {}
    for name, value in _clean(fields, allowed).items():
        if name in match and name in ("stripe_customer_id", "stripe_location_id"):
            continue
        if _take(stamps, name, stamp):
            changed[name] = value
    if changed:
        values = _merge(changed, row._mapping)
        conn.execute(
            _update_by_seq(KINDS[kind].name),
            values | {"field_versions": stamps, "updated_at": time.time(), "b_seq": row.seq},
        )
    return str(row.id)


def change_tags(
    conn: Connection,
    *,
    connection_id: str,
    match: dict[str, Any],
    tags: list[str],
    present: bool,
    version: Version,
    test: bool = False,
) -> str:
    """Add (`present`) or remove tags on a contact, each tag settling by its own version."""
    row = _target(conn, "contact", connection_id=connection_id, match=match, test=test)
    stamps = dict(row.field_versions or {})
    stamp = _stamp(version)
    current = list(row.tags or [])
    for tag in tags:
        if not _take(stamps, f"tag:{tag}", stamp):
            continue
        if present and tag not in current:
            current.append(tag)
        elif not present and tag in current:
            current.remove(tag)
    conn.execute(
        _update_by_seq("contacts"),
        {
            "tags": current,
            "field_versions": stamps,
            "updated_at": time.time() if current != list(row.tags or []) else row.updated_at,
            "b_seq": row.seq,
        },
    )
    return str(row.id)


def log_activity(
    conn: Connection,
    *,
    connection_id: str,
    match: dict[str, Any],
    event: dict[str, Any],
    flow: str,
    kind: str,
    title: str | None,
    data: dict[str, Any],
    test: bool = False,
) -> str:
    """Keep an entry on a contact's timeline, once per (contact, event, flow)."""
    row = _target(conn, "contact", connection_id=connection_id, match=match, test=test)
    t = tables.activities
    insert = postgresql.insert(t) if conn.dialect.name == "postgresql" else sqlite.insert(t)
    conn.execute(
        insert.values(
            id=ids.new("act_"),
            connection_id=connection_id,
            contact_id=row.id,
            event_id=event["id"],
            flow=flow,
            type=kind,
            title=None if title is None else str(title)[:512],
            data=data,
            occurred_at=int(event["created"]),
            test=test,
            created_at=time.time(),
        ).on_conflict_do_nothing(index_elements=[t.c.contact_id, t.c.event_id, t.c.flow])
    )
    return str(row.id)


def activities(
    db: Database, contact_id: str, *, limit: int = 20, starting_after: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """A contact's timeline, newest first."""
    get(db, "contact", contact_id)  # 404 for an unknown contact
    t = tables.activities
    stmt = (
        sa.select(t)
        .where(t.c.contact_id == contact_id)
        .order_by(t.c.occurred_at.desc(), t.c.seq.desc())
        .limit(limit + 1)
    )
    with db.read() as conn:
        if starting_after is not None:
            after = (
                conn.execute(
                    sa.select(t.c.occurred_at, t.c.seq).where(
                        t.c.id == starting_after, t.c.contact_id == contact_id
                    )
                ).first()
                if ids.plausible(starting_after)
                else None
            )
            if after is None:
                raise errors.BadRequest(
                    f"starting_after: no activity {starting_after}", code="invalid_cursor"
                )
            stmt = stmt.where(
                sa.or_(
                    t.c.occurred_at < after.occurred_at,
                    sa.and_(t.c.occurred_at == after.occurred_at, t.c.seq < after.seq),
                )
            )
        rows = conn.execute(stmt).all()
    return [public_activity(r) for r in rows[:limit]], len(rows) > limit


def public_activity(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "activity",
        "contact_id": row.contact_id,
        "type": row.type,
        "title": row.title,
        "data": row.data or {},
        "occurred_at": iso(row.occurred_at),
        "event_id": row.event_id,
        "flow": row.flow,
        "test": bool(row.test),
        "created_at": iso(row.created_at),
    }


def account_currency(conn: Connection, connection_id: str) -> str | None:
    """The default currency of the Stripe account behind a connection, when known."""
    t = tables.connections
    currency = conn.execute(
        sa.select(t.c.default_currency).where(t.c.id == connection_id)
    ).scalar_one_or_none()
    return None if currency is None else str(currency)


# Writes through the API. An API write is a version like an event's, (OWN, now, 0, "api_<request
# id>"), stamped in `field_versions` on each field, JSON key (`metadata.tier`) and tag it sets:
# an event Stripe made later overwrites the edit, an older one (late, retried, replayed) does
# not. A same-second tie goes to the event (its rank is >= 0, and "evt_" sorts after "api_"),
# except to a backfill's snapshot (rank -1), which loses ties to edits as it does to events.

_SET_BY_SNAPSHOTS = "is set by Snapshots and read-only"
_INVOICE_OWNED = "is owned by Stripe and read-only: only payment_status and notes can be changed"
READ_ONLY: dict[str, dict[str, str]] = {
    kind: dict.fromkeys(
        ("id", "object", "connection_id", "livemode", "test", "created_at", "updated_at"),
        _SET_BY_SNAPSHOTS,
    )
    for kind in KINDS
}
READ_ONLY["contact"] |= {
    "stripe_customer_id": "is owned by Stripe and read-only: it links the contact to its "
    "Stripe customer (POST /v1/customers/upsert can link a contact that has none)",
    "stripe_created": "is owned by Stripe and read-only",
    "archived": "is read-only here: DELETE /v1/customers/{id} archives a contact",
}
READ_ONLY["location"] |= {
    "stripe_location_id": "is owned by Stripe and read-only: it links the location to its "
    "Stripe Terminal location",
    "archived": "is read-only: a location is archived when it vanishes from Stripe",
}
READ_ONLY["invoice"] |= dict.fromkeys(
    sorted(INVOICE_FIELDS - {"payment_status", "custom"} | {"customer_id", "archived"}),
    _INVOICE_OWNED,
)
READ_ONLY["invoice"]["custom"] = "is set by flows and read-only through the API"
# JSON fields an API write merges key by key (a key set to None is removed).
MERGED = frozenset({"metadata", "custom"})


def api_version(request_id: str) -> Version:
    """The version of an API write made now."""
    return Version(OWN, int(time.time()), 0, f"api_{request_id or ids.new('req_', 16)}")


def refuse_read_only(kind: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field of `body` that the API may not change, and why."""
    for name in body:
        reason = READ_ONLY[kind].get(name)
        if reason is not None:
            raise errors.BadRequest(f"{name} {reason}", code="read_only_field")


def _row(conn: Connection, kind: str, record_id: str) -> Any:
    """The record `record_id` of `kind`, locked on PostgreSQL until commit; 404 when unknown."""
    row = _find(conn, KINDS[kind], id=record_id) if ids.plausible(record_id) else None
    if row is None:
        raise errors.NotFound(f"no {kind} {record_id}")
    return row


def _apply(
    conn: Connection,
    kind: str,
    row: Any,
    changes: dict[str, Any],
    version: Version,
    *,
    unstamped: dict[str, Any] | None = None,
) -> Any:
    """Write an API write's `changes` to `row`; returns the row as stored.

    `metadata` and `custom` merge key by key (None removes a key) and `tags` replaces the list;
    every field, key and tag set is stamped with `version` (tables without `field_versions`
    only keep whole-record ordering). `updated_at` moves only when a value changes."""
    t = KINDS[kind]
    current = row._mapping
    stamped = "field_versions" in t.c
    stamps = dict(current["field_versions"] or {}) if stamped else {}
    stamp = _stamp(version)
    values: dict[str, Any] = dict(unstamped or {})
    for name, value in changes.items():
        if name in MERGED:
            merged = _copy(current[name])
            for key, inner in value.items():
                stamps[f"{name}.{key}"] = stamp
                if inner is None:
                    merged.pop(key, None)
                else:
                    merged[key] = inner
            values[name] = merged
        elif name == "tags":
            for tag in {*(current["tags"] or []), *value}:
                stamps[f"tag:{tag}"] = stamp
            values[name] = list(value)
        else:
            stamps[name] = stamp
            values[name] = value
    changed = any(
        (current[name] or {} if name in MERGED else current[name]) != value
        for name, value in values.items()
    )
    if not values:
        return row
    if stamped:
        values["field_versions"] = stamps
    conn.execute(
        _update_by_seq(t.name),
        values
        | {"updated_at": time.time() if changed else current["updated_at"], "b_seq": row.seq},
    )
    return conn.execute(sa.select(t).where(t.c.seq == row.seq)).one()


def _insert_bare(conn: Connection, kind: str, values: dict[str, Any]) -> Any:
    t = KINDS[kind]
    now = time.time()
    record_id = ids.new(PREFIXES[kind])
    defaults: dict[str, Any] = (
        {"metadata": {}, "tags": []} if kind == "contact" else {"metadata": {}}
    )
    conn.execute(
        t.insert().values(
            defaults
            | values
            | {"id": record_id, "connection_id": None, "created_at": now, "updated_at": now}
        )
    )
    return conn.execute(sa.select(t).where(t.c.id == record_id)).one()


def _lock_matching(conn: Connection, *names: str | None) -> None:
    """On PostgreSQL, hold a lock per match key until commit, so two upserts of one new contact
    cannot both create it (SQLite's single writer already serialises them)."""
    if conn.dialect.name != "postgresql":
        return
    for name in names:
        if name:
            conn.execute(
                sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(name, 0)))
            )


def upsert_contact_by_api(
    conn: Connection, *, fields: dict[str, Any], version: Version
) -> tuple[bool, dict[str, Any]]:
    """`POST /v1/customers/upsert`: the contact of `stripe_customer_id` (any connection), else
    the oldest unarchived contact with `email` (one not linked to a Stripe customer when a
    customer id is given, which then links it), updated with `fields`; or a new contact, not
    tied to a connection until the first event about its customer claims it.

    Returns (created, the contact)."""
    t = tables.contacts
    customer_id = fields.get("stripe_customer_id")
    email = fields.get("email")
    if not customer_id and not email:
        raise errors.BadRequest("give stripe_customer_id or email to match a contact on")
    _lock_matching(conn, customer_id and f"contact:{customer_id}", email and f"email:{email}")
    lock = conn.dialect.name == "postgresql"
    row = None
    if customer_id:
        stmt = sa.select(t).where(t.c.stripe_customer_id == customer_id)
        stmt = stmt.order_by(t.c.seq).limit(1)
        row = conn.execute(stmt.with_for_update() if lock else stmt).first()
    if row is None and email:
        stmt = sa.select(t).where(t.c.email == email, t.c.archived.is_(False))
        if customer_id:
            stmt = stmt.where(t.c.stripe_customer_id.is_(None))
        stmt = stmt.order_by(t.c.seq).limit(1)
        row = conn.execute(stmt.with_for_update() if lock else stmt).first()
    changes = {k: v for k, v in fields.items() if k != "stripe_customer_id"}
    link: dict[str, Any] = {}
    created = row is None
    if row is None:
        row = _insert_bare(conn, "contact", {"stripe_customer_id": customer_id})
    elif customer_id and row.stripe_customer_id is None:
        link = {"stripe_customer_id": customer_id}
    row = _apply(conn, "contact", row, changes, version, unstamped=link)
    return created, public("contact", row)


def create_location(
    conn: Connection, *, fields: dict[str, Any], version: Version
) -> dict[str, Any]:
    """`POST /v1/locations`: a location of Snapshots' own, not linked to Stripe. Its country
    defaults to its address's."""
    address = fields.get("address")
    country = address.get("country") if isinstance(address, dict) else None
    if (
        fields.get("country") is None
        and isinstance(country, str)
        and len(country) == 2
        and country.isalpha()
    ):
        fields = fields | {"country": country.upper()}
    row = _insert_bare(conn, "location", {"name": fields.get("name")})
    return public("location", _apply(conn, "location", row, fields, version))


def edit(
    conn: Connection, kind: str, record_id: str, *, changes: dict[str, Any], version: Version
) -> dict[str, Any]:
    """`PATCH`: change some fields of a record (see `_apply`); 404 when it is unknown."""
    row = _row(conn, kind, record_id)
    return public(kind, _apply(conn, kind, row, changes, version))


def archive(conn: Connection, kind: str, record_id: str, *, version: Version) -> dict[str, Any]:
    """`DELETE`: archive a record (archiving an archived record changes nothing). A later
    event about its Stripe object that says it exists brings it back, as for any field."""
    row = _row(conn, kind, record_id)
    if not row.archived:
        row = _apply(conn, kind, row, {"archived": True}, version)
    return public(kind, row)


# Reading, for the API and the CLI.


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


ADDRESS_KEYS = ("line1", "line2", "city", "state", "postal_code", "country")


def _address(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {key: value.get(key) for key in ADDRESS_KEYS}


def public(kind: str, row: Any) -> dict[str, Any]:
    """The API shape of a record."""
    common = {
        "id": row.id,
        "connection_id": row.connection_id,
        "metadata": row.metadata or {},
        "custom": row.custom or {},
        "archived": bool(row.archived),
        "livemode": row.livemode,
        "test": bool(row.test),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    if kind == "contact":
        return {
            "id": row.id,
            "object": "contact",
            "email": row.email,
            "name": row.name,
            "phone": row.phone,
            "address": _address(row.address),
            "tags": row.tags or [],
            "stripe_customer_id": row.stripe_customer_id,
            "stripe_created": iso(row.stripe_created),
            **common,
        }
    if kind == "invoice":
        return {
            "id": row.id,
            "object": "invoice",
            "number": row.number,
            "amount_due": row.amount_due,
            "amount_paid": row.amount_paid,
            "amount_remaining": row.amount_remaining,
            "total": row.total,
            "currency": row.currency,
            "status": row.status,
            "payment_status": row.payment_status,
            "customer_id": row.customer_id,
            "customer_email": row.customer_email,
            "customer_name": row.customer_name,
            "hosted_invoice_url": row.hosted_invoice_url,
            "due_date": iso(row.due_date),
            "paid_at": iso(row.paid_at),
            "notes": row.notes,
            "stripe_invoice_id": row.stripe_invoice_id,
            "stripe_customer_id": row.stripe_customer_id,
            "stripe_created": iso(row.stripe_created),
            **common,
        }
    return {
        "id": row.id,
        "object": "location",
        "name": row.name,
        "address": _address(row.address),
        "country": row.country,
        "currency": row.currency,
        "stripe_location_id": row.stripe_location_id,
        **common,
    }


def get(db: Database, kind: str, record_id: str) -> dict[str, Any]:
    t = KINDS[kind]
    if not ids.plausible(record_id):
        raise errors.NotFound(f"no {kind} {record_id}")
    with db.read() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == record_id)).one_or_none()
    if row is None:
        raise errors.NotFound(f"no {kind} {record_id}")
    return public(kind, row)


Order = Literal["desc", "asc"]


def page(
    db: Database,
    kind: str,
    *,
    limit: int = 20,
    starting_after: str | None = None,
    order: Order = "desc",
    filters: dict[str, Any] | None = None,
    updated_since: float | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of records in creation order (newest first unless `order` is "asc"), only those
    whose columns equal `filters` (None values are ignored) and, with `updated_since` (unix
    seconds), updated at or after it; `starting_after` is the id of the last record of the
    previous page."""
    t = KINDS[kind]
    where = [t.c[name] == value for name, value in (filters or {}).items() if value is not None]
    if updated_since is not None:
        where.append(t.c.updated_at >= updated_since)
    return paginate(
        db,
        t,
        kind,
        lambda row: public(kind, row),
        limit=limit,
        starting_after=starting_after,
        where=where,
        order=order,
    )


def paginate(
    db: Database,
    t: sa.Table,
    noun: str,
    to_public: Callable[[Any], dict[str, Any]],
    *,
    limit: int = 20,
    starting_after: str | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    order: Order = "desc",
) -> tuple[list[dict[str, Any]], bool]:
    """A page of a table with `seq` and `id` columns, newest first (or oldest first), of the
    rows matching `where`, after the row whose id is `starting_after` (which must exist, but
    need not match `where`)."""
    ascending = order == "asc"
    stmt = sa.select(t).where(*where).order_by(t.c.seq.asc() if ascending else t.c.seq.desc())
    stmt = stmt.limit(limit + 1)
    with db.read() as conn:
        if starting_after is not None:
            seq = (
                conn.execute(
                    sa.select(t.c.seq).where(t.c.id == starting_after)
                ).scalar_one_or_none()
                if ids.plausible(starting_after)
                else None
            )
            if seq is None:
                raise errors.BadRequest(
                    f"starting_after: no {noun} {starting_after}", code="invalid_cursor"
                )
            stmt = stmt.where(t.c.seq > seq if ascending else t.c.seq < seq)
        rows = conn.execute(stmt).all()
    return [to_public(r) for r in rows[:limit]], len(rows) > limit
