"""Locations, contacts (`/v1/customers`) and invoices: lists with filters, reads, and writes.

Writes take an optional `Idempotency-Key` header (idempotency.py) and stamp each field they set
with the time of the request, so a later Stripe event about the same object overwrites an edit
and an older one does not (records.py). Record writes are not audited: the audit log is for
configuration and security changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from snapshots import errors, idempotency, keys, records
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(
    prefix="/v1",
    responses={401: {"model": schemas.ErrorResponse}, 403: {"model": schemas.ErrorResponse}},
)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[str | None, Query(description="The id of the last record of the previous page.")]
Order = Annotated[
    Literal["desc", "asc"],
    Query(description="Creation order: desc (newest first, the default) or asc (oldest first)."),
]
Archived = Annotated[
    bool | None,
    Query(description="true: only archived records; false: only the others; both when absent."),
]
UpdatedSince = Annotated[
    str | None,
    Query(
        description="Only records updated at or after this moment: an ISO 8601 date "
        "(2026-01-31, midnight UTC), a date-time (2026-01-31T12:00:00Z; UTC unless it has an "
        "offset), or unix seconds (1769860800).",
        max_length=64,
    ),
]
StripeCustomer = Annotated[
    str | None,
    Query(max_length=255, description="Only records of this Stripe customer (cus_...)."),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="1 to 255 printable ASCII characters, unique per request (a UUID): a retry "
        "with the same key and the same request returns the first response, with "
        f"`{idempotency.REPLAYED}: true`, instead of writing again. Kept 24 hours per API key.",
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorResponse}}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "Invalid body, or a read-only field"},
    409: {"model": schemas.ErrorResponse, "description": "Idempotency-Key reused or in use"},
}

ContactsWriter = Annotated[keys.ApiKey, Depends(deps.require("contacts.write"))]
LocationsWriter = Annotated[keys.ApiKey, Depends(deps.require("saas/location.write"))]
InvoicesWriter = Annotated[keys.ApiKey, Depends(deps.require("invoices.write"))]


def _read_only(kind: str) -> Any:
    """A dependency refusing a body that sets a field the API may not change (400
    `read_only_field`, saying why), before the body's own validation would call it unknown."""

    async def refuse_read_only(request: Request) -> None:
        try:
            body = await request.json()
        except ValueError:  # not JSON: the body's validation says so
            return
        if isinstance(body, dict):
            records.refuse_read_only(kind, body)

    return Depends(refuse_read_only)


ContactOnly = Annotated[None, _read_only("contact")]
LocationOnly = Annotated[None, _read_only("location")]
InvoiceOnly = Annotated[None, _read_only("invoice")]


