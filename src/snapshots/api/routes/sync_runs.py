"""Sync runs: backfills and reconciliations, with their progress (`snapshots sync --status`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from snapshots import sync
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(
    prefix="/v1",
    tags=["sync"],
    responses={401: {"model": schemas.ErrorResponse}, 403: {"model": schemas.ErrorResponse}},
)


@router.get(
    "/sync-runs",
    response_model=schemas.SyncRunsPublic,
    responses={400: {"model": schemas.ErrorResponse}},
    summary="List sync runs, newest first (scope events.readonly)",
    dependencies=[deps.scope("events.readonly")],
)
async def list_sync_runs(
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=40, description="The id of the last run of the previous page.")
    ] = None,
) -> dict[str, Any]:
    runs, more = await run_in_threadpool(
        sync.page_runs, state.db, limit=limit, starting_after=starting_after
    )
    return {"data": runs, "has_more": more}


@router.get(
    "/sync-runs/{run_id}",
    response_model=schemas.SyncRunPublic,
    responses={404: {"model": schemas.ErrorResponse}},
    summary="Get one sync run (scope events.readonly)",
    dependencies=[deps.scope("events.readonly")],
)
async def get_sync_run(run_id: str, state: StateDep) -> dict[str, Any]:
    run = await run_in_threadpool(sync.get_run, state.db, run_id)
    return run.public()
