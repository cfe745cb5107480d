"""Response shapes for the OpenAPI document."""

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


class Address(BaseModel):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class RecordPublic(BaseModel):
    id: str
    connection_id: str | None
    metadata: dict[str, Any]
    custom: dict[str, Any] = Field(description="Custom fields flows map (`custom.plan`)")
    archived: bool
    livemode: bool | None
    test: bool
    created_at: str
    updated_at: str


class ContactPublic(RecordPublic):
    object: Literal["contact"]
    email: str | None
    name: str | None
    phone: str | None
    address: Address | None
    tags: list[str]
    stripe_customer_id: str | None
    stripe_created: str | None


class InvoicePublic(RecordPublic):
    object: Literal["invoice"]
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
    due_date: str | None
    paid_at: str | None
    notes: str | None = Field(None, description="Written through the API only")
    stripe_invoice_id: str
    stripe_customer_id: str | None
    stripe_created: str | None


class LocationPublic(RecordPublic):
    object: Literal["location"]
    name: str | None
    address: Address | None
    country: str | None
    currency: str | None
    stripe_location_id: str | None


class ContactsPublic(BaseModel):
    data: list[ContactPublic]
    has_more: bool


class InvoicesPublic(BaseModel):
    data: list[InvoicePublic]
    has_more: bool


class LocationsPublic(BaseModel):
    data: list[LocationPublic]
    has_more: bool


class EventPublic(BaseModel):
    id: int
    connection_id: str
    event_id: str
    event_type: str
    event_created: int
    api_version: str | None
    livemode: bool
    source: str
    status: str
    attempts: int
    last_error: str | None
    flows: list[str]
    records: list[str] = Field(description="The records the flows wrote, in their order")
    received_at: str
    processed_at: str | None


class EventsPublic(BaseModel):
    data: list[EventPublic]
    has_more: bool


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


class ReplayFilter(BaseModel):
    status: str
    since: str | None
    type: str | None
    error: str | None
    connection_id: str | None


class ErrorCount(BaseModel):
    error: str
    count: int


class ReplayPreview(BaseModel):
    filter: ReplayFilter
    matched: int = Field(description="Items the filter matches now")
    quota: int = Field(description="How many a run would queue again (at most 50,000)")
    capped: bool
    top_errors: list[ErrorCount]
    dry_run: Literal[True]


class ReplayJobPublic(BaseModel):
    id: str
    object: Literal["replay_job"]
    status: str = Field(description="queued, running, done or failed")
    filter: ReplayFilter
    matched: int = Field(description="Items the filter matched when the job was made")
    quota: int = Field(description="How many it queues again (the oldest, at most 50,000)")
    capped: bool = Field(description="More matched than one run queues: run it again")
    requeued: int = Field(description="Queued again so far")
    top_errors: list[ErrorCount]
    actor: str
    error: str | None
    created_at: str | None
    updated_at: str | None
    finished_at: str | None


class SyncRunPublic(BaseModel):
    id: str
    connection_id: str
    kind: str = Field(description="backfill or reconcile")
    object: str = Field(description="customers, invoices, locations or events")
    since: str | None
    status: str = Field(description="running, done, failed or interrupted")
    pages: int
    objects: int = Field(description="Objects read from Stripe so far")
    enqueued: int = Field(description="New inbox items (duplicates are not counted)")
    rate: float = Field(description="Objects read per second")
    error: str | None
    warning: str | None
    started_at: str
    updated_at: str
    finished_at: str | None


class SyncRunsPublic(BaseModel):
    data: list[SyncRunPublic]
    has_more: bool


class ActivityPublic(BaseModel):
    id: str
    object: Literal["activity"]
    contact_id: str
    type: str = Field(description="The kind of activity (the event type, unless the flow says)")
    title: str | None
    data: dict[str, Any] = Field(description="The other fields the flow mapped")
    occurred_at: str | None
    event_id: str
    flow: str
    test: bool
    created_at: str | None


class ActivitiesPublic(BaseModel):
    data: list[ActivityPublic]
    has_more: bool


class TriggerPublic(BaseModel):
    type: str
    object: str
    description: str
    synthetic: bool = Field(description="Made by Snapshots, not sent by Stripe")


class ActionPublic(BaseModel):
    name: str
    records: list[str]
    targets: list[str]
    nested_targets: list[str]
    options: list[str]
    required: list[str]
    scopes: list[str] = Field(description="The API scopes that may write what it writes")
    description: str


class CatalogPublic(BaseModel):
    counts: dict[str, int]
    triggers: list[TriggerPublic]
    actions: list[ActionPublic]


class FlowVersionPublic(BaseModel):
    version: int
    actor: str
    comment: str | None
    created_at: str | None
    text: str | None = Field(None, description="The flows file (YAML)")


class FlowVersionsPublic(BaseModel):
    data: list[FlowVersionPublic]
    has_more: bool


class FlowsImport(BaseModel):
    text: str = Field(description="A flows file (YAML)", max_length=1024 * 1024)
    comment: str | None = Field(None, max_length=500)


class FlowsRollback(BaseModel):
    version: int = Field(ge=0, le=2**31 - 1)  # flow_versions.version is a 32-bit integer


class ApiKeyPublic(BaseModel):
    id: str
    object: Literal["api_key"]
    name: str
    key: str = Field(description="The key's prefix and last 4 characters, never the secret")
    scopes: list[str]
    status: str = Field(description="active, expired or revoked")
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    last_used_ip: str | None
    revoked_at: str | None
    rotated_from: str | None


class ApiKeyCreated(ApiKeyPublic):
    secret: str = Field(description="The key itself: shown in this response only")


class ApiKeyRotated(ApiKeyCreated):
    previous: ApiKeyPublic = Field(description="The old key, working until its expires_at")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    has_more: bool


class AuditEntryPublic(BaseModel):
    id: int
    at: str | None
    actor: str
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any]
    request_id: str | None
    ip: str | None


class AuditEntriesPublic(BaseModel):
    data: list[AuditEntryPublic]
    has_more: bool


class WebhookReceipt(BaseModel):
    received: bool
    item_id: int
    event_id: str
    type: str
    status: str
    duplicate: bool


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
    """JSON whose strings are all valid Unicode (no lone surrogates), keys included."""
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
        _json_text(inner)
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
    customer: ContactPublic


class LocationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
