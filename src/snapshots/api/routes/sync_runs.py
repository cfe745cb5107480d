"""Sync runs: backfills and reconciliations, with their progress (`snapshots sync --status`)."""

from __future__ import annotations

from fastapi import APIRouter

from snapshots import paging, sync
from snapshots.api import deps
from snapshots.api.deps import StateDep

router = APIRouter(prefix="/v1", tags=["sync"], responses=deps.ERRORS)


@router.get("/sync-runs", summary="List sync runs, newest first (scope events.readonly)")
def list_sync_runs(
    state: StateDep,
    api_key: deps.EventsReader,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
) -> paging.Page[sync.Run]:
    with state.db.read() as tx:
        return sync.page_runs(
            tx, limit=limit, starting_after=starting_after, connections=api_key.connections
        )


@router.get("/sync-runs/{run_id}", summary="Get one sync run (scope events.readonly)")
def get_sync_run(run_id: str, state: StateDep, api_key: deps.EventsReader) -> sync.Run:
    with state.db.read() as tx:
        return sync.get_run(tx, run_id, connections=api_key.connections)
