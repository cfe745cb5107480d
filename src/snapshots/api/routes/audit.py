"""The audit log (scope `admin`): read-only; no interface edits or deletes an entry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from snapshots import audit, errors, sync
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(
    prefix="/v1",
    tags=["audit"],
    responses={
        400: {"model": schemas.ErrorResponse},
        401: {"model": schemas.ErrorResponse},
        403: {"model": schemas.ErrorResponse},
    },
)


@router.get(
    "/audit",
    response_model=schemas.AuditEntriesPublic,
    summary="Audit entries, newest first (scope admin)",
    dependencies=[deps.scope("admin")],
)
async def list_audit(
    state: StateDep,
    since: Annotated[
        str | None,
        Query(max_length=40, description="A date, a UTC time, or a duration back (24h, 7d)"),
    ] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=100,
            pattern=r"^[A-Za-z0-9_.]+\*?$",
            description="One action (key.rotated) or a prefix (key.*)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="The id of the last entry of the page"),
    ] = None,
) -> dict[str, Any]:
    try:
        since_at = None if since is None else sync.parse_since(since)
    except errors.BadRequest as exc:
        raise errors.BadRequest(exc.message.replace("--since", "since")) from exc
    data, more = await run_in_threadpool(
        lambda: audit.page(
            state.db, since=since_at, action=action, limit=limit, starting_after=starting_after
        )
    )
    return {"data": data, "has_more": more}
