"""Deliveries: filtered by endpoint, status and since, newest first; a delivery's page with the
message as sent (escaped JSON) and every attempt (time, duration, the address connected to,
status code or error kind, the first 8 KiB of the answer), and recovering one that failed."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from snapshots import errors, times
from snapshots.outbound import delivery, endpoints
from snapshots.ui import render
from snapshots.ui.deps import Admin, ConsoleDep, Viewer

router = APIRouter()
PER_PAGE = 50
Filter = Annotated[str, Query(max_length=200)]


@router.get("/deliveries")
def deliveries_page(
    request: Request,
    console: ConsoleDep,
    session: Viewer,
    endpoint: Filter = "",
    status: Filter = "",
    since: Filter = "",
    after: Filter = "",
) -> Response:
    filters = {"endpoint": endpoint, "status": status, "since": since}
    found: list[delivery.Delivery] = []
    more = None
    error = None
    with console.db.read() as tx:
        known = endpoints.list_all(tx, console.secrets)
        try:
            endpoint_id = endpoints.get(tx, console.secrets, endpoint).id if endpoint else None
            moment = times.parse_since(since, name="since") if since.strip() else None
            listed = delivery.page(
                tx,
                endpoint_id=endpoint_id,
                status=status or None,
                since=moment,
                limit=PER_PAGE,
                starting_after=after or None,
            )
        except (errors.BadRequest, errors.NotFound) as exc:
            error = exc.message
        else:
            found = listed.data
            if listed.has_more and found:
                more = "/deliveries?" + urlencode({**filters, "after": found[-1].id})
    context = {
        "filters": filters,
        "endpoints": known,
        "statuses": delivery.STATUSES,
        "deliveries": found,
        "more": more,
        "error": error,
    }
    return render.page(request, "deliveries.html", context, status=400 if error else 200)


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


@router.get("/deliveries/{delivery_id}")
def delivery_page(
    request: Request, console: ConsoleDep, session: Viewer, delivery_id: str
) -> Response:
    with console.db.read() as tx:
        found = delivery.get(tx, delivery_id)
    context = {"delivery": found, "body": _pretty(found.body), "size": len(found.body.encode())}
    return render.page(request, "delivery.html", context)


@router.post("/deliveries/{delivery_id}/recover")
def recover_delivery(console: ConsoleDep, session: Admin, delivery_id: str) -> Response:
    with console.db.write() as tx:
        found = delivery.requeue(tx, console.secrets, delivery_id, actor=session.user.actor)
    return render.redirect(f"/deliveries/{found.id}", notice=f"Queued delivery {found.id} again.")
