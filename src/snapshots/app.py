"""The ASGI application: `create_app(settings)` is the only factory; nothing is built at import."""

from __future__ import annotations

import dataclasses
import functools
import gc
import ipaddress
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute, APIRouter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from snapshots import (
    __version__,
    connections,
    errors,
    intake,
    keys,
    limits,
    readiness,
    revisions,
    vault,
    worker,
)
from snapshots.api import edge
from snapshots.api.deps import State, request_id
from snapshots.api.routes import (
    api_keys,
    events,
    health,
    records,
    sync_runs,
    webhook_endpoints,
    webhooks,
)
from snapshots.api.routes import audit as audit_routes
from snapshots.api.routes import flows as flow_routes
from snapshots.outbound import guard
from snapshots.settings import Settings
from snapshots.store.db import Database
from snapshots.ui import console

log = logging.getLogger("snapshots.app")
# The API's paths; every other path is the console's.
API_PREFIXES = ("/v1/", "/webhooks/")
API_PATHS = frozenset({"/v1", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})


class Split:
    """Send the API's paths to the API and every other path to the console."""

    def __init__(self, api: ASGIApp, console: ASGIApp) -> None:
        self.api = api
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in API_PATHS or path.startswith(API_PREFIXES):
            await self.api(scope, receive, send)
        else:
            await self.console(scope, receive, send)


