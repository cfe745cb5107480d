"""What the API alone has: request bodies, the error envelope, and the few answers that wrap
a domain model (every resource's own shape is its domain model: records.models, keys.ApiKey,
inbox.Event, ...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from snapshots import keys, nesting
from snapshots.records import models


class ReplayRequest(BaseModel):
    """Which dead or failed items to queue again (at most 50,000 a run, oldest first)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["dead", "failed"] = "dead"
    since: str | None = Field(
        None,
        max_length=64,
        description="Only items received since: a duration back (2h, 7d), an ISO date or "
        "date-time, or unix seconds",
    )
    type: str | None = Field(
        None, max_length=255, description="Only this event type; `*` wildcards (invoice.*)"
    )
    error: str | None = Field(
        None, max_length=500, description="Only items whose error contains this (any case)"
    )
    connection_id: str | None = Field(None, max_length=40)
    dry_run: bool = Field(False, description="Count and show the errors only: nothing changes")


ConnectionId = Annotated[str, Field(max_length=40, pattern=r"^conn_[A-Za-z0-9]+$")]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=keys.NAME_MAX)
    scopes: list[str] = Field(min_length=1, description=f"Of: {', '.join(keys.SCOPES)}")
    expires_in: str | None = Field(None, description="A lifetime such as 90d or 12h")
    connections: list[ConnectionId] | None = Field(
        None,
        max_length=keys.MAX_CONNECTIONS,
        description="Limit the key to these connections' records and events (default: all)",
    )


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: str = Field(
        default="24h",
        description="How long the old key keeps working (0s: it stops now), at most 30d",
    )


class FlowsImport(BaseModel):
    text: str = Field(description="A flows file (YAML)", max_length=1024 * 1024)
    comment: str | None = Field(None, max_length=500)


class FlowsRollback(BaseModel):
    version: int = Field(ge=0, le=2**31 - 1)  # flow_versions.version is a 32-bit integer


class ErrorBody(BaseModel):
    type: str
    code: str
    message: str
    request_id: str
    scope: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# Writes. Bodies refuse unknown fields (400 `parameter_invalid`); a field the API may not change
# is refused before, with 400 `read_only_field` saying why (records.READ_ONLY). JSON fields merge
# key by key: a key set to null is removed.


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _plain_key(value: str) -> str:
    if any(c in value for c in ".[]\x00"):
        raise ValueError("keys may not contain '.', '[', ']' or NUL")
    return value


def _json_text(value: Any) -> Any:
    """JSON no deeper than `nesting.MAX_DEPTH` whose strings are all valid Unicode (no lone
    surrogates), keys included."""
    if nesting.too_deep(value):
        raise ValueError(f"nests deeper than {nesting.MAX_DEPTH} levels")
    return _unicode(value)


def _unicode(value: Any) -> Any:
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, inner in items:
        for text in (key, inner):
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError:
                    raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
        _unicode(inner)
    return value


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


Text512 = Annotated[str, Field(max_length=512), AfterValidator(_no_nul)]
Email = Annotated[
    str, Field(max_length=512, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$", examples=["ada@example.com"])
]
Phone = Annotated[str, Field(max_length=100), AfterValidator(_no_nul)]
StripeCustomerId = Annotated[
    str, Field(max_length=255, pattern=r"^cus_[A-Za-z0-9_]+$", examples=["cus_NffrFeUfNV2Hib"])
]
Country = Annotated[
    str,
    Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2", examples=["US"]),
    AfterValidator(str.upper),
]
Currency = Annotated[
    str,
    Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217, stored lower-case", examples=["usd"]),
    AfterValidator(str.lower),
]
MetadataKey = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_plain_key)]
MetadataValue = Annotated[str, Field(max_length=500), AfterValidator(_no_nul)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue | None],
    Field(max_length=50, description="Merged into the record's: a key set to null is removed"),
]
CustomKey = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_plain_key)]
Custom = Annotated[
    dict[CustomKey, Any],
    Field(max_length=100, description="Merged into the record's: a key set to null is removed"),
    AfterValidator(_json_text),
]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_no_nul),
]
Tags = Annotated[
    list[Tag],
    Field(max_length=100, description="Replaces the contact's tags"),
    AfterValidator(_unique),
]
Notes = Annotated[str, Field(max_length=10_000), AfterValidator(_no_nul)]
PaymentStatus = Literal[
    "draft", "unpaid", "partially_paid", "failed", "paid", "void", "uncollectible"
]


