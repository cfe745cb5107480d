"""Read endpoints for locations, contacts (`/v1/customers`) and invoices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from snapshots import records
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(
    prefix="/v1",
    responses={401: {"model": schemas.ErrorResponse}, 403: {"model": schemas.ErrorResponse}},
)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[str | None, Query(description="The id of the last record of the previous page.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorResponse}}


async def _page(state: StateDep, kind: str, limit: int, after: str | None) -> dict[str, Any]:
    data, has_more = await run_in_threadpool(
        records.page, state.db, kind, limit=limit, starting_after=after
    )
    return {"data": data, "has_more": has_more}


@router.get(
    "/locations",
    response_model=schemas.LocationsPublic,
    tags=["locations"],
    summary="List locations (scope saas/location.read)",
    dependencies=[deps.scope("saas/location.read")],
)
async def list_locations(
    state: StateDep, limit: Limit = 20, starting_after: After = None
) -> dict[str, Any]:
    return await _page(state, "location", limit, starting_after)


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


@router.get(
    "/customers",
    response_model=schemas.ContactsPublic,
    tags=["contacts"],
    summary="List contacts (scope contacts.readonly)",
    dependencies=[deps.scope("contacts.readonly")],
)
async def list_customers(
    state: StateDep, limit: Limit = 20, starting_after: After = None
) -> dict[str, Any]:
    return await _page(state, "contact", limit, starting_after)


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


@router.get(
    "/invoices",
    response_model=schemas.InvoicesPublic,
    tags=["invoices"],
    summary="List invoices (scope invoices.readonly)",
    dependencies=[deps.scope("invoices.readonly")],
)
async def list_invoices(
    state: StateDep, limit: Limit = 20, starting_after: After = None
) -> dict[str, Any]:
    return await _page(state, "invoice", limit, starting_after)


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
