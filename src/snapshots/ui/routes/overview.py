"""The overview: each connection at a glance."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapshots import connections, inbox
from snapshots.ui import render
from snapshots.ui.deps import ConsoleDep, Viewer

router = APIRouter()


@router.get("/")
def overview_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    with console.db.read() as tx:
        linked = connections.list_all(tx, console.secrets)
        counts = inbox.counts(tx)
    return render.page(
        request, "overview.html", {"connections": linked, "counts": counts}, fragment="panels"
    )