class AddressWrite(BaseModel):
    """A whole address: it replaces the record's (null clears it)."""

    model_config = ConfigDict(extra="forbid")

    line1: Text512 | None = None
    line2: Text512 | None = None
    city: Text512 | None = None
    state: Text512 | None = None
    postal_code: Text512 | None = None
    country: Text512 | None = None


class ContactFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    name: Text512 | None = None
    phone: Phone | None = None
    address: AddressWrite | None = None
    metadata: Metadata = Field(default_factory=dict)
    custom: Custom = Field(default_factory=dict)
    tags: Tags = Field(default_factory=list)


class ContactUpsert(ContactFields):
    """Matched on `stripe_customer_id`, then on `email`; one of them is required."""

    stripe_customer_id: StripeCustomerId | None = Field(
        None, description="Links a new contact, or one that has none, to this Stripe customer"
    )
    connection_id: ConnectionId | None = Field(
        None,
        description="The connection a new contact belongs to (required from an API key "
        "limited to several connections; by default the key's only one, else none)",
    )

    @model_validator(mode="after")
    def _has_a_match(self) -> ContactUpsert:
        if not self.stripe_customer_id and not self.email:
            raise PydanticCustomError(
                "match_missing", "give stripe_customer_id or email to match a contact on"
            )
        return self


class ContactPatch(ContactFields):
    """The fields to change; null clears email, name, phone or address."""


class ContactUpserted(BaseModel):
    created: bool = Field(description="A new contact was made (201) rather than updated (200)")
    customer: models.ContactPublic


class LocationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: ConnectionId | None = Field(
        None,
        description="The connection it belongs to (required from an API key limited to "
        "several connections; by default the key's only one, else none)",
    )
    name: Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_no_nul)]
    address: AddressWrite | None = None
    country: Country | None = Field(None, description="Defaults to the address's country")
    currency: Currency | None = None
    metadata: Metadata = Field(default_factory=dict)
    custom: Custom = Field(default_factory=dict)


class LocationPatch(BaseModel):
    """The fields to change; null clears address, country or currency."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_no_nul)] | None = None
    address: AddressWrite | None = None
    country: Country | None = None
    currency: Currency | None = None
    metadata: Metadata = Field(default_factory=dict)
    custom: Custom = Field(default_factory=dict)

    @field_validator("name", mode="after")
    @classmethod
    def _named(cls, name: str | None) -> str:
        if name is None:
            raise ValueError("a location needs a name")
        return name


class InvoicePatch(BaseModel):
    """Only the payment status and notes: every other field is Stripe's."""

    model_config = ConfigDict(extra="forbid")

    payment_status: PaymentStatus | None = Field(None, description="Overrides Stripe's")
    notes: Notes | None = Field(None, description="Free text; null clears it")

    @field_validator("payment_status", mode="after")
    @classmethod
    def _status(cls, status: str | None) -> str:
        if status is None:
            raise ValueError("payment_status cannot be null")
        return status


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="A short name flows use")
    url: str = Field(min_length=1, max_length=2000, description="Where messages are POSTed")
    description: str | None = Field(None, max_length=500)


class EndpointRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: str = Field(
        default="24h",
        description="How long the old secret keeps signing (0s: it stops now), at most 30d",
    )


class EndpointRecover(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: str = Field(description="Deliveries made since: 2d, 2024-01-31, ...")


class Recovered(BaseModel):
    requeued: int = Field(description="How many deliveries were queued again")
