"""Flows as configuration: the catalog of triggers and actions, and the versioned flows file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from snapshots import catalog, errors, flows, keys
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(
    prefix="/v1",
    tags=["flows"],
    responses={401: {"model": schemas.ErrorResponse}, 403: {"model": schemas.ErrorResponse}},
)


@router.get(
    "/catalog",
    response_model=schemas.CatalogPublic,
    summary="Every trigger and action a flow may use (scope workflows.readonly)",
    dependencies=[deps.scope("workflows.readonly")],
)
async def get_catalog() -> dict[str, Any]:
    return catalog.catalog()


@router.get(
    "/flows",
    response_model=schemas.FlowVersionPublic,
    summary="The flows file in force, with its version (scope workflows.readonly)",
    dependencies=[deps.scope("workflows.readonly")],
)
async def get_flows(state: StateDep) -> dict[str, Any]:
    stored = await run_in_threadpool(flows.get_version, state.db, None)
    return stored.public(with_text=True)


@router.get(
    "/flows/versions",
    response_model=schemas.FlowVersionsPublic,
    summary="Every version of the flows, newest first (scope workflows.readonly)",
    dependencies=[deps.scope("workflows.readonly")],
)
async def list_flow_versions(
    state: StateDep, with_text: Annotated[bool, Query(description="Include each file")] = False
) -> dict[str, Any]:
    found = await run_in_threadpool(flows.versions, state.db)
    return {"data": [v.public(with_text=with_text) for v in found], "has_more": False}


@router.post(
    "/flows",
    response_model=schemas.FlowVersionPublic,
    status_code=201,
    responses={400: {"model": schemas.ErrorResponse}},
    summary="Check a flows file and put it in force as a new version (scope workflows.write)",
)
async def import_flows(
    body: schemas.FlowsImport,
    state: StateDep,
    api_key: Annotated[keys.ApiKey, Depends(deps.require("workflows.write"))],
) -> dict[str, Any]:
    checked = flows.check(body.text, "flows file")
    if checked.registry is None:
        raise errors.BadRequest("; ".join(str(p) for p in checked.problems), code="invalid_flows")
    stored = await run_in_threadpool(
        lambda: flows.import_text(
            state.db, body.text, where="flows file", actor=api_key.actor, comment=body.comment
        )
    )
    return stored.public(with_text=True)


@router.post(
    "/flows/rollback",
    response_model=schemas.FlowVersionPublic,
    status_code=201,
    responses={404: {"model": schemas.ErrorResponse}},
    summary="Put an earlier version back in force, as a new version (scope workflows.write)",
)
async def rollback_flows(
    body: schemas.FlowsRollback,
    state: StateDep,
    api_key: Annotated[keys.ApiKey, Depends(deps.require("workflows.write"))],
) -> dict[str, Any]:
    try:
        stored = await run_in_threadpool(
            lambda: flows.rollback(state.db, body.version, actor=api_key.actor)
        )
    except errors.ConfigError as exc:  # that version no longer passes today's checks
        raise errors.BadRequest(str(exc), code="invalid_flows") from exc
    return stored.public(with_text=True)
