"""Locations, contacts (`/v1/customers`) and invoices: lists with filters, reads, and writes.

Writes take an optional `Idempotency-Key` header and stamp each field they set with the time of
the request, so a later Stripe event about the same object overwrites an edit and an older one
does not (records/edits.py). Record writes are not audited: the audit log is for configuration
and security changes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from snapshots import errors, keys, paging, times
from snapshots.api import deps, idempotency, schemas
from snapshots.api.deps import StateDep
from snapshots.records import edits, models, ordering, reads, timeline
from snapshots.records.kinds import CONTACT, INVOICE, LOCATION, Kind, M
from snapshots.store import reader
from snapshots.store.db import Tx

router = APIRouter(prefix="/v1", responses=deps.ERRORS)

Archived = Annotated[
    bool | None,
    Query(description="true: only archived records; false: only the others; both when absent."),
]
UpdatedSince = Annotated[
    str | None,
    Query(
        description="Only records updated at or after this moment: an ISO 8601 date "
        "(2026-01-31, midnight UTC), a date-time (2026-01-31T12:00:00Z; UTC unless it has an "
        "offset), unix seconds (1769860800), or a duration back from now (72h).",
        max_length=64,
    ),
]
StripeCustomer = Annotated[
    str | None,
    Query(max_length=255, description="Only records of this Stripe customer (cus_...)."),
]


def _read_only(kind: Kind[Any], *, creating: bool = False) -> Any:
    """A dependency refusing a body that sets a field the API may not change (400
    `read_only_field`, saying why), before the body's own validation would call it unknown.
    A new record may name its connection (`connection_id`)."""

    async def refuse_read_only(request: Request) -> None:
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # not JSON (or absurdly deep): validation says so
            return
        if isinstance(body, dict):
            if creating:
                body = {k: v for k, v in body.items() if k != "connection_id"}
            edits.refuse_read_only(kind, body)

    return Depends(refuse_read_only)


ContactOnly = Annotated[None, _read_only(CONTACT)]
LocationOnly = Annotated[None, _read_only(LOCATION)]
NewLocationOnly = Annotated[None, _read_only(LOCATION, creating=True)]
InvoiceOnly = Annotated[None, _read_only(INVOICE)]


async def _page(
    state: deps.State,
    api_key: keys.ApiKey,
    kind: Kind[M],
    limit: int,
    after: str | None,
    *,
    order: Literal["desc", "asc"] = "desc",
    updated_since: str | None = None,
    filters: dict[str, Any] | None = None,
) -> Response:
    """A page of records, answered from the rows as JSON text (`reads.page_json`); the route
    declares `paging.Page[<public model>]` as its response model for the OpenAPI document."""
    filters = {name: value for name, value in (filters or {}).items() if value is not None}
    for name, value in filters.items():
        if isinstance(value, str) and "\x00" in value:
            raise errors.BadRequest(f"{name}: must not contain NUL", code="parameter_invalid")
    since = (
        None if updated_since is None else times.parse_since(updated_since, name="updated_since")
    )

    def read() -> bytes:
        with state.db.read() as tx:
            return reads.page_json(
                tx,
                kind,
                limit=limit,
                starting_after=after,
                order=order,
                filters=filters,
                updated_since=since,
                connections=api_key.connections,
            )

    # Unfiltered, a page walks the creation index `limit` rows long; a filter may scan.
    bounded = not filters and since is None and api_key.connections is None
    body = await reader.read(state.db, read, bounded=bounded)
    return Response(body, media_type="application/json")


async def _get(state: deps.State, api_key: keys.ApiKey, kind: Kind[M], record_id: str) -> M:
    def read() -> M:
        with state.db.read() as tx:
            return reads.get(tx, kind, record_id, connections=api_key.connections)

    return await reader.read(state.db, read)


def _fields(body: BaseModel) -> dict[str, Any]:
    """The fields a write body sets; an address is whole (the keys it leaves out are null)."""
    fields = body.model_dump(exclude_unset=True, mode="json")
    address = getattr(body, "address", None)
    if "address" in fields and address is not None:
        fields["address"] = address.model_dump(mode="json")
    return fields


def _write(
    state: deps.State,
    request: Request,
    raw: bytes,
    key: str | None,
    api_key_id: str,
    work: Any,
) -> JSONResponse:
    """An API write: `work(tx, ordering key)` -> (status, answer), once per Idempotency-Key."""
    stamp = ordering.api_write(deps.request_id(request))
    return idempotency.write(state, api_key_id, request, raw, key, lambda tx: work(tx, stamp))


# Locations.


@router.get(
    "/locations",
    response_model=paging.Page[models.LocationPublic],
    tags=["locations"],
    summary="List locations (scope saas/location.read)",
)
async def list_locations(
    state: StateDep,
    api_key: deps.LocationsReader,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
    archived: Archived = None,
    test: deps.TestOnly = None,
    updated_since: UpdatedSince = None,
    country: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z]{2}$",
            description="Only locations in this country (ISO 3166-1 alpha-2, any case).",
        ),
    ] = None,
    order: deps.Order = "desc",
) -> Response:
    filters = {
        "archived": archived,
        "test": test,
        "country": None if country is None else country.upper(),
    }
    return await _page(
        state,
        api_key,
        LOCATION,
        limit,
        starting_after,
        order=order,
        updated_since=updated_since,
        filters=filters,
    )


@router.get(
    "/locations/{location_id}",
    response_model=models.LocationPublic,
    tags=["locations"],
    summary="Get a location (scope saas/location.read)",
)
async def get_location(
    location_id: str, state: StateDep, api_key: deps.LocationsReader
) -> Response:
    return deps.respond(await _get(state, api_key, LOCATION, location_id))


@router.post(
    "/locations",
    response_model=models.LocationPublic,
    status_code=201,
    tags=["locations"],
    responses=deps.WRITE_ERRORS,
    summary="Create a location of your own, not linked to Stripe (scope saas/location.write)",
)
def create_location(
    body: schemas.LocationCreate,
    request: Request,
    raw: idempotency.RawBody,
    state: StateDep,
    api_key: deps.LocationsWriter,
    _: NewLocationOnly,
    idempotency_key: idempotency.Key = None,
) -> JSONResponse:
    fields = _fields(body)
    fields.pop("connection_id", None)

    def work(tx: Tx, stamp: ordering.Key) -> tuple[int, BaseModel]:
        return 201, edits.create_location(
            tx,
            fields=fields,
            key=stamp,
            connections=api_key.connections,
            connection_id=body.connection_id,
        )

    return _write(state, request, raw, idempotency_key, api_key.id, work)


@router.patch(
    "/locations/{location_id}",
    response_model=models.LocationPublic,
    tags=["locations"],
    responses=deps.WRITE_ERRORS,
    summary="Change a location; stripe_location_id is read-only (scope saas/location.write)",
)
def update_location(
    location_id: str,
    body: schemas.LocationPatch,
    request: Request,
    raw: idempotency.RawBody,
    state: StateDep,
    api_key: deps.LocationsWriter,
    _: LocationOnly,
    idempotency_key: idempotency.Key = None,
) -> JSONResponse:
    changes = _fields(body)

    def work(tx: Tx, stamp: ordering.Key) -> tuple[int, BaseModel]:
        return 200, edits.edit(
            tx, LOCATION, location_id, changes=changes, key=stamp, connections=api_key.connections
        )

    return _write(state, request, raw, idempotency_key, api_key.id, work)


# Contacts.


@router.get(
    "/customers",
    response_model=paging.Page[models.ContactPublic],
    tags=["contacts"],
    summary="List contacts (scope contacts.readonly)",
)
async def list_customers(
    state: StateDep,
    api_key: deps.ContactsReader,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
    email: Annotated[
        str | None,
        Query(max_length=512, description="Only contacts with this email (exact, as Stripe's)."),
    ] = None,
    stripe_customer_id: StripeCustomer = None,
    archived: Archived = None,
    test: deps.TestOnly = None,
    updated_since: UpdatedSince = None,
    order: deps.Order = "desc",
) -> Response:
    filters = {
        "email": email,
        "stripe_customer_id": stripe_customer_id,
        "archived": archived,
        "test": test,
    }
    return await _page(
        state,
        api_key,
        CONTACT,
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
        **deps.WRITE_ERRORS,
    },
    summary="Create or update a contact, matched on stripe_customer_id then email "
    "(scope contacts.write)",
)
def upsert_customer(
    body: schemas.ContactUpsert,
    request: Request,
    raw: idempotency.RawBody,
    state: StateDep,
    api_key: deps.ContactsWriter,
    idempotency_key: idempotency.Key = None,
) -> JSONResponse:
    """Updates the contact of `stripe_customer_id` (on any connection), else the oldest
    unarchived contact with `email` (when a customer id is given too, only a contact not yet
    linked to a Stripe customer, which it then links); else creates a contact (201). A new
    contact belongs to no connection until the first event about its customer claims it."""
    fields = _fields(body)
    fields.pop("connection_id", None)

    def work(tx: Tx, stamp: ordering.Key) -> tuple[int, BaseModel]:
        created, contact = edits.upsert_contact(
            tx,
            fields=fields,
            key=stamp,
            connections=api_key.connections,
            connection_id=body.connection_id,
        )
        return (201 if created else 200), schemas.ContactUpserted(created=created, customer=contact)

    return _write(state, request, raw, idempotency_key, api_key.id, work)


@router.get(
    "/customers/{contact_id}",
    response_model=models.ContactPublic,
    tags=["contacts"],
    summary="Get a contact (scope contacts.readonly)",
)
async def get_customer(contact_id: str, state: StateDep, api_key: deps.ContactsReader) -> Response:
    return deps.respond(await _get(state, api_key, CONTACT, contact_id))


@router.patch(
    "/customers/{contact_id}",
    response_model=models.ContactPublic,
    tags=["contacts"],
    responses=deps.WRITE_ERRORS,
    summary="Change a contact; stripe_customer_id is read-only (scope contacts.write)",
)
def update_customer(
    contact_id: str,
    body: schemas.ContactPatch,
    request: Request,
    raw: idempotency.RawBody,
    state: StateDep,
    api_key: deps.ContactsWriter,
    _: ContactOnly,
    idempotency_key: idempotency.Key = None,
) -> JSONResponse:
    """`metadata` and `custom` merge key by key (null removes a key), `tags` replaces the
    list, `address` replaces the address. A later Stripe event changing the same field wins."""
    changes = _fields(body)

    def work(tx: Tx, stamp: ordering.Key) -> tuple[int, BaseModel]:
        return 200, edits.edit(
            tx, CONTACT, contact_id, changes=changes, key=stamp, connections=api_key.connections
        )

    return _write(state, request, raw, idempotency_key, api_key.id, work)


@router.delete(
    "/customers/{contact_id}",
    response_model=models.ContactPublic,
    tags=["contacts"],
    responses=deps.WRITE_ERRORS,
    summary="Archive a contact (scope contacts.write)",
)
def archive_customer(
    contact_id: str,
    request: Request,
    raw: idempotency.RawBody,
    state: StateDep,
    api_key: deps.ContactsWriter,
    idempotency_key: idempotency.Key = None,
) -> JSONResponse:
    """Archiving an archived contact changes nothing. A later Stripe event about its customer
    (not a deletion) brings it back, as it would any field."""

    def work(tx: Tx, stamp: ordering.Key) -> tuple[int, BaseModel]:
        return 200, edits.archive(
            tx, CONTACT, contact_id, key=stamp, connections=api_key.connections
        )

    return _write(state, request, raw, idempotency_key, api_key.id, work)


@router.get(
    "/customers/{contact_id}/activities",
    tags=["contacts"],
    summary="A contact's timeline, newest first (scope contacts.readonly)",
)
def list_activities(
    contact_id: str,
    state: StateDep,
    api_key: deps.ContactsReader,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
) -> paging.Page[models.ActivityPublic]:
    with state.db.read() as tx:
        return timeline.page(
            tx,
            contact_id,
            limit=limit,
            starting_after=starting_after,
            connections=api_key.connections,
        )


# Invoices.


@router.get(
    "/invoices",
    response_model=paging.Page[models.InvoicePublic],
    tags=["invoices"],
    summary="List invoices (scope invoices.readonly)",
)
async def list_invoices(
    state: StateDep,
    api_key: deps.InvoicesReader,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
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
    test: deps.TestOnly = None,
    updated_since: UpdatedSince = None,
    order: deps.Order = "desc",
) -> Response:
    filters = {
        "test": test,
        "status": status,
        "payment_status": payment_status,
        "customer_id": customer_id,
        "stripe_customer_id": stripe_customer_id,
        "archived": archived,
    }
    return await _page(
        state,
        api_key,
        INVOICE,
        limit,
        starting_after,
        order=order,
        updated_since=updated_since,
        filters=filters,
    )


@router.get(
    "/invoices/{invoice_id}",
    response_model=models.InvoicePublic,
    tags=["invoices"],
    summary="Get an invoice (scope invoices.readonly)",
)
async def get_invoice(invoice_id: str, state: StateDep, api_key: deps.InvoicesReader) -> Response:
    return deps.respond(await _get(state, api_key, INVOICE, invoice_id))


@router.patch(
    "/invoices/{invoice_id}",
    response_model=models.InvoicePublic,
    tags=["invoices"],
    responses=deps.WRITE_ERRORS,
    summary="Set an invoice's payment status or notes; every other field is Stripe's "
    "(scope invoices.write)",
)
def update_invoice(
    invoice_id: str,
    body: schemas.InvoicePatch,
    request: Request,
    raw: idempotency.RawBody,
    state: StateDep,
    api_key: deps.InvoicesWriter,
    _: InvoiceOnly,
    idempotency_key: idempotency.Key = None,
) -> JSONResponse:
    changes = _fields(body)

    def work(tx: Tx, stamp: ordering.Key) -> tuple[int, BaseModel]:
        return 200, edits.edit(
            tx, INVOICE, invoice_id, changes=changes, key=stamp, connections=api_key.connections
        )

    return _write(state, request, raw, idempotency_key, api_key.id, work)
