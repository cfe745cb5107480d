"""The audit log (scope `admin`): read-only; no interface edits or deletes an entry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from snapshots import audit, paging, times
from snapshots.api import deps
from snapshots.api.deps import StateDep

router = APIRouter(prefix="/v1", tags=["audit"], responses=deps.ERRORS)


@router.get("/audit", summary="Audit entries, newest first (scope admin)")
def list_audit(
    state: StateDep,
    _: deps.Admin,
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
    limit: deps.Limit = 20,
    starting_after: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="The id of the last entry of the page"),
    ] = None,
) -> paging.Page[audit.AuditEntry]:
    since_at = None if since is None else times.parse_since(since, name="since")
    with state.db.read() as tx:
        return audit.page(
            tx, since=since_at, action=action, limit=limit, starting_after=starting_after
        )
