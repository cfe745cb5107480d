"""Webhook endpoints and their deliveries (scope `workflows.write` to change,
`workflows.readonly` to read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from snapshots import paging, times, vault
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep
from snapshots.outbound import delivery, endpoints, guard

router = APIRouter(prefix="/v1", tags=["webhook endpoints"], responses=deps.ERRORS)
Ref = Annotated[str, Path(max_length=255, description="The endpoint's id or name")]


@router.post(
    "/webhook-endpoints",
    status_code=201,
    responses=deps.WRITE_ERRORS,
    summary="Register an endpoint; its signing secret is in this response only "
    "(scope workflows.write)",
)
def create_endpoint(
    body: schemas.EndpointCreate, state: StateDep, api_key: deps.WorkflowsWriter
) -> endpoints.WebhookEndpointCreated:
    return endpoints.create(
        state.db,
        vault.load(state.settings),
        name=body.name,
        url=body.url,
        description=body.description,
        allow=guard.Allow.parse(state.settings.outbound_allow),
        resolver=state.outbound.resolver,
        actor=api_key.actor,
    )


@router.get("/webhook-endpoints", summary="List endpoints (scope workflows.readonly)")
def list_endpoints(
    state: StateDep, _: deps.WorkflowsReader
) -> paging.Page[endpoints.WebhookEndpoint]:
    with state.db.read() as tx:
        found = endpoints.list_all(tx, vault.load(state.settings))
    return paging.Page(data=found[::-1], has_more=False)


@router.get(
    "/webhook-endpoints/{ref}", summary="Get an endpoint by id or name (scope workflows.readonly)"
)
def get_endpoint(ref: Ref, state: StateDep, _: deps.WorkflowsReader) -> endpoints.WebhookEndpoint:
    with state.db.read() as tx:
        return endpoints.get(tx, vault.load(state.settings), ref)


@router.post(
    "/webhook-endpoints/{ref}/disable",
    summary="Stop sending; new deliveries are held (scope workflows.write)",
)
def disable_endpoint(
    ref: Ref, state: StateDep, api_key: deps.WorkflowsWriter
) -> endpoints.WebhookEndpoint:
    with state.db.write() as tx:
        return endpoints.disable(
            tx, vault.load(state.settings), ref, reason="disabled by hand", actor=api_key.actor
        )


@router.post(
    "/webhook-endpoints/{ref}/enable",
    summary="Send again; held deliveries wait for recover (scope workflows.write)",
)
def enable_endpoint(
    ref: Ref, state: StateDep, api_key: deps.WorkflowsWriter
) -> endpoints.WebhookEndpoint:
    with state.db.write() as tx:
        return endpoints.enable(tx, vault.load(state.settings), ref, actor=api_key.actor)


@router.delete(
    "/webhook-endpoints/{ref}",
    responses=deps.WRITE_ERRORS,
    summary="Remove an endpoint and its deliveries (refused while some are still to send "
    "unless force) (scope workflows.write)",
)
def remove_endpoint(
    ref: Ref,
    state: StateDep,
    api_key: deps.WorkflowsWriter,
    force: Annotated[bool, Query(description="Drop deliveries still to send")] = False,
) -> endpoints.WebhookEndpoint:
    with state.db.write() as tx:
        return endpoints.remove(
            tx, vault.load(state.settings), ref, force=force, actor=api_key.actor
        )


@router.post(
    "/webhook-endpoints/{ref}/rotate-secret",
    status_code=201,
    summary="A new signing secret; the old one signs too until the overlap ends "
    "(scope workflows.write)",
)
def rotate_endpoint_secret(
    ref: Ref,
    state: StateDep,
    api_key: deps.WorkflowsWriter,
    body: schemas.EndpointRotate | None = None,
) -> endpoints.WebhookEndpointCreated:
    overlap = times.parse_duration((body or schemas.EndpointRotate()).overlap, zero=True)
    with state.db.write() as tx:
        return endpoints.rotate_secret(
            tx, vault.load(state.settings), ref, overlap=overlap, actor=api_key.actor
        )


@router.post(
    "/webhook-endpoints/{ref}/test",
    responses=deps.WRITE_ERRORS,
    summary="Send a snapshots.test message now; answers the delivery with its attempt "
    "(scope workflows.write)",
)
async def test_endpoint(
    ref: Ref, state: StateDep, _: deps.WorkflowsWriter
) -> delivery.DeliveryDetail:
    settings = state.settings

    def send() -> delivery.DeliveryDetail:
        with state.outbound.client(
            allow=guard.Allow.parse(settings.outbound_allow), timeout=settings.outbound_timeout
        ) as client:
            return delivery.send_test(
                state.db,
                vault.load(settings),
                client,
                ref,
                schedule=delivery.Schedule.of(settings),
            )

    return await run_in_threadpool(send)


@router.post(
    "/webhook-endpoints/{ref}/recover",
    responses=deps.WRITE_ERRORS,
    summary="Queue failed, dead and held deliveries since a moment again, oldest first "
    "(scope workflows.write)",
)
def recover_endpoint(
    ref: Ref, body: schemas.EndpointRecover, state: StateDep, api_key: deps.WorkflowsWriter
) -> schemas.Recovered:
    since = times.parse_since(body.since, name="since")
    with state.db.write() as tx:
        count = delivery.recover(
            tx, vault.load(state.settings), ref, since=since, actor=api_key.actor
        )
    return schemas.Recovered(requeued=count)


@router.get(
    "/webhook-endpoints/{ref}/deliveries",
    summary="An endpoint's deliveries, newest first (scope workflows.readonly)",
)
def list_endpoint_deliveries(
    ref: Ref,
    state: StateDep,
    _: deps.WorkflowsReader,
    status: Annotated[str | None, Query(description=", ".join(delivery.STATUSES))] = None,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
) -> paging.Page[delivery.Delivery]:
    with state.db.read() as tx:
        endpoint = endpoints.get(tx, vault.load(state.settings), ref)
        return delivery.page(
            tx, endpoint_id=endpoint.id, status=status, limit=limit, starting_after=starting_after
        )


@router.get("/deliveries", summary="Deliveries, newest first (scope workflows.readonly)")
def list_deliveries(
    state: StateDep,
    _: deps.WorkflowsReader,
    status: Annotated[str | None, Query(description=", ".join(delivery.STATUSES))] = None,
    since: Annotated[
        str | None, Query(max_length=100, description="Made since: 2h, 2024-01-31, ...")
    ] = None,
    limit: deps.Limit = 20,
    starting_after: deps.After = None,
) -> paging.Page[delivery.Delivery]:
    moment = None if since is None else times.parse_since(since, name="since")
    with state.db.read() as tx:
        return delivery.page(
            tx, status=status, since=moment, limit=limit, starting_after=starting_after
        )


@router.get(
    "/deliveries/{delivery_id}",
    summary="A delivery with its body and every attempt (scope workflows.readonly)",
)
def get_delivery(
    delivery_id: str, state: StateDep, _: deps.WorkflowsReader
) -> delivery.DeliveryDetail:
    with state.db.read() as tx:
        return delivery.get(tx, delivery_id)


@router.post(
    "/deliveries/{delivery_id}/recover",
    responses=deps.WRITE_ERRORS,
    summary="Queue one failed, dead or held delivery again (scope workflows.write)",
)
def recover_delivery(
    delivery_id: str, state: StateDep, api_key: deps.WorkflowsWriter
) -> delivery.DeliveryDetail:
    with state.db.write() as tx:
        return delivery.requeue(tx, vault.load(state.settings), delivery_id, actor=api_key.actor)
