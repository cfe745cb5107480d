"""Response shapes for the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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
    version: int = Field(ge=0)


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
