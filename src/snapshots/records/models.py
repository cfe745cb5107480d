"""The public shape of each record kind: what the API answers, `--json` prints and the console
shows, built straight from a row (`ContactPublic.model_validate(row._mapping)`)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from snapshots import nesting
from snapshots.times import Timestamp

ADDRESS_KEYS = ("line1", "line2", "city", "state", "postal_code", "country")


class Address(BaseModel):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


def _text(value: Any) -> str | None:
    """A stored address part as text (a flow may have mapped an object or a number to it)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(nesting.cut(value), ensure_ascii=False, default=str)


def _address(value: Any) -> Any:
    """Any stored address as the six keys of one (a mapping may write others; a value that is
    not an object is no address)."""
    if not isinstance(value, dict):
        return None
    return {key: _text(value.get(key)) for key in ADDRESS_KEYS}


def _object(value: Any) -> dict[str, Any]:
    """A stored JSON object as it is shown: {} for anything else, and nothing below
    `nesting.MAX_DEPTH` levels (a value stored before the bound: a read never fails)."""
    return nesting.cut(value) if isinstance(value, dict) else {}


# The same conversions for the lists' fast path (`kinds.Kind.row_json`).
address = _address
json_object = _object

Flag = Annotated[bool, BeforeValidator(bool)]  # SQLite may hand back 0 and 1
JsonObject = Annotated[dict[str, Any], BeforeValidator(_object)]
AddressField = Annotated[Address | None, BeforeValidator(_address)]
Tags = Annotated[list[str], BeforeValidator(lambda value: value or [])]


class RecordPublic(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    connection_id: str | None
    metadata: JsonObject
    custom: JsonObject = Field(description="Custom fields flows map (`custom.plan`)")
    archived: Flag
    livemode: bool | None
    test: Flag
    created_at: Timestamp
    updated_at: Timestamp


class ContactPublic(RecordPublic):
    object: Literal["contact"] = "contact"
    email: str | None
    name: str | None
    phone: str | None
    address: AddressField
    tags: Tags
    stripe_customer_id: str | None
    stripe_created: Timestamp | None


class InvoicePublic(RecordPublic):
    object: Literal["invoice"] = "invoice"
    number: str | None
    amount_due: int | None
    amount_paid: int | None
    amount_remaining: int | None
    total: int | None
    currency: str | None
    status: str | None
    payment_status: str | None
    customer_id: str | None
    customer_email: str | None
    customer_name: str | None
    hosted_invoice_url: str | None
    due_date: Timestamp | None
    paid_at: Timestamp | None
    notes: str | None = Field(None, description="Written through the API only")
    stripe_invoice_id: str
    stripe_customer_id: str | None
    stripe_created: Timestamp | None


class LocationPublic(RecordPublic):
    object: Literal["location"] = "location"
    name: str | None
    address: AddressField
    country: str | None
    currency: str | None
    stripe_location_id: str | None


class ActivityPublic(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    object: Literal["activity"] = "activity"
    contact_id: str
    type: str = Field(description="The kind of activity (the event type, unless the flow says)")
    title: str | None
    data: JsonObject = Field(description="The other fields the flow mapped")
    occurred_at: Timestamp | None
    event_id: str
    flow: str
    test: Flag
    created_at: Timestamp | None
