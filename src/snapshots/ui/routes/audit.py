"""The audit log: filter by actor, action and time; unusual entries highlighted."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapshots import audit, errors, times
from snapshots.ui import render
from snapshots.ui.deps import ConsoleDep, Viewer

router = APIRouter()
PAGE = 50  # entries a page
FILTER_MAX = 200  # characters of a filter


@router.get("/audit")
def audit_page(
    request: Request,
    console: ConsoleDep,
    session: Viewer,
    actor: str = "",
    action: str = "",
    since: str = "",
    until: str = "",
    starting_after: int | None = None,
) -> Response:
    filters = {"actor": actor.strip()[:FILTER_MAX], "action": action.strip()[:FILTER_MAX]}
    filters |= {"since": since.strip()[:40], "until": until.strip()[:40]}
    try:
        since_at = times.parse_since(filters["since"], name="since") if filters["since"] else None
        until_at = times.parse_since(filters["until"], name="until") if filters["until"] else None
    except errors.BadRequest as exc:
        context: dict[str, Any] = {"filters": filters, "entries": [], "more": None}
        context["error"] = exc.message
        return render.page(request, "audit.html", context, status=400)
    with console.db.read() as tx:
        found = audit.page(
            tx,
            since=since_at,
            until=until_at,
            actor=filters["actor"] or None,
            action=filters["action"] or None,
            limit=PAGE,
            starting_after=starting_after,
        )
    entries = [(entry, audit.unusual(entry)) for entry in found.data]
    more = None
    if found.has_more and found.data:
        kept = {k: v for k, v in filters.items() if v}
        more = "/audit?" + urlencode({**kept, "starting_after": found.data[-1].id})
    context = {"filters": filters, "entries": entries, "more": more, "error": None}
    return render.page(request, "audit.html", context, fragment="entries")
