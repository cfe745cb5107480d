"""`GET /healthz` and `GET /metrics`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from snapshots import errors, readiness
from snapshots import metrics as metrics_
from snapshots.api.deps import State, StateDep
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


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    body = await run_in_threadpool(metrics_.exposition, state.db)
    return Response(body, media_type=metrics_.CONTENT_TYPE)
