"""The event log: inbox items, their status, and replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from snapshots import inbox
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

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
