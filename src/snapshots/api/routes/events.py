"""The event log: inbox items, their status, and replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from snapshots import inbox, keys, replay, times
from snapshots.api import deps, schemas
from snapshots.api.deps import State, StateDep

router = APIRouter(
    prefix="/v1",
    tags=["events"],
    responses={401: {"model": schemas.ErrorResponse}, 403: {"model": schemas.ErrorResponse}},
)

Status = Annotated[
    str | None, Query(description="pending, processing, done, ignored, failed or dead")
]
After = Annotated[
    int | None,
    Query(ge=1, le=inbox.MAX_ITEM_ID, description="The id of the last item of the previous page."),
]


@router.get(
    "/events",
    response_model=schemas.EventsPublic,
    summary="List received events, newest first (scope events.readonly)",
    dependencies=[deps.scope("events.readonly")],
)
async def list_events(
    state: StateDep,
    status: Status = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: After = None,
) -> dict[str, Any]:
    rows = await run_in_threadpool(
        inbox.list_items, state.db, status=status, limit=limit + 1, before=starting_after
    )
    return {"data": [inbox.public(r) for r in rows[:limit]], "has_more": len(rows) > limit}


def _filter(body: schemas.ReplayRequest) -> replay.Filter:
    since = None
    if body.since is not None:
        since = times.parse_since(body.since, name="since")
    return replay.Filter(
        status=body.status,
        since=since,
        type=body.type,
        error=body.error,
        connection_id=body.connection_id,
    )


def _replay(state: State, body: schemas.ReplayRequest, actor: str) -> tuple[int, dict[str, Any]]:
    flt = _filter(body)
    if body.dry_run:
        with state.db.read() as conn:
            found = replay.preview(conn, flt)
        return 200, {
            "filter": flt.public(),
            "matched": found.matched,
            "quota": found.quota,
            "capped": found.capped,
            "top_errors": [{"error": e, "count": n} for e, n in found.top_errors],
            "dry_run": True,
        }
    with state.db.write() as conn:
        job = replay.start(conn, flt, actor=actor)
    return 202, job.public()


@router.post(
    "/events/replay",
    response_model=schemas.ReplayJobPublic,
    status_code=202,
    responses={
        200: {"model": schemas.ReplayPreview, "description": "A dry run: the count only"},
        400: {"model": schemas.ErrorResponse},
    },
    summary="Queue again every dead or failed event a filter matches, as a job "
    "(scope integrations.write)",
)
async def replay_events(
    body: schemas.ReplayRequest,
    state: StateDep,
    api_key: Annotated[keys.ApiKey, Depends(deps.require("integrations.write"))],
) -> JSONResponse:
    """Answers the job at once (202) with how many items matched and their most common
    errors; a worker queues them again (at most 50,000 a run, the oldest first), and
    `GET /v1/events/replay/{id}` shows its progress. One audit entry records the filter and
    the count. With `dry_run`, nothing changes (200)."""
    status, payload = await run_in_threadpool(_replay, state, body, api_key.actor)
    return JSONResponse(payload, status_code=status)


def _job(state: State, job_id: str) -> dict[str, Any]:
    with state.db.read() as conn:
        return replay.get(conn, job_id).public()


@router.get(
    "/events/replay/{job_id}",
    response_model=schemas.ReplayJobPublic,
    responses={404: {"model": schemas.ErrorResponse}},
    summary="A bulk replay's progress (scope events.readonly)",
    dependencies=[deps.scope("events.readonly")],
)
async def get_replay(job_id: str, state: StateDep) -> dict[str, Any]:
    return await run_in_threadpool(_job, state, job_id)


@router.get(
    "/events/{ref}",
    response_model=schemas.EventPublic,
    responses={404: {"model": schemas.ErrorResponse}},
    summary="Get one event by inbox item id or Stripe event id (scope events.readonly)",
    dependencies=[deps.scope("events.readonly")],
)
async def get_event(ref: str, state: StateDep) -> dict[str, Any]:
    return inbox.public(await run_in_threadpool(inbox.get, state.db, ref))


@router.post(
    "/events/{ref}/replay",
    response_model=schemas.EventPublic,
    responses={404: {"model": schemas.ErrorResponse}, 409: {"model": schemas.ErrorResponse}},
    summary="Queue a done, dead, failed or ignored event again (scope integrations.write)",
    dependencies=[deps.scope("integrations.write")],
)
async def replay_event(ref: str, state: StateDep) -> dict[str, Any]:
    return inbox.public(await run_in_threadpool(inbox.replay, state.db, ref))
