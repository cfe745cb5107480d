"""Sync: runs with their progress (objects, rate, ETA), asking for a backfill or a
reconciliation, resuming a stopped run. A worker runs what is asked (`sync_requests`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import connections, errors, sync, sync_requests, times
from snapshots.ui import render
from snapshots.ui.deps import Admin, ConsoleDep, Viewer

router = APIRouter()


def _page(request: Request, console: ConsoleDep, *, status: int = 200, **values: Any) -> Response:
    with console.db.read() as tx:
        runs = sync_requests.progress(tx)
        asked = sync_requests.open_requests(tx)
        linked = connections.list_all(tx, console.secrets)
    busy = bool(asked) or any(p.state == "running" for p in runs)
    context = {
        "runs": runs,
        "asked": asked,
        "connections": linked,
        "objects": sync.OBJECTS,
        "busy": busy,
        "error": None,
        **values,
    }
    return render.page(request, "sync.html", context, fragment="runs", status=status)


@router.get("/sync")
def sync_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    return _page(request, console)


@router.post("/sync")
def ask(
    request: Request,
    console: ConsoleDep,
    session: Admin,
    connection: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "backfill",
    objects: Annotated[list[str], Form()] = [],  # noqa: B006  (FastAPI copies defaults)
    since: Annotated[str, Form()] = "",
) -> Response:
    try:
        since_at = int(times.parse_since(since, name="since")) if since.strip() else None
        with console.db.write() as tx:
            made = sync_requests.ask(
                tx,
                connection_id=connection,
                kind=kind,
                objects=objects,
                since=since_at,
                actor=session.user.actor,
            )
    except (errors.BadRequest, errors.Conflict) as exc:
        return _page(request, console, status=exc.status, error=exc.message)
    what = (
        "reconciliation" if made.kind == "reconcile" else f"backfill of {', '.join(made.objects)}"
    )
    return render.redirect("/sync", notice=f"Asked for a {what}: a worker starts it shortly.")


@router.post("/sync/runs/{run_id}/resume")
def resume(console: ConsoleDep, session: Admin, run_id: str) -> Response:
    with console.db.write() as tx:
        made = sync_requests.resume(tx, run_id, actor=session.user.actor)
    return render.redirect(
        "/sync", notice=f"Asked to resume the {made.kind}: a worker goes on where it stopped."
    )
