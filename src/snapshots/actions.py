"""Actions: what a flow does with the fields its mapping produced.

Each action names the record kind it writes and the target fields it accepts, so a flows file
naming an unknown field is refused when it loads, not when an event arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from snapshots import records

# Same-second ties: the object's state first, then the event type (see records.py).
INVOICE_STATUS_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
TYPE_RANK = {
    # A backfill's snapshot loses a same-second tie with any real event (it is read from a
    # list that may lag); a later second wins as usual.
    "customer.synced": -1,
    "invoice.synced": -1,
    "customer.created": 0,
    "customer.updated": 1,
    "customer.deleted": 99,
    "invoice.created": 0,
    "invoice.updated": 1,
    "invoice.finalized": 2,
    "invoice.payment_failed": 3,
    "invoice.payment_succeeded": 4,
    "invoice.paid": 5,
    "invoice.marked_uncollectible": 6,
    "invoice.voided": 7,
    "invoice.deleted": 99,
    "terminal.location.created": 0,
    "terminal.location.updated": 1,
    "terminal.location.deleted": 99,
}
OTHER_TYPE_RANK = 50


@dataclass(frozen=True)
class Context:
    """What an action knows of the event that triggered it."""

    connection_id: str
    event: dict[str, Any]
    test: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def version(self, state_rank: int = 0) -> records.Version:
        type_rank = TYPE_RANK.get(self.event["type"], OTHER_TYPE_RANK)
        return records.Version(
            records.OWN, int(self.event["created"]), state_rank * 100 + type_rank, self.event["id"]
        )


Run = Callable[[Connection, Context, dict[str, Any]], str]


@dataclass(frozen=True)
class Action:
    name: str
    record: str  # the kind of record written
    targets: frozenset[str]
    run: Run
    description: str
    options: tuple[str, ...] = ()


def _upsert_contact(conn: Connection, ctx: Context, fields: dict[str, Any]) -> str:
    match_on = tuple(ctx.options.get("match_on", ("stripe_customer_id", "email")))
    return records.upsert_contact(
        conn,
        connection_id=ctx.connection_id,
        fields=fields,
        version=ctx.version(),
        match_on=match_on,
        test=ctx.test,
    )


def _archive_contact(conn: Connection, ctx: Context, fields: dict[str, Any]) -> str:
    return records.upsert_contact(
        conn,
        connection_id=ctx.connection_id,
        fields=fields,
        version=ctx.version(1),
        archived=True,
        test=ctx.test,
    )


def _invoice_rank(fields: dict[str, Any]) -> int:
    return INVOICE_STATUS_RANK.get(str(fields.get("status")), 0)


def _log_invoice(conn: Connection, ctx: Context, fields: dict[str, Any]) -> str:
    return records.upsert_invoice(
        conn,
        connection_id=ctx.connection_id,
        fields=fields,
        version=ctx.version(_invoice_rank(fields)),
        test=ctx.test,
    )


def _archive_invoice(conn: Connection, ctx: Context, fields: dict[str, Any]) -> str:
    return records.upsert_invoice(
        conn,
        connection_id=ctx.connection_id,
        fields=fields,
        version=ctx.version(9),
        archived=True,
        test=ctx.test,
    )


def _upsert_location(conn: Connection, ctx: Context, fields: dict[str, Any]) -> str:
    if fields.get("currency") is None:  # unless the mapping says otherwise: the account's
        fields = fields | {"currency": records.account_currency(conn, ctx.connection_id)}
    return records.upsert_location(
        conn, connection_id=ctx.connection_id, fields=fields, version=ctx.version(), test=ctx.test
    )


def _archive_location(conn: Connection, ctx: Context, fields: dict[str, Any]) -> str:
    return records.upsert_location(
        conn,
        connection_id=ctx.connection_id,
        fields=fields,
        version=ctx.version(1),
        archived=True,
        test=ctx.test,
    )


INVOICE_TARGETS = records.INVOICE_FIELDS | records.INVOICE_CONTACT_FIELDS

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "upsert_contact",
            "contact",
            records.CONTACT_FIELDS,
            _upsert_contact,
            "Create or update a contact (match on Stripe customer id, then email).",
            options=("match_on",),
        ),
        Action(
            "archive_contact",
            "contact",
            records.CONTACT_FIELDS,
            _archive_contact,
            "Archive the contact of a deleted Stripe customer.",
        ),
        Action(
            "log_invoice",
            "invoice",
            INVOICE_TARGETS,
            _log_invoice,
            "Create or update an invoice and link it to its customer's contact.",
        ),
        Action(
            "update_payment_status",
            "invoice",
            INVOICE_TARGETS,
            _log_invoice,
            "Update an invoice's status and payment status (logging it if new).",
        ),
        Action(
            "archive_invoice",
            "invoice",
            INVOICE_TARGETS,
            _archive_invoice,
            "Archive a deleted (draft) invoice.",
        ),
        Action(
            "upsert_location",
            "location",
            records.LOCATION_FIELDS,
            _upsert_location,
            "Create or update a location.",
        ),
        Action(
            "archive_location",
            "location",
            records.LOCATION_FIELDS,
            _archive_location,
            "Archive a location that vanished from Stripe.",
        ),
    )
}
