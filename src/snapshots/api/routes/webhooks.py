"""`POST /webhooks/stripe/{connection_id}`: Stripe's deliveries, verified and stored raw.

This is the hot path, so it is a plain Starlette route: FastAPI's parameter and dependency
machinery cost more per request than everything the endpoint itself does. A delivery does not
even go through Starlette's routing and middleware: `Direct` serves it behind the edge alone,
with the app's error handlers; the route stays for what `Direct` leaves (another method: 405).
`document` adds it to the OpenAPI document by hand.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from snapshots import errors, intake, metrics, samples
from snapshots.api import schemas
from snapshots.api.deps import State

PATH = "/webhooks/stripe/{connection_id}"
PREFIX = PATH.removesuffix("{connection_id}")


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
    # What JSONResponse would write (compact, UTF-8), without its standard-library encoder.
    return Response(orjson.dumps(receipt.model_dump()), media_type="application/json"), outcome


route = Route(PATH, receive_stripe_webhook, methods=["POST"], name="receive_stripe_webhook")


def direct(scope: Scope) -> bool:
    """Is this a delivery `route` would take (`POST`, one path segment after `PREFIX`)?"""
    if scope["type"] != "http":
        return False
    path: str = scope["path"]
    return (
        scope["method"] == "POST"
        and path.startswith(PREFIX)
        and len(path) > len(PREFIX)
        and "/" not in path[len(PREFIX) :]
        and not scope.get("root_path")
    )


class Direct:
    """The endpoint as a plain ASGI app, for what `direct` accepts: what Starlette's routing
    would do for it (the route and its parameter in the scope, the app's handler for an
    error), without its layers. An error no handler takes goes on to the edge, as before."""

    def __init__(self, handlers: Mapping[Any, Any]) -> None:
        self._handlers = {k: v for k, v in handlers.items() if k is not Exception}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        scope["route"] = route
        scope["path_params"] = {"connection_id": path[len(PREFIX) :]}
        request = Request(scope, receive, send)
        try:
            response = await receive_stripe_webhook(request)
        except Exception as exc:
            handler = next(
                (self._handlers[c] for c in type(exc).__mro__ if c in self._handlers), None
            )
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


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