class App(Starlette):
    """The app: a webhook delivery (`webhooks.direct`) goes through the edge straight to
    `webhooks.Direct`; everything else through Starlette's middleware and routes."""

    def __init__(self, *args: Any, direct: ASGIApp, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if webhooks.direct(scope):
            scope["app"] = self
            await self._direct(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def error_response(request: Request, exc: errors.SnapshotsError) -> JSONResponse:
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
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
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
        response = error_response(request, error)
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    @app.exception_handler(sa.exc.OperationalError)
    async def database_down(request: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        _state(request).faults.report(exc)  # logged once, not once per request
        error = errors.Unavailable(
            "the database is unavailable; retry later", code="database_unavailable"
        )
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged in one line by the edge, where the error goes on after this answer.
        error = errors.SnapshotsError("something went wrong; retry later", code="internal_error")
        error.status = 500
        return error_response(request, error)

    @app.exception_handler(errors.SnapshotsError)
    async def unavailable(request: Request, exc: errors.SnapshotsError) -> JSONResponse:
        if isinstance(exc, errors.ProcessFault):
            _state(request).faults.report(exc)
        else:
            log.error("request %s failed: %s", request_id(request), errors.describe(exc))
        return error_response(request, exc)


def _state(request: Request) -> State:
    state: State = request.app.state.snapshots
    return state


def _required_scope(dependant: Any) -> str | None:
    for sub in dependant.dependencies:
        found = getattr(sub.call, "required_scope", None) or _required_scope(sub)
        if found:
            return str(found)
    return None


def grants(routers: list[APIRouter]) -> dict[str, list[str]]:
    """The API's operations by the scope each needs (`GET /v1/customers`), for the console's
    key form: what a scope grants, read from the routes themselves."""
    found: dict[str, list[str]] = {}
    for route in (r for router in routers for r in router.routes):
        if isinstance(route, APIRoute):
            scope = _required_scope(route.dependant)
            if scope is not None:
                for method in sorted(route.methods or ()):
                    found.setdefault(scope, []).append(f"{method} {route.path_format}")
    return found


def _document_scopes(routers: list[APIRouter], schema: dict[str, Any]) -> None:
    """Each operation's scope in the OpenAPI document: a bearer security requirement naming
    it, `x-required-scope`, and a line of its description."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer snp_live_...` (`snapshots keys "
        "create`). Each operation names the scope it needs; `admin` grants every scope. "
        "Responses carry X-RateLimit-Limit / X-RateLimit-Remaining; over the limit: 429 "
        "with Retry-After.",
    }
    for route in (r for router in routers for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        scope = _required_scope(route.dependant)
        if scope is None:
            continue
        for method in route.methods or ():
            operation = schema.get("paths", {}).get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            operation["security"] = [{"apiKey": [scope]}]
            operation["x-required-scope"] = scope
            note = f"Requires an API key with the scope `{scope}` (or `admin`)."
            operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
            operation.setdefault("responses", {}).setdefault(
                "429", {"description": "Rate limited: retry after the Retry-After seconds"}
            )
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            # Invalid parameters or bodies are 400 `parameter_invalid`, never FastAPI's 422.
            responses.pop("422", None)
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("400", {"description": "Bad request", "content": error})


DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Snapshots API</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
<link rel="icon" href="/static/vendor/swagger-ui/favicon-32x32.png"></head>
<body data-openapi="/openapi.json"><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>
"""
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' "
    "data:; connect-src 'self'; frame-ancestors 'none'"
)


async def docs_page(request: Request) -> HTMLResponse:
    """The API's documentation (Swagger UI from the package: no CDN, no inline script)."""
    return HTMLResponse(DOCS, headers={"Content-Security-Policy": DOCS_POLICY})


MONITOR_JOIN = 10.0  # seconds to wait for a readiness check under way when the app stops


def create_app(
    settings: Settings,
    *,
    embedded_worker: bool = False,
    worker_faults: str | None = None,
    outbound: guard.Seams | None = None,
) -> Starlette:
    """The webhook endpoint, the API and the console. With `embedded_worker`, a worker process
    runs beside; with `worker_faults` (a file), one runs beside the process that started this
    one (`serve --processes`), and the file holds its faults.

    Webhooks are routed first, by a lean Starlette app, straight to their endpoint; everything
    else goes on to the FastAPI app (the API, its OpenAPI document at /docs) or, for paths
    that are not the API's, to the console (`ui.console`). The webhook is
    the hot path, and FastAPI's per-request machinery costs more than the endpoint's work."""
    db = Database(settings.database_url)
    # The flows in force: the readiness monitor's thread loads each new version, off the loop.
    live = revisions.Live(db, follow=False)
    secrets = vault.load(settings)
    faults = readiness.Faults()
    monitor = readiness.Monitor(db, secrets, settings, faults, live=live)
    embedded = worker.Embedded(settings) if embedded_worker else None
    state = State(
        settings=settings,
        db=db,
        registry=live,
        secrets=connections.SecretsCache(db, secrets),
        vault=secrets,
        intake=intake.GroupCommit(db, live, arrived=None if embedded is None else embedded.arrived),
        faults=faults,
        limiter=limits.limiter(db, settings.redis_url),
        uses=keys.Uses(),
        worker_faults=(
            embedded.faults
            if embedded is not None
            else None
            if worker_faults is None
            else functools.partial(_read_faults, Path(worker_faults))
        ),
        outbound=outbound or guard.Seams(),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        checking = monitor.start(stop)
        settler = threading.Thread(
            target=_settle_uses, args=(state, stop), name="key-uses", daemon=True
        )
        settler.start()
        if embedded is not None:
            embedded.start()
        try:
            yield
        finally:
            stop.set()
            settler.join(timeout=5)
            if embedded is not None:
                embedded.stop()
            state.intake.close()
            state.limiter.close()
            # A check under way holds a connection: disposing first would orphan it.
            checking.join(MONITOR_JOIN)
            db.dispose()

    api = FastAPI(
        redirect_slashes=False,  # the edge redirects, by a relative Location
        docs_url=None,  # served below from the package's own Swagger UI (no CDN)
        redoc_url=None,
        title="Snapshots API",
        version=__version__,
        description="Stripe (Legacy) to Snapshots: locations, contacts and invoices, kept in step.",
    )
    api.state.snapshots = state
    _install_error_handlers(api)
    routers = [
        records.router,
        events.router,
        sync_runs.router,
        flow_routes.router,
        api_keys.router,
        audit_routes.router,
        webhook_endpoints.router,
        health.router,
    ]
    for router in routers:
        api.include_router(router)
    generate_openapi = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            webhooks.document(generate_openapi())
            _document_scopes(routers, api.openapi_schema or {})
        return api.openapi_schema or {}

    api.openapi = openapi  # type: ignore[method-assign]
    ui = console.create(
        settings,
        db,
        registry=live,
        secrets=secrets,
        grants=grants(routers),
        outbound=state.outbound,  # the same seams as the API's
    )

    trusted = edge.trusted_networks(settings.trusted_proxies)
    app = App(
        routes=[
            webhooks.route,
            Route("/docs", docs_page, methods=["GET"]),
            Mount("/static/console", app=StaticFiles(packages=[("snapshots.ui", "static")])),
            Mount("/static", app=StaticFiles(packages=[("snapshots", "static")]), name="static"),
            Mount("", app=Split(api, ui)),
        ],
        middleware=[Middleware(edge.Edge, trusted=trusted)],
        exception_handlers=api.exception_handlers,
        lifespan=lifespan,
        direct=edge.Edge(webhooks.Direct(api.exception_handlers), trusted=trusted),
    )
    app.state.snapshots = state
    return app


def _settle_uses(state: State, stop: threading.Event) -> None:
    """Write the keys' last uses every `keys.USES_FLUSH` seconds, and once more at the end."""
    while True:
        stopping = stop.wait(keys.USES_FLUSH)
        if state.uses:
            try:
                with state.db.write() as tx:
                    state.uses.flush(tx)
            except sa.exc.SQLAlchemyError as exc:  # the database is away: noted again later
                log.warning("could not write API keys' last uses: %s", errors.describe(exc))
        if stopping:
            return


def _give_back_large_buffers() -> None:
    """Have glibc map every allocation of 128 KiB or more on its own (its default raises that
    bound as big blocks are freed, so a burst of large webhook bodies would stay in the heap):
    a body released is then memory given back to the system at once."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator does as it does
        log.debug("mallopt is not available")


def _freeze_what_lasts() -> None:
    """Leave what start-up made (modules, the app, its routes and models) out of the garbage
    collector's full collections, which would otherwise walk all of it again and again as
    requests allocate (about 15% of the CPU of a page of 100 contacts in `bench/api.py`): it
    lives as long as the process anyway. Only `serve` calls it: tests build many apps in one process."""
    gc.collect()
    gc.freeze()


def _read_faults(path: Path) -> list[readiness.Fault]:
    """The embedded worker's faults as the process running it published them."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return [readiness.Fault("worker", "the embedded worker is not running", time.time())]
    return [readiness.Fault(f["kind"], f["message"], f["since"]) for f in found]


def _publish_faults(embedded: worker.Embedded, path: Path, stop: threading.Event) -> None:
    """Write the embedded worker's faults to `path` every FAULTS_EVERY seconds (atomically)."""
    while True:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps([dataclasses.asdict(f) for f in embedded.faults()]))
        temporary.replace(path)
        if stop.wait(FAULTS_EVERY):
            return


FAULTS_EVERY = 1.0  # seconds between two publications of the embedded worker's faults
# Seconds a `serve --processes` child may leave uvicorn's health ping unanswered before it is
# killed and replaced. A child answers only once it has imported the app, which takes over
# uvicorn's 5 s on a busy machine: at that bound, under load, each child was killed while it
# started, and its replacement too, so one process served while the others kept starting.
CHILD_SILENCE = 60
ORPHAN_CHECK = 0.5  # seconds between two looks at whether `serve` still runs


def _app_process(settings: Settings, worker_faults: str | None) -> Starlette:
    """The app in one of `serve --processes`' processes (spawned: set up afresh). It stops
    when the `serve` that started it dies, even by SIGKILL (nothing else would stop it)."""
    _give_back_large_buffers()
    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = create_app(settings, worker_faults=worker_faults)
    _freeze_what_lasts()
    return app


def processes(settings: Settings) -> int:
    """How many app processes `serve` runs: SNAPSHOTS_PROCESSES (`--processes`), else one on
    SQLite (its single writer: more processes would only wait for one another) and on
    PostgreSQL one per core, or half the cores (at least one) when the database is on this
    machine: it and the workers beside it need the rest. On two cores with PostgreSQL here,
    two processes acknowledged 0.86x what one did with intake alone, and applied 0.84-0.87x
    end to end with a worker: the loops and the server fought for the cores, and each
    process's group commit got half the batch (docs/decisions.md)."""
    sqlite = settings.database_url.startswith("sqlite")
    if settings.processes is None:
        if sqlite:
            return 1
        cores = max(1, os.cpu_count() or 1)
        return max(1, cores // 2) if _database_here(settings.database_url) else cores
    if sqlite and settings.processes > 1:
        raise errors.ConfigError(
            "SQLite takes one writer: run `serve --processes 1` on SQLite, or use PostgreSQL "
            "(SNAPSHOTS_DATABASE_URL) for more"
        )
    return settings.processes


def _database_here(url: str) -> bool:
    """Whether a PostgreSQL URL names this machine: a Unix socket (no host, or a `host=` path
    in the query, as libpq takes it), `localhost`, or a loopback address. A URL that does not
    parse says no here; opening the database reports it."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return False
    hosts = [parsed.host] if parsed.host else []
    query_host = parsed.query.get("host")
    hosts += [query_host] if isinstance(query_host, str) else list(query_host or ())
    if not hosts:
        return True  # libpq's default: the local Unix socket
    return all(_loopback(host) for host in hosts)


def _loopback(host: str) -> bool:
    if host.startswith("/") or host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(settings: Settings, *, embedded_worker: bool = True) -> None:
    """Serve the app on `settings.host`:`settings.port` until stopped, with the bounds of
    `api.protocol` (head size, deadlines, connections), in `processes(settings)` processes
    sharing the port (bound once here; uvicorn's supervisor restarts one that dies). The
    embedded worker runs once, beside this process, whatever their number.
    X-Forwarded-For is never believed by the server itself: `RequestId` believes it from
    SNAPSHOTS_TRUSTED_PROXIES only."""
    import uvicorn

    from snapshots.api import protocol

    _give_back_large_buffers()

    limits = protocol.Limits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": functools.partial(protocol.BoundedHttp, limits=limits),
        "proxy_headers": False,
        "server_header": False,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    count = processes(settings)
    if count == 1:
        app = create_app(settings, embedded_worker=embedded_worker)
        _freeze_what_lasts()
        uvicorn.run(app, **options)
        return
    from uvicorn.supervisors import Multiprocess

    runtime = Path(tempfile.mkdtemp(prefix="snapshots-serve-"))
    faults = runtime / "worker-faults.json" if embedded_worker else None
    config = uvicorn.Config(
        functools.partial(_app_process, settings, None if faults is None else str(faults)),
        factory=True,
        workers=count,
        timeout_worker_healthcheck=CHILD_SILENCE,
        **options,
    )
    stop = threading.Event()
    embedded = worker.Embedded(settings) if embedded_worker else None
    try:
        if embedded is not None and faults is not None:
            embedded.start()
            threading.Thread(
                target=_publish_faults, args=(embedded, faults, stop), daemon=True
            ).start()
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        stop.set()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(runtime, ignore_errors=True)
