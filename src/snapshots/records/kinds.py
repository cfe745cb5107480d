"""One spec per record kind (contact, invoice, location): its table, id prefix, the fields
flows write, the column that links it to its Stripe object, what a new one starts with, what
the API may not change and why, and its public model. Code that works on any kind reads the
spec instead of asking which kind it has."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from snapshots import times
from snapshots.records import models
from snapshots.store import tables

# JSON fields a flow may write into by path (`address.city`, `metadata.tier`, `custom.plan`).
NESTED = frozenset({"address", "metadata", "custom"})
# JSON fields an API write merges key by key (a key set to None is removed).
MERGED = frozenset({"metadata", "custom"})

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
# Fields of an invoice used only to make a missing contact.
INVOICE_CONTACT_FIELDS = frozenset({"customer_phone", "customer_address"})

_SET_BY_SNAPSHOTS = "is set by Snapshots and read-only"
_COMMON_READ_ONLY = dict.fromkeys(
    ("id", "object", "connection_id", "livemode", "test", "created_at", "updated_at"),
    _SET_BY_SNAPSHOTS,
)
_INVOICE_OWNED = "is owned by Stripe and read-only: only payment_status and notes can be changed"


M = TypeVar("M", bound=models.RecordPublic)


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (a cache key)
class Kind(Generic[M]):
    name: str  # contact | invoice | location
    table: sa.Table
    prefix: str  # of its ids: con_, inv_, loc_
    fields: frozenset[str]  # what a flow's whole-record upsert writes
    stripe_id: str  # the column that links it to its Stripe object
    model: type[M]
    defaults: dict[str, Any] = field(default_factory=lambda: {"metadata": {}})
    read_only: dict[str, str] = field(default_factory=dict)  # field -> why the API may not
    by_email: bool = False  # found by email too (a contact)
    stripe_prefix: str = ""  # of its Stripe object's ids: cus_, in_, tml_
    searched: tuple[str, ...] = ()  # the columns a search finds by their start (any case)

    @property
    def stamped(self) -> bool:
        """Does it keep per-field stamps (`field_versions`)?"""
        return "field_versions" in self.table.c

    def public(self, row: Any) -> M:
        return self.model.model_validate(row._mapping)

    def shown_json(self, row: Any) -> dict[str, Any]:
        """What `public(row)` dumps as JSON (`model_dump(mode="json")`), built straight from
        the row without a model: the lists' fast path. `tests/integration/test_records.py`
        holds the two to the same output on every kind."""
        values = tuple(row)
        return {
            name: convert(None if at is None else values[at])
            for name, at, convert in _converters(self.model, tuple(row._fields))
        }

    @property
    def shown(self) -> list[sa.Column[Any]]:
        """The columns its public model shows (reads need not decode the rest)."""
        return [c for c in self.table.c if c.name in self.model.model_fields]


def _same(value: Any) -> Any:
    return value


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


_CONVERT: dict[str, Any] = {
    "created_at": times.iso,
    "updated_at": times.iso,
    "stripe_created": times.iso,
    "due_date": times.iso,
    "paid_at": times.iso,
    "metadata": models.json_object,
    "custom": models.json_object,
    "data": models.json_object,
    "address": models.address,
    "tags": lambda value: value or [],
    "archived": bool,
    "test": bool,
    "livemode": _optional_bool,
}


@functools.cache
def _converters(
    model: type[models.RecordPublic], columns: tuple[str, ...]
) -> tuple[tuple[str, int | None, Any], ...]:
    """(field, the position of its column in a row of `columns` (None: none), its conversion
    from the column's value), in the model's field order; `object` is the model's constant."""
    found: list[tuple[str, int | None, Any]] = []
    for name, field_ in model.model_fields.items():
        at = columns.index(name) if name in columns else None
        if name == "object":
            constant = field_.default
            found.append((name, None, lambda _, constant=constant: constant))
        else:
            found.append((name, at, _CONVERT.get(name, _same)))
    return tuple(found)


CONTACT: Kind[models.ContactPublic] = Kind(
    "contact",
    tables.contacts,
    "con_",
    CONTACT_FIELDS,
    "stripe_customer_id",
    models.ContactPublic,
    defaults={"metadata": {}, "tags": []},
    read_only=_COMMON_READ_ONLY
    | {
        "stripe_customer_id": "is owned by Stripe and read-only: it links the contact to its "
        "Stripe customer (POST /v1/customers/upsert can link a contact that has none)",
        "stripe_created": "is owned by Stripe and read-only",
        "archived": "is read-only here: DELETE /v1/customers/{id} archives a contact",
    },
    by_email=True,
    stripe_prefix="cus_",
    searched=("name", "email"),
)
INVOICE: Kind[models.InvoicePublic] = Kind(
    "invoice",
    tables.invoices,
    "inv_",
    INVOICE_FIELDS,
    "stripe_invoice_id",
    models.InvoicePublic,
    read_only=_COMMON_READ_ONLY
    | dict.fromkeys(
        sorted(INVOICE_FIELDS - {"payment_status", "custom"} | {"customer_id", "archived"}),
        _INVOICE_OWNED,
    )
    | {"custom": "is set by flows and read-only through the API"},
    stripe_prefix="in_",
    searched=("number", "customer_email", "customer_name"),
)
LOCATION: Kind[models.LocationPublic] = Kind(
    "location",
    tables.locations,
    "loc_",
    LOCATION_FIELDS,
    "stripe_location_id",
    models.LocationPublic,
    read_only=_COMMON_READ_ONLY
    | {
        "stripe_location_id": "is owned by Stripe and read-only: it links the location to its "
        "Stripe Terminal location",
        "archived": "is read-only: a location is archived when it vanishes from Stripe",
    },
    stripe_prefix="tml_",
    searched=("name",),
)
KINDS: dict[str, Kind[Any]] = {kind.name: kind for kind in (CONTACT, INVOICE, LOCATION)}
