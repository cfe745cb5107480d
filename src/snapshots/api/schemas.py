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
