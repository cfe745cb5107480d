"""Applying the whole-record upserts of many events at once, with the same result as applying
them one by one (`apply.upsert_*`) in their order.

A `Batch` reads the current version of every record the upserts touch in one query per table
(locked on PostgreSQL, after an advisory lock per record name taken in one statement, so two
workers wait for each other instead of racing to insert the same new record), decides in memory
with the ordering rule of `ordering.Key`, then writes per table with one multi-row INSERT for
the new records and one multi-row upsert for the changed ones (`dialect.upsert_rows`).
Lookups in memory follow `lookup.contact_of`: a contact by its Stripe customer, then one the
API made for that customer with no connection yet, then an unlinked contact with its email.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from snapshots import errors, ids
from snapshots.records import values
from snapshots.records.kinds import CONTACT, INVOICE, LOCATION, Kind
from snapshots.records.ordering import Key
from snapshots.store import dialect, tables
from snapshots.store.db import Tx

MATCH_ON = ("stripe_customer_id", "email")


@dataclass(frozen=True)
class Upsert:
    """One whole-record write a flow's action asks for (what `apply.upsert_*` takes)."""

    kind: Kind[Any]
    connection_id: str
    fields: dict[str, Any]
    key: Key
    archived: bool = False
    match_on: tuple[str, ...] = MATCH_ON
    test: bool = False
    default_currency: bool = False  # a location without a mapped currency: the account's


Row = dict[str, Any]


def _clean(upsert: Upsert) -> dict[str, Any]:
    cleaned = values.clean(upsert.fields, upsert.kind.fields) | {"archived": upsert.archived}
    if not cleaned.get(upsert.kind.stripe_id):
        what = {"contact": "the customer has no id to match a contact on"}.get(
            upsert.kind.name, f"the {upsert.kind.name} has no id"
        )
        raise errors.DeadLetter(what, code="no_id")
    return cleaned


def _borrowed(upsert: Upsert, customer: str) -> Upsert:
    """The contact write an invoice makes for its customer (see `apply.upsert_invoice`)."""
    fields = upsert.fields
    return Upsert(
        CONTACT,
        upsert.connection_id,
        {
            "stripe_customer_id": customer,
            "email": fields.get("customer_email"),
            "name": fields.get("customer_name"),
            "phone": fields.get("customer_phone"),
            "address": fields.get("customer_address"),
            "livemode": fields.get("livemode"),
        },
        upsert.key.borrowed(),
        test=upsert.test,
    )


def _stored_key(row: Row) -> Key | None:
    if row["applied_created"] is None:
        return None
    return Key(
        row["applied_authority"],
        row["applied_created"],
        row["applied_rank"],
        row["applied_event_id"],
    )


