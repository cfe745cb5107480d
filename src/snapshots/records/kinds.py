"""One spec per record kind (contact, invoice, location): its table, id prefix, the fields
flows write, the column that links it to its Stripe object, what a new one starts with, what
the API may not change and why, and its public model. Code that works on any kind reads the
spec instead of asking which kind it has."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from snapshots.records import models
from snapshots.store import db, tables

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
        return self.model.model_validate(db.fields(row))

    @functools.cached_property
    def json_columns(self) -> tuple[Any, ...]:
        """The columns its public model shows, for `row_json`, then `seq`: the JSON ones as
        their text, decoded once by `row_json` (not by the driver and again by a model).
        Built once, so the statement's cache key is quick to make."""
        return (
            *(
                sa.cast(c, sa.Text).label(c.name) if isinstance(c.type, sa.JSON) else c
                for c in self.shown
            ),
            self.table.c.seq,
        )

    @functools.cached_property
    def json_select(self) -> sa.Select[Any]:
        """`select(*json_columns)`, built once: every list request pages it."""
        return sa.select(*self.json_columns)

    @functools.cached_property
    def row_json(self) -> Callable[[Any], dict[str, Any]]:
        """What `public(row)` dumps as JSON (`model_dump(mode="json")`), built straight from a
        row of `json_columns` without a model: the lists' fast path. Times are `datetime`s,
        to be encoded with `orjson.OPT_UTC_Z` (the same text as `times.iso`).
        `tests/integration/test_records.py` holds the two to the same output on every kind."""
        return _row_json(
            self.model,
            tuple(c.name for c in self.json_columns),
            frozenset(c.name for c in self.table.c if not c.nullable),
        )

    @property
    def shown(self) -> list[sa.Column[Any]]:
        """The columns its public model shows (reads need not decode the rest)."""
        return [c for c in self.table.c if c.name in self.model.model_fields]


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _json(text: str | None) -> Any:
    return None if text is None else db.json_loads(text)


def _object(text: str | None) -> dict[str, Any]:
    if text is None or text == "{}":  # no metadata, no custom fields: most records
        return {}
    return models.json_object(db.json_loads(text))


def _address(text: str | None) -> Any:
    return models.address(_json(text))


def _tags(text: str | None) -> Any:
    if text is None or text == "[]":
        return []
    return db.json_loads(text) or []


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


# How a field's column value becomes what its model dumps (anything else: as it is).
_CONVERT: dict[str, Any] = {
    "created_at": _moment,
    "updated_at": _moment,
    "stripe_created": _moment,
    "due_date": _moment,
    "paid_at": _moment,
    "metadata": _object,
    "custom": _object,
    "data": _object,
    "address": _address,
    "tags": _tags,
    "archived": bool,
    "test": bool,
    "livemode": _optional_bool,
}


def _row_json(
    model: type[models.RecordPublic], columns: tuple[str, ...], not_null: frozenset[str]
) -> Callable[[Any], dict[str, Any]]:
    """A function of one row (of `columns`, those in `not_null` never NULL) returning the dictionary of `Kind.row_json`, in
    the model's field order. It is generated as one dictionary display (as `dataclasses` and
    `collections.namedtuple` generate theirs), as a list's 100 rows x 17 fields is where a
    list's time went: one call per converted field, none per plain one."""
    names: dict[str, Any] = {"_datetime": datetime.fromtimestamp, "_UTC": UTC}
    items = []
    for at, (name, field_) in enumerate(model.model_fields.items()):
        if name == "object":  # the model's constant
            names[f"_c{at}"] = field_.default
            items.append(f"{name!r}: _c{at}")
        elif _CONVERT.get(name) is _moment and name in not_null:  # no None to look for
            items.append(f"{name!r}: _datetime(row[{columns.index(name)}], _UTC)")
        elif name in _CONVERT:
            names[f"_f{at}"] = _CONVERT[name]
            value = f"row[{columns.index(name)}]" if name in columns else "None"
            items.append(f"{name!r}: _f{at}({value})")
        elif name not in columns:
            items.append(f"{name!r}: None")
        else:
            items.append(f"{name!r}: row[{columns.index(name)}]")
    source = "def row_json(row):\n    return {" + ", ".join(items) + "}\n"
    exec(source, names)  # built above from the model's field names alone
    built: Callable[[Any], dict[str, Any]] = names["row_json"]
    return built


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
