"""Test: send a signed test event of any type through the real webhook endpoint (this server's
own URL), then follow it live: received (HTTP status) -> flows matched -> fields written ->
records. Test events carry the `evt_snptest_` id prefix, so they and what they write stay
marked as tests (see docs/decisions.md)."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import catalog, connections, errors, revisions, samples
from snapshots.ui import render
from snapshots.ui.deps import Admin, ConsoleDep, Viewer
from snapshots.ui.routes import flows as flow_routes

router = APIRouter()

POST_TIMEOUT = 10.0  # seconds to wait for this server's own webhook endpoint
RECORD_PAGES = {"con_": "contacts", "inv_": "invoices", "loc_": "locations"}


def record_url(record_id: str) -> str | None:
    """The console page of a record (`/records/contacts/con_...`), when it is one."""
    for prefix, kind in RECORD_PAGES.items():
        if record_id.startswith(prefix):
            return f"/records/{kind}/{record_id}"
    return None


def _page(
    request: Request,
    console: ConsoleDep,
    *,
    chosen: str,
    connection_id: str = "",
    trace: samples.Trace | None = None,
    obj: str = "",
    status: int = 200,
) -> Response:
    with console.db.read() as tx:
        linked = connections.list_all(tx, console.secrets)
    context = {
        "triggers": catalog.catalog().triggers,
        "connections": linked,
        "chosen": chosen,
        "connection_id": connection_id or (linked[0].id if linked else ""),
        "trace": trace,
        "object": obj,
        "record_url": record_url,
    }
    return render.page(request, "test.html", context, status=status, fragment="trace")


@router.get("/test")
def test_page(request: Request, console: ConsoleDep, session: Viewer, type: str = "") -> Response:
    return _page(request, console, chosen=type or "customer.created")


@router.post("/test")
def send_test_event(
    request: Request,
    console: ConsoleDep,
    session: Admin,
    type: Annotated[str, Form(max_length=255)],
    connection: Annotated[str, Form(max_length=40)],
    obj: Annotated[str, Form(alias="object", max_length=256 * 1024)] = "",
) -> Response:
    """Sign a sample event of `type` (carrying `object` when given, else Stripe's example)
    with the connection's signing secret and post it to this
    server's webhook endpoint; the page then follows its trace."""
    event_type = type.strip()
    if event_type not in samples.event_objects():
        raise errors.BadRequest(f"unknown event type {event_type!r}: pick one from the list")
    carried = None
    if obj.strip():
        try:
            carried = json.loads(obj)
        except ValueError as exc:
            raise errors.BadRequest(f"the object is not JSON: {exc}") from exc
        if not isinstance(carried, dict):
            raise errors.BadRequest("the object must be a JSON object ({...})")
    secrets = connections.SecretsCache(console.db, console.secrets).get(connection)
    if secrets is None:
        raise errors.NotFound(f"no connection {connection}")
    base = console.settings.public_url or str(request.base_url)
    url = f"{base.rstrip('/')}/webhooks/stripe/{connection}"
    with httpx.Client(timeout=POST_TIMEOUT) as client:
        trace = samples.send(
            console.db,
            secrets,
            flow_routes.in_force(console),
            url=url,
            event=samples.sample_event(event_type, obj=carried),
            client=client,
            sender=samples.Sender(session.user.actor, connection),
        )
    if trace.http_status < 300:
        with console.db.read() as tx:
            samples.follow(tx, trace, revisions.at)
    return _page(
        request, console, chosen=event_type, connection_id=connection, trace=trace, obj=obj
    )


@router.get("/test/trace/{event_id}")
def trace_fragment(
    request: Request, console: ConsoleDep, session: Viewer, event_id: str, status: int = 200
) -> Response:
    """A test event's trace as it stands now (htmx polls it until the worker is done)."""
    if not event_id.startswith(samples.TEST_PREFIX):
        raise errors.NotFound(f"no test event {event_id}")
    with console.db.read() as tx:
        trace = samples.trace(
            tx, flow_routes.in_force(console), event_id, http_status=status, flows_at=revisions.at
        )
    chosen = trace.type
    return _page(request, console, chosen=chosen, trace=trace)
