"""`POST /webhooks/stripe/{connection_id}`: Stripe's deliveries, verified and stored raw.

This is the hot path, so it is a plain Starlette route: FastAPI's parameter and dependency
machinery cost more per request than everything the endpoint itself does. It still runs inside
the app (middleware, error handlers); `document` adds it to the OpenAPI document by hand.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from snapshots import errors, intake, metrics, samples
from snapshots.api import schemas
from snapshots.api.deps import State

PATH = "/webhooks/stripe/{connection_id}"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit` bytes. It grows in one buffer, so
    an unfinished body is released at once when its connection closes (large buffers are
    their own memory mappings, which go back to the system when freed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(f"the body is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise errors.PayloadTooLarge(f"the body is over the {limit}-byte limit")
        body += chunk
    return bytes(body)


async def receive_stripe_webhook(request: Request) -> Response:
    """Counted in `snapshots_webhooks_total` by connection (`unknown` for ids that are none),
    event type and outcome, and timed."""
    started = time.perf_counter()
    seen = {"connection": "unknown", "type": "unknown"}
    outcome = "error"
    try:
        response, outcome = await _receive(request, seen)
        return response
    except errors.Rejected:
        outcome = "rejected"
        raise
    except errors.SnapshotsError:
        outcome = "unavailable"
        raise
    finally:
        metrics.webhook(seen["connection"], seen["type"], outcome, time.perf_counter() - started)


async def _receive(request: Request, seen: dict[str, str]) -> tuple[Response, str]:
    state: State = request.app.state.snapshots
    connection_id: str = request.path_params["connection_id"]
    found, secrets = state.secrets.cached(connection_id)
    if not found:
        secrets = await run_in_threadpool(state.secrets.get, connection_id)
    if secrets is None:
        raise errors.NotFound(f"no connection {connection_id}", code="unknown_connection")
    seen["connection"] = connection_id
    try:
        payload = await _read_body(request, state.settings.webhook_max_body)
    except ClientDisconnect:  # the sender went away (or took too long): nobody to answer
        return Response(status_code=499), "disconnected"
    # Checking the signature and the envelope is pure CPU (microseconds): done right here.
    intake.verify(
        payload,
        request.headers.get("stripe-signature"),
        secrets,
        tolerance=state.settings.webhook_tolerance,
    )
    event = intake.parse_event(payload)
    seen["type"] = metrics.event_type(event["type"])
    # An event `snapshots send-test-event` made (its id says so, under the signature) is
    # marked as a test on the inbox item and on every record it writes.
    source = "test" if event["id"].startswith(samples.TEST_PREFIX) else "webhook"
    receipt = await state.intake.submit(
        connection_id=connection_id, event=event, payload=payload, source=source
    )
    if receipt.duplicate:
        outcome = "duplicate"
    else:
        outcome = "ignored" if receipt.status == "ignored" else "stored"
    return JSONResponse(receipt.model_dump()), outcome


route = Route(PATH, receive_stripe_webhook, methods=["POST"], name="receive_stripe_webhook")


def document(openapi: dict[str, Any]) -> None:
    """Add the webhook endpoint to an OpenAPI document FastAPI generated."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in (intake.Receipt, schemas.ErrorResponse):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found

    def answer(description: str, model: str) -> dict[str, Any]:
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}
        return {"description": description, "content": content}

    openapi.setdefault("paths", {})[PATH] = {
        "post": {
            "tags": ["webhooks"],
            "summary": "Receive a Stripe webhook (signed with Stripe-Signature)",
            "description": (
                "Verified against every signing secret of the connection (tolerance "
                "SNAPSHOTS_WEBHOOK_TOLERANCE), stored raw and deduplicated on the event id; "
                "answered after the commit. Unwanted event types are acknowledged as `ignored`."
            ),
            "operationId": "receive_stripe_webhook",
            "parameters": [
                {
                    "name": "connection_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {
                    "name": "Stripe-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": answer("Stored (or a duplicate of a stored event)", "Receipt"),
                "400": answer(
                    "Bad signature, stale timestamp, or not a Stripe event", "ErrorResponse"
                ),
                "404": answer("No such connection", "ErrorResponse"),
                "413": answer("Body over SNAPSHOTS_WEBHOOK_MAX_BODY bytes", "ErrorResponse"),
                "503": answer("The event could not be stored now; Stripe retries", "ErrorResponse"),
            },
        }
    }
