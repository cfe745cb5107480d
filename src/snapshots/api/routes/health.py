"""`GET /healthz` and `GET /metrics`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from snapshots import errors, inbox, readiness
from snapshots.api.deps import State, StateDep
from snapshots.outbound import delivery, waits
from snapshots.store.db import Database

router = APIRouter(tags=["health"])


def _ping(db: Database) -> None:
    with db.read() as tx:
        tx.execute(sa.text("SELECT 1"))


@router.get("/healthz", summary="Liveness and database check")
async def healthz(state: StateDep) -> dict[str, Any]:
    await run_in_threadpool(_ping, state.db)
    return {"status": "ok", "worker": state.worker}


def _faults(state: State) -> list[readiness.Fault]:
    found = {fault.kind: fault for fault in state.faults.active()}
    try:
        readiness.check_database(state.db)  # at once, not as of the last check
    except errors.DatabaseUnavailable as exc:
        found["database"] = readiness.fault_of(exc)
    found.pop("worker", None)
    if state.worker_faults is not None:
        for fault in state.worker_faults():
            found.setdefault(f"worker:{fault.message}", fault)
    return list(found.values())


@router.get(
    "/readyz",
    summary="Readiness: 200 when this process and its embedded worker can work; 503 naming "
    "each problem (database, schema, master_key, flows, worker) and what fixes it",
)
async def readyz(state: StateDep) -> JSONResponse:
    status, body = readiness.answer(await run_in_threadpool(_faults, state))
    return JSONResponse(body, status_code=status)


class _InboxCollector:
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Any:
        gauge = GaugeMetricFamily(
            "snapshots_inbox_items", "Inbox items by status", labels=["status"]
        )
        with self.db.read() as tx:
            found = inbox.counts(tx)
        for status, count in found.items():
            gauge.add_metric([status], count)
        yield gauge


class _OutboundCollector:
    """Outbound deliveries and waits, read from the database (the same in every process)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Any:
        with self.db.read() as tx:
            found = delivery.figures(tx)
            pending = waits.figures(tx)
        attempts = CounterMetricFamily(
            "snapshots_delivery_attempts",
            "Delivery attempts by outcome and error kind",
            labels=["outcome", "error_kind"],
        )
        for (outcome, kind), count in sorted(found.attempts.items()):
            attempts.add_metric([outcome, kind], count)
        yield attempts
        statuses = GaugeMetricFamily(
            "snapshots_deliveries", "Deliveries by status", labels=["status"]
        )
        for status, count in found.statuses.items():
            statuses.add_metric([status], count)
        yield statuses
        yield GaugeMetricFamily(
            "snapshots_deliveries_due", "Deliveries due to be sent now", value=found.due
        )
        yield GaugeMetricFamily(
            "snapshots_deliveries_oldest_due_age_seconds",
            "How long the oldest due delivery has been due",
            value=found.oldest_due_age,
        )
        yield SummaryMetricFamily(
            "snapshots_delivery_success_seconds",
            "Time from a message to its successful attempt",
            count_value=found.successes,
            sum_value=found.success_latency_sum,
        )
        yield GaugeMetricFamily(
            "snapshots_webhook_endpoints_disabled",
            "Webhook endpoints disabled (their deliveries are held)",
            value=found.endpoints_disabled,
        )
        yield GaugeMetricFamily("snapshots_waits_due", "Waits due now", value=pending.due)
        yield GaugeMetricFamily(
            "snapshots_waits_lag_seconds",
            "How long the oldest due wait has been due",
            value=pending.lag,
        )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    registry = CollectorRegistry()
    registry.register(_InboxCollector(state.db))
    registry.register(_OutboundCollector(state.db))
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