def parse_since(text: str) -> float:
    """`updated_since` in unix seconds: from unix seconds or an ISO 8601 date or date-time."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            seconds = math.nan
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise errors.BadRequest(
            f"updated_since: {text!r} is not a time: use an ISO 8601 date or date-time "
            "(2026-01-31, 2026-01-31T12:00:00Z) or unix seconds",
            code="parameter_invalid",
        )
    return seconds


async def _page(
    state: StateDep,
    kind: str,
    limit: int,
    after: str | None,
    *,
    order: Literal["desc", "asc"] = "desc",
    updated_since: str | None = None,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    for name, value in (filters or {}).items():
        if isinstance(value, str) and "\x00" in value:
            raise errors.BadRequest(f"{name}: must not contain NUL", code="parameter_invalid")
    data, has_more = await run_in_threadpool(
        records.page,
        state.db,
        kind,
        limit=limit,
        starting_after=after,
        order=order,
        filters=filters,
        updated_since=None if updated_since is None else parse_since(updated_since),
    )
    return {"data": data, "has_more": has_more}


def _fields(body: BaseModel) -> dict[str, Any]:
    """The fields a write body sets; an address is whole (the keys it leaves out are null)."""
    fields = body.model_dump(exclude_unset=True, mode="json")
    address = getattr(body, "address", None)
    if "address" in fields and address is not None:
        fields["address"] = address.model_dump(mode="json")
    return fields


async def _write(
    state: StateDep,
    api_key: keys.ApiKey,
    request: Request,
    key: str | None,
    work: Callable[[Connection, records.Version], tuple[int, dict[str, Any]]],
) -> JSONResponse:
    version = records.api_version(deps.request_id(request))
    return await idempotency.run(
        state.db, api_key.id, request, lambda conn: work(conn, version), key=key
    )


# Locations.


@router.get(
    "/locations",
    response_model=schemas.LocationsPublic,
    tags=["locations"],
    responses={400: {"model": schemas.ErrorResponse}},
    summary="List locations (scope saas/location.read)",
    dependencies=[deps.scope("saas/location.read")],
)
async def list_locations(
    state: StateDep,
    limit: Limit = 20,
    starting_after: After = None,
    archived: Archived = None,
    updated_since: UpdatedSince = None,
    country: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z]{2}$",
            description="Only locations in this country (ISO 3166-1 alpha-2, any case).",
        ),
    ] = None,
    order: Order = "desc",
) -> dict[str, Any]:
    filters = {"archived": archived, "country": None if country is None else country.upper()}
    return await _page(
        state,
        "location",
        limit,
        starting_after,
        order=order,
        updated_since=updated_since,
        filters=filters,
    )


@router.get(
    "/locations/{location_id}",
    response_model=schemas.LocationPublic,
    tags=["locations"],
    responses=NOT_FOUND,
    summary="Get a location (scope saas/location.read)",
    dependencies=[deps.scope("saas/location.read")],
)
async def get_location(location_id: str, state: StateDep) -> dict[str, Any]:
    return await run_in_threadpool(records.get, state.db, "location", location_id)


@router.post(
    "/locations",
    response_model=schemas.LocationPublic,
    status_code=201,
    tags=["locations"],
    responses=WRITE_ERRORS,
    summary="Create a location of your own, not linked to Stripe (scope saas/location.write)",
)
async def create_location(
    body: schemas.LocationCreate,
    request: Request,
    state: StateDep,
    api_key: LocationsWriter,
    _: LocationOnly,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    fields = _fields(body)

    def work(conn: Connection, version: records.Version) -> tuple[int, dict[str, Any]]:
        return 201, records.create_location(conn, fields=fields, version=version)

    return await _write(state, api_key, request, idempotency_key, work)


@router.patch(
    "/locations/{location_id}",
    response_model=schemas.LocationPublic,
    tags=["locations"],
    responses={**WRITE_ERRORS, **NOT_FOUND},
    summary="Change a location; stripe_location_id is read-only (scope saas/location.write)",
)
async def update_location(
    location_id: str,
    body: schemas.LocationPatch,
    request: Request,
    state: StateDep,
    api_key: LocationsWriter,
    _: LocationOnly,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    changes = _fields(body)

    def work(conn: Connection, version: records.Version) -> tuple[int, dict[str, Any]]:
        edited = records.edit(conn, "location", location_id, changes=changes, version=version)
        return 200, edited

    return await _write(state, api_key, request, idempotency_key, work)


# Contacts.


@router.get(
    "/customers",
    response_model=schemas.ContactsPublic,
    tags=["contacts"],
    responses={400: {"model": schemas.ErrorResponse}},
    summary="List contacts (scope contacts.readonly)",
    dependencies=[deps.scope("contacts.readonly")],
)
async def list_customers(
    state: StateDep,
    limit: Limit = 20,
    starting_after: After = None,
    email: Annotated[
        str | None,
        Query(max_length=512, description="Only contacts with this email (exact, as Stripe's)."),
    ] = None,
    stripe_customer_id: StripeCustomer = None,
    archived: Archived = None,
    updated_since: UpdatedSince = None,
    order: Order = "desc",
) -> dict[str, Any]:
    filters = {"email": email, "stripe_customer_id": stripe_customer_id, "archived": archived}
    return await _page(
        state,
        "contact",
        limit,
        starting_after,
        order=order,
        updated_since=updated_since,
        filters=filters,
    )


@router.post(
    "/customers/upsert",
    response_model=schemas.ContactUpserted,
    tags=["contacts"],
    responses={
        201: {"model": schemas.ContactUpserted, "description": "A new contact"},
        **WRITE_ERRORS,
    },
    summary="Create or update a contact, matched on stripe_customer_id then email "
    "(scope contacts.write)",
)
async def upsert_customer(
    body: schemas.ContactUpsert,
    request: Request,
    state: StateDep,
    api_key: ContactsWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Updates the contact of `stripe_customer_id` (on any connection), else the oldest
    unarchived contact with `email` (when a customer id is given too, only a contact not yet
    linked to a Stripe customer, which it then links); else creates a contact (201). A new
    contact belongs to no connection until the first event about its customer claims it."""
    fields = _fields(body)

    def work(conn: Connection, version: records.Version) -> tuple[int, dict[str, Any]]:
        created, contact = records.upsert_contact_by_api(conn, fields=fields, version=version)
        return (201 if created else 200), {"created": created, "customer": contact}

    return await _write(state, api_key, request, idempotency_key, work)


@router.get(
    "/customers/{contact_id}",
    response_model=schemas.ContactPublic,
    tags=["contacts"],
    responses=NOT_FOUND,
    summary="Get a contact (scope contacts.readonly)",
    dependencies=[deps.scope("contacts.readonly")],
)
async def get_customer(contact_id: str, state: StateDep) -> dict[str, Any]:
    return await run_in_threadpool(records.get, state.db, "contact", contact_id)


