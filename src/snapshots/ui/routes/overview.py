"""The overview: each connection at a glance, refreshing itself every 10 s (a refresh does
not count as activity: an open overview does not keep a session alive)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapshots import overview
from snapshots.onboarding import health
from snapshots.ui import render
from snapshots.ui.deps import ConsoleDep, Viewer

router = APIRouter()


@router.get("/")
def overview_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    with console.db.read() as tx:
        found = overview.build(tx, console.secrets)
    reasons = {item.connection.id: health.reason(item.connection) for item in found.connections}
    context = {"overview": found, "reasons": reasons, "cap": overview.COUNT_CAP}
    return render.page(request, "overview.html", context, fragment="panels")
