"""`GET /healthz` and `GET /metrics`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from snapshots import inbox
from snapshots.api.deps import StateDep
from snapshots.store.db import Database

router = APIRouter(tags=["health"])


def _ping(db: Database) -> None:
    with db.read() as conn:
        conn.execute(sa.text("SELECT 1"))


@router.get("/healthz", summary="Liveness and database check")
async def healthz(state: StateDep) -> dict[str, Any]:
    await run_in_threadpool(_ping, state.db)
    return {"status": "ok", "worker": state.worker}


class _InboxCollector:
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Any:
        gauge = GaugeMetricFamily(
            "snapshots_inbox_items", "Inbox items by status", labels=["status"]
        )
        for status, count in inbox.counts(self.db).items():
            gauge.add_metric([status], count)
        yield gauge


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    registry = CollectorRegistry()
    registry.register(_InboxCollector(state.db))
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