@router.patch(
    "/customers/{contact_id}",
    response_model=schemas.ContactPublic,
    tags=["contacts"],
    responses={**WRITE_ERRORS, **NOT_FOUND},
    summary="Change a contact; stripe_customer_id is read-only (scope contacts.write)",
)
async def update_customer(
    contact_id: str,
    body: schemas.ContactPatch,
    request: Request,
    state: StateDep,
    api_key: ContactsWriter,
    _: ContactOnly,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """`metadata` and `custom` merge key by key (null removes a key), `tags` replaces the
    list, `address` replaces the address. A later Stripe event changing the same field wins."""
    changes = _fields(body)

    def work(conn: Connection, version: records.Version) -> tuple[int, dict[str, Any]]:
        edited = records.edit(conn, "contact", contact_id, changes=changes, version=version)
        return 200, edited

    return await _write(state, api_key, request, idempotency_key, work)


@router.delete(
    "/customers/{contact_id}",
    response_model=schemas.ContactPublic,
    tags=["contacts"],
    responses={**WRITE_ERRORS, **NOT_FOUND},
    summary="Archive a contact (scope contacts.write)",
)
async def archive_customer(
    contact_id: str,
    request: Request,
    state: StateDep,
    api_key: ContactsWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Archiving an archived contact changes nothing. A later Stripe event about its customer
    (not a deletion) brings it back, as it would any field."""

    def work(conn: Connection, version: records.Version) -> tuple[int, dict[str, Any]]:
        return 200, records.archive(conn, "contact", contact_id, version=version)

    return await _write(state, api_key, request, idempotency_key, work)


@router.get(
    "/customers/{contact_id}/activities",
    response_model=schemas.ActivitiesPublic,
    tags=["contacts"],
    responses={**NOT_FOUND, 400: {"model": schemas.ErrorResponse}},
    summary="A contact's timeline, newest first (scope contacts.readonly)",
    dependencies=[deps.scope("contacts.readonly")],
)
async def list_activities(
    contact_id: str,
    state: StateDep,
    limit: Limit = 20,
    starting_after: Annotated[
        str | None, Query(description="The id of the last activity of the previous page.")
    ] = None,
) -> dict[str, Any]:
    data, has_more = await run_in_threadpool(
        records.activities, state.db, contact_id, limit=limit, starting_after=starting_after
    )
    return {"data": data, "has_more": has_more}


# Invoices.


@router.get(
    "/invoices",
    response_model=schemas.InvoicesPublic,
    tags=["invoices"],
    responses={400: {"model": schemas.ErrorResponse}},
    summary="List invoices (scope invoices.readonly)",
    dependencies=[deps.scope("invoices.readonly")],
)
async def list_invoices(
    state: StateDep,
    limit: Limit = 20,
    starting_after: After = None,
    status: Annotated[
        Literal["draft", "open", "paid", "uncollectible", "void"] | None,
        Query(description="Only invoices with this Stripe status."),
    ] = None,
    payment_status: Annotated[
        schemas.PaymentStatus | None,
        Query(description="Only invoices with this payment status."),
    ] = None,
    customer_id: Annotated[
        str | None, Query(max_length=255, description="Only invoices of this contact (con_...).")
    ] = None,
    stripe_customer_id: StripeCustomer = None,
    archived: Archived = None,
    updated_since: UpdatedSince = None,
    order: Order = "desc",
) -> dict[str, Any]:
    filters = {
        "status": status,
        "payment_status": payment_status,
        "customer_id": customer_id,
        "stripe_customer_id": stripe_customer_id,
        "archived": archived,
    }
    return await _page(
        state,
        "invoice",
        limit,
        starting_after,
        order=order,
        updated_since=updated_since,
        filters=filters,
    )


@router.get(
    "/invoices/{invoice_id}",
    response_model=schemas.InvoicePublic,
    tags=["invoices"],
    responses=NOT_FOUND,
    summary="Get an invoice (scope invoices.readonly)",
    dependencies=[deps.scope("invoices.readonly")],
)
async def get_invoice(invoice_id: str, state: StateDep) -> dict[str, Any]:
    return await run_in_threadpool(records.get, state.db, "invoice", invoice_id)


@router.patch(
    "/invoices/{invoice_id}",
    response_model=schemas.InvoicePublic,
    tags=["invoices"],
    responses={**WRITE_ERRORS, **NOT_FOUND},
    summary="Set an invoice's payment status or notes; every other field is Stripe's "
    "(scope invoices.write)",
)
async def update_invoice(
    invoice_id: str,
    body: schemas.InvoicePatch,
    request: Request,
    state: StateDep,
    api_key: InvoicesWriter,
    _: InvoiceOnly,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    changes = _fields(body)

    def work(conn: Connection, version: records.Version) -> tuple[int, dict[str, Any]]:
        edited = records.edit(conn, "invoice", invoice_id, changes=changes, version=version)
        return 200, edited

    return await _write(state, api_key, request, idempotency_key, work)
