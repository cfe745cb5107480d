"""The ASGI application: `create_app(settings)` is the only factory; nothing is built at import."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snapshots import __version__, connections, errors, flows, vault
from snapshots.api.deps import State, request_id
from snapshots.api.routes import events, health, records, webhooks
from snapshots.settings import Settings
from snapshots.store.db import Database
from snapshots.worker import Worker

log = logging.getLogger("snapshots.app")


class RequestId:
    """Gives every request an id (`X-Request-Id` on the response, `request_id` in errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req_" + secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def error_response(request: Request, exc: errors.Rejected) -> JSONResponse:
    body: dict[str, Any] = {
        "type": exc.type,
        "code": exc.code,
        "message": exc.message,
        "request_id": request_id(request),
    }
    headers = {}
    if isinstance(exc, errors.Forbidden):
        body["scope"] = exc.scope
        headers["X-Accepted-Scopes"] = exc.scope
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": body}, status_code=exc.status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.Rejected)
    async def rejected(request: Request, exc: errors.Rejected) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p not in ("query", "path", "body"))
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(request, errors.BadRequest(message, code="parameter_invalid"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error = errors.Rejected(
            str(exc.detail), code="not_found" if exc.status_code == 404 else "http_error"
        )
        error.status = exc.status_code
        return error_response(request, error)

    @app.exception_handler(errors.SnapshotsError)
    async def unavailable(request: Request, exc: errors.SnapshotsError) -> JSONResponse:
        log.error("request %s failed: %s", request_id(request), errors.describe(exc))
        body = {
            "type": "api_error",
            "code": exc.code,
            "message": exc.message,
            "request_id": request_id(request),
        }
        return JSONResponse({"error": body}, status_code=503)


def create_app(settings: Settings, *, embedded_worker: bool = False) -> FastAPI:
    """The API + webhook app. With `embedded_worker`, a worker thread runs beside it."""
    db = Database(settings.database_url)
    state = State(
        settings=settings,
        db=db,
        registry=flows.load(),
        secrets=connections.SecretsCache(db, vault.load(settings)),
    )
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread = None
        if embedded_worker:
            state.worker = Worker(db, state.registry, settings)
            thread = threading.Thread(
                target=state.worker.run, args=(stop,), name="worker", daemon=True
            )
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if state.worker is not None:
                state.worker.wake.set()
            if thread is not None:
                thread.join(timeout=10)
            db.dispose()

    app = FastAPI(
        title="Snapshots API",
        version=__version__,
        description="Stripe (Legacy) to Snapshots: locations, contacts and invoices, kept in step.",
        lifespan=lifespan,
    )
    app.state.snapshots = state
    _install_error_handlers(app)
    app.include_router(webhooks.router)
    app.include_router(records.router)
    app.include_router(events.router)
    app.include_router(health.router)
    app.add_middleware(RequestId)
    return app
