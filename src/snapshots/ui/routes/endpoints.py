"""Webhook endpoints: the list (status, last success, failures, due and held deliveries),
creating one (the guard's refusal shown at the URL field; the signing secret shown once, so it
needs the password typed within 15 minutes, `Confirmed`), and an endpoint's page: disable or
enable, rotate the secret with an overlap (the new one shown once), send a test message,
recover with `since` (the count first, then the queue), remove with its deliveries. Every step
calls the same `outbound` functions as the CLI and the API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from snapshots import errors, times
from snapshots.outbound import delivery, endpoints, guard
from snapshots.ui import render
from snapshots.ui.deps import Admin, Confirmed, Console, ConsoleDep, Viewer

router = APIRouter()
Text = Annotated[str, Form()]
DUE = ("pending", "processing", "failed")  # deliveries still to be sent while enabled
SHOWN = 20  # an endpoint page's latest deliveries


def _allow(console: Console) -> guard.Allow:
    return guard.Allow.parse(console.settings.outbound_allow)


def _form(request: Request, *, status: int = 200, **values: Any) -> Response:
    context = {"errors": {}, "name": "", "url": "", "description": "", **values}
    return render.page(request, "endpoint_new.html", context, status=status)


def _field(exc: errors.BadRequest) -> str:
    """Which field of the create form a refusal is about."""
    if isinstance(exc, guard.Blocked) or "url" in exc.message.lower():
        return "url"
    if "description" in exc.message:
        return "description"
    return "name"


@router.get("/endpoints")
def endpoints_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    with console.db.read() as tx:
        found = endpoints.list_all(tx, console.secrets)
        counted = delivery.counts(tx)
    rows = [
        {
            "endpoint": e,
            "due": sum(counted.get(e.id, {}).get(s, 0) for s in DUE),
            "held": counted.get(e.id, {}).get("held", 0),
            "dead": counted.get(e.id, {}).get("dead", 0),
        }
        for e in found
    ]
    return render.page(request, "endpoints.html", {"rows": rows})


@router.get("/endpoints/new")
def new_endpoint_page(request: Request, session: Confirmed) -> Response:
    return _form(request)


@router.post("/endpoints")
async def create_endpoint(
    request: Request,
    console: ConsoleDep,
    session: Confirmed,
    name: Text = "",
    url: Text = "",
    description: Text = "",
) -> Response:
    try:
        # In a worker thread: the guard resolves the URL's host.
        made = await run_in_threadpool(
            endpoints.create,
            console.db,
            console.secrets,
            name=name,
            url=url.strip(),
            description=description.strip() or None,
            allow=_allow(console),
            resolver=console.outbound.resolver,
            actor=session.user.actor,
        )
    except (errors.BadRequest, errors.Conflict) as exc:
        field = "name" if isinstance(exc, errors.Conflict) else _field(exc)
        values = {"name": name, "url": url, "description": description}
        return _form(request, status=exc.status, errors={field: exc.message}, **values)
    context = {"made": made, "rotated_until": None}
    return render.page(request, "endpoint_secret.html", context, status=201)


@router.get("/endpoints/{ref}")
def endpoint_page(request: Request, console: ConsoleDep, session: Viewer, ref: str) -> Response:
    with console.db.read() as tx:
        found = endpoints.get(tx, console.secrets, ref)
        counted = delivery.counts(tx).get(found.id, {})
        latest = delivery.page(tx, endpoint_id=found.id, limit=SHOWN)
    context = {
        "endpoint": found,
        "counts": counted,
        "total": sum(counted.values()),
        "undelivered": sum(counted.get(s, 0) for s in endpoints.UNDELIVERED),
        "deliveries": latest.data,
        "more": latest.has_more,
    }
    return render.page(request, "endpoint.html", context)


@router.post("/endpoints/{ref}/disable")
def disable_endpoint(console: ConsoleDep, session: Admin, ref: str) -> Response:
    reason = f"disabled by {session.user.email} in the console"
    with console.db.write() as tx:
        found = endpoints.disable(tx, console.secrets, ref, reason=reason, actor=session.user.actor)
    return render.redirect(
        f"/endpoints/{found.id}",
        notice=f"Disabled {found.name}: its new deliveries are held until you recover them.",
    )


@router.post("/endpoints/{ref}/enable")
def enable_endpoint(console: ConsoleDep, session: Admin, ref: str) -> Response:
    with console.db.write() as tx:
        found = endpoints.enable(tx, console.secrets, ref, actor=session.user.actor)
    return render.redirect(
        f"/endpoints/{found.id}",
        notice=f"Enabled {found.name}; held deliveries wait for Recover.",
    )


@router.post("/endpoints/{ref}/rotate")
def rotate_endpoint_secret(
    request: Request, console: ConsoleDep, session: Confirmed, ref: str, overlap: Text = "24h"
) -> Response:
    seconds = times.parse_duration(
        overlap, zero=True, longest=endpoints.MAX_OVERLAP, name="overlap"
    )
    with console.db.write() as tx:
        made = endpoints.rotate_secret(
            tx, console.secrets, ref, overlap=seconds, actor=session.user.actor
        )
    context = {"made": made, "rotated_until": made.updated_at + seconds}
    return render.page(request, "endpoint_secret.html", context, status=201)


@router.post("/endpoints/{ref}/test")
async def test_endpoint(console: ConsoleDep, session: Admin, ref: str) -> Response:
    settings = console.settings

    def send() -> delivery.DeliveryDetail:
        with console.outbound.client(
            allow=_allow(console), timeout=settings.outbound_timeout
        ) as client:
            return delivery.send_test(
                console.db,
                console.secrets,
                client,
                ref,
                schedule=delivery.Schedule.of(settings),
            )

    sent = await run_in_threadpool(send)
    return render.redirect(
        f"/deliveries/{sent.id}", notice=f"Sent a test message to {sent.endpoint}: {sent.status}."
    )


@router.post("/endpoints/{ref}/recover")
def recover_endpoint(
    request: Request,
    console: ConsoleDep,
    session: Admin,
    ref: str,
    since: Text = "",
    confirm: Text = "",
) -> Response:
    moment = times.parse_since(since, name="since")
    if confirm != since:
        # First the count, and a button that queues exactly that.
        with console.db.read() as tx:
            found = endpoints.get(tx, console.secrets, ref)
            count = delivery.recoverable(tx, console.secrets, ref, since=moment)
        context = {"endpoint": found, "count": count, "since": since, "moment": moment}
        return render.page(request, "endpoint_recover.html", context)
    with console.db.write() as tx:
        found = endpoints.get(tx, console.secrets, ref)
        count = delivery.recover(tx, console.secrets, ref, since=moment, actor=session.user.actor)
    return render.redirect(
        f"/endpoints/{found.id}",
        notice=f"Queued {count} deliveries to {found.name} again, oldest first.",
    )


@router.post("/endpoints/{ref}/remove")
def remove_endpoint(console: ConsoleDep, session: Admin, ref: str, drop: Text = "") -> Response:
    with console.db.write() as tx:
        found = endpoints.remove(
            tx, console.secrets, ref, force=drop == "yes", actor=session.user.actor
        )
    return render.redirect(
        "/endpoints", notice=f"Removed {found.name} with its deliveries and their attempts."
    )
