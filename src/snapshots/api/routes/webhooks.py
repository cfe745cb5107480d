"""`POST /webhooks/stripe/{connection_id}`: Stripe's deliveries, verified and stored raw."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from snapshots import errors, intake
from snapshots.api import schemas
from snapshots.api.deps import StateDep

router = APIRouter(tags=["webhooks"])


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(f"the body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"the body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/webhooks/stripe/{connection_id}",
    response_model=schemas.WebhookReceipt,
    responses={
        400: {"model": schemas.ErrorResponse},
        404: {"model": schemas.ErrorResponse},
        413: {"model": schemas.ErrorResponse},
    },
    summary="Receive a Stripe webhook (signed with Stripe-Signature)",
)
async def receive_stripe_webhook(
    connection_id: str, request: Request, state: StateDep
) -> JSONResponse:
    found, secrets = state.secrets.cached(connection_id)
    if not found:
        secrets = await run_in_threadpool(state.secrets.get, connection_id)
    if secrets is None:
        raise errors.NotFound(f"no connection {connection_id}", code="unknown_connection")
    payload = await _read_body(request, state.settings.webhook_max_body)
    receipt = await run_in_threadpool(
        intake.receive,
        state.db,
        state.registry,
        connection_id=connection_id,
        secrets=secrets,
        payload=payload,
        signature=request.headers.get("stripe-signature"),
        tolerance=state.settings.webhook_tolerance,
    )
    if state.worker is not None and receipt.status == "pending":
        state.worker.wake.set()
    # Returned as a response, so FastAPI skips re-validating it against the schema.
    return JSONResponse(receipt.public())
