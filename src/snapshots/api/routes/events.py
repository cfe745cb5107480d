"""The event log: inbox items, their status, and replay (one, or in bulk as a job)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from snapshots import inbox, paging, replay, times
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(prefix="/v1", tags=["events"], responses=deps.ERRORS)

Status = Annotated[
    str | None, Query(description="pending, processing, done, ignored, failed or dead")
]
After = Annotated[
    int | None,
    Query(ge=1, le=inbox.MAX_ITEM_ID, description="The id of the last item of the previous page."),
]


@router.get("/events", summary="List received events, newest first (scope events.readonly)")
def list_events(
    state: StateDep,
    api_key: deps.EventsReader,
    status: Status = None,
    limit: deps.Limit = 20,
    starting_after: After = None,
    test: deps.TestOnly = None,
) -> paging.Page[inbox.Event]:
    with state.db.read() as tx:
        return inbox.page(
            tx,
            status=status,
            limit=limit,
            starting_after=starting_after,
            connections=api_key.connections,
            test=test,
        )


@router.post(
    "/events/replay",
    response_model=replay.Job,
    status_code=202,
    responses={200: {"model": replay.Preview, "description": "A dry run: the count only"}},
    summary="Queue again every dead or failed event a filter matches, as a job "
    "(scope integrations.write)",
)
def replay_events(
    body: schemas.ReplayRequest, state: StateDep, api_key: deps.IntegrationsWriter
) -> JSONResponse:
    """Answers the job at once (202) with how many items matched and their most common
    errors; a worker queues them again (at most 50,000 a run, the oldest first), and
    `GET /v1/events/replay/{id}` shows its progress. One audit entry records the filter and
    the count. With `dry_run`, nothing changes (200)."""
    flt = replay.Filter(
        status=body.status,
        since=None if body.since is None else times.parse_since(body.since, name="since"),
        type=body.type,
        error=body.error,
        connection_id=body.connection_id,
        connections=api_key.connections,
    )
    if body.dry_run:
        with state.db.read() as tx:
            found = replay.preview(tx, flt)
        return JSONResponse(found.model_dump(mode="json"), status_code=200)
    with state.db.write() as tx:
        job = replay.start(tx, flt, actor=api_key.actor)
    return JSONResponse(job.model_dump(mode="json"), status_code=202)


@router.get("/events/replay/{job_id}", summary="A bulk replay's progress (scope events.readonly)")
def get_replay(job_id: str, state: StateDep, api_key: deps.EventsReader) -> replay.Job:
    with state.db.read() as tx:
        return replay.get(tx, job_id, connections=api_key.connections)


@router.get(
    "/events/{ref}",
    summary="Get one event by inbox item id or Stripe event id (scope events.readonly)",
)
def get_event(ref: str, state: StateDep, api_key: deps.EventsReader) -> inbox.Event:
    with state.db.read() as tx:
        return inbox.get(tx, ref, connections=api_key.connections)


@router.post(
    "/events/{ref}/replay",
    responses=deps.WRITE_ERRORS,
    summary="Queue a done, dead, failed or ignored event again (scope integrations.write)",
)
def replay_event(ref: str, state: StateDep, api_key: deps.IntegrationsWriter) -> inbox.Event:
    with state.db.write() as tx:
        return inbox.replay(tx, ref, connections=api_key.connections)
