"""Flows as configuration: the catalog of triggers and actions, and the versioned flows file."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from snapshots import catalog, paging, revisions
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep
from snapshots.onboarding import endpoint

router = APIRouter(prefix="/v1", tags=["flows"], responses=deps.ERRORS)


@router.get(
    "/catalog", summary="Every trigger and action a flow may use (scope workflows.readonly)"
)
def get_catalog(_: deps.WorkflowsReader) -> catalog.Catalog:
    return catalog.catalog()


@router.get(
    "/flows", summary="The flows file in force, with its version (scope workflows.readonly)"
)
def get_flows(state: StateDep, _: deps.WorkflowsReader) -> revisions.Revision:
    with state.db.read() as tx:
        return revisions.get_revision(tx)


@router.get(
    "/flows/versions",
    summary="Every version of the flows, newest first (scope workflows.readonly)",
)
def list_flow_versions(
    state: StateDep,
    _: deps.WorkflowsReader,
    with_text: Annotated[bool, Query(description="Include each file")] = False,
) -> paging.Page[revisions.Revision]:
    with state.db.read() as tx:
        return paging.Page(data=revisions.revisions(tx, with_text=with_text), has_more=False)


@router.post(
    "/flows",
    status_code=201,
    summary="Check a flows file and put it in force as a new version (scope workflows.write)",
)
def import_flows(
    body: schemas.FlowsImport, state: StateDep, api_key: deps.WorkflowsWriter
) -> endpoint.ImportedFlows:
    """A file with a problem changes nothing: 400 `invalid_flows` names each problem (file,
    line, flow, field). Every managed webhook endpoint gets the new flows' event types
    (`endpoints` says how that went; Stripe being away leaves the version in force and the
    worker retrying)."""
    imported = revisions.import_text(
        state.db, body.text, where="flows file", actor=api_key.actor, comment=body.comment
    )
    return endpoint.after_import(state.db, lambda: state.vault, imported)


@router.post(
    "/flows/rollback",
    status_code=201,
    summary="Put an earlier version back in force, as a new version (scope workflows.write)",
)
def rollback_flows(
    body: schemas.FlowsRollback, state: StateDep, api_key: deps.WorkflowsWriter
) -> endpoint.ImportedFlows:
    imported = revisions.rollback(state.db, body.version, actor=api_key.actor)
    return endpoint.after_import(state.db, lambda: state.vault, imported)