class _Table:
    """The rows of one kind the batch touches, as they stand after the writes so far."""

    def __init__(self, kind: Kind[Any]) -> None:
        self.kind = kind
        self.by_stripe_id: dict[tuple[str | None, str | None], Row] = {}
        self.loose: list[Row] = []  # contacts without a connection or a Stripe customer
        self.new: list[Row] = []
        self.changed: dict[int, Row] = {}  # by seq

    def load(self, rows: sa.CursorResult[Any]) -> None:
        names = tuple(rows.keys())
        for found in rows:
            row = dict(zip(names, found, strict=True))
            self._index(row)
            if self.kind.by_email and (
                row["connection_id"] is None or row["stripe_customer_id"] is None
            ):
                self.loose.append(row)
        self.loose.sort(key=lambda row: row["seq"])

    def _index(self, row: Row) -> None:
        stripe_id = row[self.kind.stripe_id]
        if stripe_id is not None and row["connection_id"] is not None:
            self.by_stripe_id[(row["connection_id"], stripe_id)] = row

    def find(self, connection_id: str, stripe_id: str) -> Row | None:
        return self.by_stripe_id.get((connection_id, stripe_id))

    def contact_of(
        self, connection_id: str, customer_id: str, email: Any, match_on: tuple[str, ...]
    ) -> Row | None:
        """`lookup.contact_of`, over the rows in hand."""
        if "stripe_customer_id" in match_on:
            row = self.find(connection_id, customer_id)
            if row is not None:
                return row
            for row in self.loose:
                if row["connection_id"] is None and row["stripe_customer_id"] == customer_id:
                    return row
        if "email" in match_on and isinstance(email, str) and email:
            for row in self.loose:
                if (
                    row["email"] == email
                    and row["stripe_customer_id"] is None
                    and not row["archived"]
                    and row["connection_id"] in (connection_id, None)
                ):
                    return row
        return None

    def write(self, row: Row | None, fields: dict[str, Any], upsert: Upsert, now: float) -> str:
        """`apply._write`, in memory."""
        key = upsert.key
        if row is None:
            row = dict.fromkeys(c.name for c in self.kind.table.c if c.name != "seq")
            row |= (
                self.kind.defaults
                | values.merge(fields, None)
                | key.columns()
                | {
                    "id": ids.new(self.kind.prefix),
                    "connection_id": upsert.connection_id,
                    "test": upsert.test,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            self.new.append(row)
            self._index(row)
            return str(row["id"])
        stored = _stored_key(row)
        if stored is None or key >= stored:
            fields = values.keep_newer_fields(fields, row, key.stamp)
            changed = row["connection_id"] != upsert.connection_id or any(
                row[name] != value for name, value in fields.items()
            )
            before = (row["connection_id"], row[self.kind.stripe_id])
            row.update(fields)
            row.update(key.columns())
            row["connection_id"] = upsert.connection_id
            if changed:
                row["updated_at"] = now
            if before != (row["connection_id"], row[self.kind.stripe_id]):
                if self.by_stripe_id.get(before) is row:
                    del self.by_stripe_id[before]
                self._index(row)
            if row.get("seq") is not None:
                self.changed[row["seq"]] = row
        return str(row["id"])

    def flush(self, tx: Tx) -> None:
        table = self.kind.table
        dialect.insert_rows(tx, table, self.new)
        dialect.upsert_rows(tx, table, list(self.changed.values()), key="seq")
        self.new = []
        self.changed = {}


@functools.cache
def _reading(sql: sa.Dialect, kind: Kind[Any], *, by_email: bool) -> sa.Select[Any]:
    """The read (locked on PostgreSQL) of the records of `kind` with the given Stripe ids, and
    with `by_email` the unlinked contacts with the given emails: built once (every batch runs
    it), the lists go as expanding parameters."""
    t = kind.table
    ours: sa.ColumnElement[bool] = t.c.connection_id.in_(
        sa.bindparam("connection_ids", expanding=True)
    )
    # Records made without a connection (by the API) count too, where a kind may have them:
    # said of invoices, which always have one, the OR made SQLite scan the whole table.
    if t.c.connection_id.nullable:
        ours = sa.or_(ours, t.c.connection_id.is_(None))
    where = sa.and_(t.c[kind.stripe_id].in_(sa.bindparam("stripe_ids", expanding=True)), ours)
    if by_email:
        unlinked = sa.and_(
            t.c.email.in_(sa.bindparam("emails", expanding=True)),
            t.c.stripe_customer_id.is_(None),
            ours,
        )
        where = sa.or_(where, unlinked)
    return dialect.locked(sql, sa.select(t).where(where).order_by(t.c.seq))


class Batch:
    """Whole-record upserts of many events, applied in their order, written at `flush`."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.tables = {kind.name: _Table(kind) for kind in (CONTACT, INVOICE, LOCATION)}

    def apply(self, upserts: list[list[Upsert]]) -> list[list[str]]:
        """Apply each event's upserts (a list per event, in order); returns their record ids.
        Raises what a single upsert would (`errors.DeadLetter` when a record has no id)."""
        flat = [upsert for event in upserts for upsert in event]
        self._load(flat)
        currencies = self._currencies(flat)
        now = time.time()
        return [[self._one(upsert, now, currencies) for upsert in event] for event in upserts]

    def _one(self, upsert: Upsert, now: float, currencies: dict[str, str | None]) -> str:
        if upsert.default_currency and upsert.fields.get("currency") is None:
            currency = currencies.get(upsert.connection_id)
            upsert = dataclasses.replace(upsert, fields=upsert.fields | {"currency": currency})
        cleaned = _clean(upsert)
        kind = upsert.kind
        table = self.tables[kind.name]
        if kind is CONTACT:
            row = table.contact_of(
                upsert.connection_id,
                cleaned["stripe_customer_id"],
                cleaned.get("email"),
                upsert.match_on,
            )
            return table.write(row, cleaned, upsert, now)
        if kind is INVOICE:
            customer = cleaned.get("stripe_customer_id")
            if customer:
                cleaned["customer_id"] = self._one(_borrowed(upsert, customer), now, currencies)
        row = table.find(upsert.connection_id, cleaned[kind.stripe_id])
        return table.write(row, cleaned, upsert, now)

    def flush(self) -> None:
        """Write what changed: new records, then updated ones, table by table."""
        for table in self.tables.values():
            table.flush(self.tx)

    def _load(self, upserts: list[Upsert]) -> None:
        """Read (and on PostgreSQL lock) every record the upserts may touch, one query a table."""
        wanted: dict[str, set[tuple[str, str]]] = {name: set() for name in self.tables}
        emails: set[str] = set()
        for upsert in upserts:
            stripe_id = upsert.fields.get(upsert.kind.stripe_id)
            if not isinstance(stripe_id, str) or not stripe_id:
                continue
            wanted[upsert.kind.name].add((upsert.connection_id, stripe_id))
            if upsert.kind is INVOICE:
                customer = upsert.fields.get("stripe_customer_id")
                if isinstance(customer, str) and customer:
                    wanted[CONTACT.name].add((upsert.connection_id, customer))
                    email = upsert.fields.get("customer_email")
                    if isinstance(email, str) and email:
                        emails.add(email)
            elif upsert.kind is CONTACT and "email" in upsert.match_on:
                email = upsert.fields.get("email")
                if isinstance(email, str) and email:
                    emails.add(email)
        dialect.lock_names(
            self.tx,
            *(f"{name}:{stripe_id}" for name, keys in wanted.items() for _, stripe_id in keys),
        )
        for name, keys in wanted.items():
            by_email = name == CONTACT.name and bool(emails)
            if not keys and not by_email:
                continue
            params = {
                "stripe_ids": sorted({stripe_id for _, stripe_id in keys}),
                "connection_ids": sorted({connection_id for connection_id, _ in keys}),
            }
            if by_email:
                params["emails"] = sorted(emails)
            stmt = _reading(self.tx.dialect, self.tables[name].kind, by_email=by_email)
            self.tables[name].load(self.tx.execute(stmt, params))

    def _currencies(self, upserts: list[Upsert]) -> dict[str, str | None]:
        wanted = sorted(
            {
                u.connection_id
                for u in upserts
                if u.default_currency and not u.fields.get("currency")
            }
        )
        if not wanted:
            return {}
        c = tables.connections.c
        rows = self.tx.execute(sa.select(c.id, c.default_currency).where(c.id.in_(wanted)))
        return {row.id: row.default_currency for row in rows}
